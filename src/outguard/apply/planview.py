"""An apply's plan for people: what `outguard plan` prints.

Reads only the plan `applyplan.make_plan` computed — the transactions apply sends, the sets it
fills over netlink — and, to show how a refilled chain's rules change, the rules the applied
snapshot stored. Nothing here decides what changes: a line appears because apply will do it.
Pure.
"""

from __future__ import annotations

import difflib
from typing import Any

from outguard.apply.applyplan import ApplyPlan
from outguard.nftables import nft_text
from outguard.ruleset.keys import RuleKey

Cmd = dict[str, Any]
MAX_DIFF = 12  # rule lines shown per chain
MAX_OBJECTS = 40  # object lines shown per phase


def _objects(cmds: list[Cmd], verb: str) -> list[tuple[str, str, Cmd]]:
    out = []
    for cmd in cmds:
        body = cmd.get(verb)
        if isinstance(body, dict) and len(body) == 1:
            ((kind, obj),) = body.items()
            if kind != "table" and isinstance(obj, dict):
                out.append((kind, str(obj.get("name") or obj.get("chain", "")), obj))
    return out


def _counts(cmds: list[Cmd]) -> dict[str, int]:
    return {name: len(obj["elem"]) for kind, name, obj in _objects(cmds, "add")
            if kind == "element"}


def _rule_texts(cmds: list[Cmd]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kind, _name, obj in _objects(cmds, "add"):
        if kind == "rule":
            text = " ".join(nft_text.expr_text(e) for e in obj["expr"])
            if obj.get("comment"):
                text += f' comment "{obj["comment"]}"'
            out.setdefault(obj["chain"], []).append(text)
    return out


def _counter(name: str) -> str:
    """A counter for people: `rule deny:web (its counter)`, or `counter log.deny.web`."""
    try:
        return f"rule {RuleKey.of_counter(name)} (its counter)"
    except ValueError:
        return f"counter {name}"


def _limited(lines: list[str], limit: int | None, indent: str) -> list[str]:
    if limit is None or len(lines) <= limit:
        return lines
    return [*lines[:limit], f"{indent}… and {len(lines) - limit} more"]


def _made(cmds: list[Cmd], counts: dict[str, int], fills: dict[str, int],
          held: set[str]) -> list[str]:
    lines = []
    for kind, name, _obj in _objects(cmds, "add"):
        if kind in ("set", "map"):
            n = counts.get(name, fills.get(name, 0))
            lines.append(f"    + {kind} {name} ({n} elements)")
        elif kind == "chain" and name in held:
            lines.append(f"    ~ chain {name}: declared again with its hook")
        elif kind == "chain":
            lines.append(f"    + chain {name}")
        elif kind == "counter":
            lines.append(f"    + {_counter(name)}")
    return lines


def describe(plan: ApplyPlan, old_stored: list[Cmd] | None, *, full: bool = False) -> list[str]:
    """What `outguard apply` of this plan will do, in the order it does it; `full`: every
    object and rule line, none left out."""
    before, lines = plan.before, []
    lines.append(f"plan: apply {plan.path} (policy {plan.policy.digest[:12]},"
                 f" {plan.policy.doc.mode}, {len(plan.ruleset.rules())} rules)")
    if before is None:
        lines.append("  nothing is applied yet")
    else:
        lines.append(f"  over policy {before.policy_hash[:12]} applied {before.applied_at}"
                     f" ({before.mode})" + (" — outguard's fail-closed table" if before.fallback
                                            else ""))
        if before.mode != plan.policy.doc.mode:
            lines.append(f"  mode: {before.mode} → {plan.policy.doc.mode}")
    if plan.pending is not None:
        lines.append(f"  a confirmation is pending (policy {plan.pending.policy_hash[:12]}):"
                     " apply rolls it back first if nothing else will, or refuses")
    if before is not None and not plan.trusted:
        lines.append("  the ruleset changed since outguard's last commit (a hand edit, another"
                     " table, a feed or DNS update): every chain is refilled, and what is in"
                     " outguard's table that it did not make goes")
        if plan.listing_failed:
            lines.append("  and the kernel cannot list outguard's table: the whole table is"
                         " replaced")
    kernel = _kernel_lines(plan, old_stored, full)
    lines += kernel or ["  no changes to the kernel: it holds this policy already"]
    if before is None or before.policy_hash != plan.policy.digest:
        lines.append(f"  records policy {plan.policy.digest[:12]} as applied" + (
            "" if kernel else " (what the agent reads: its resolver, alerts and feeds)"))
    lines += [f"  warning: {w}" for w in plan.warnings]
    return lines


def _kernel_lines(plan: ApplyPlan, old_stored: list[Cmd] | None, full: bool) -> list[str]:
    most = None if full else MAX_OBJECTS
    fills = {f.name: len(f.add) for f in plan.fills}
    if plan.phases is None:
        cmds = plan.full_commands()
        kinds = [k for k, _n, _o in _objects(cmds, "add")]
        lines = [f"  one transaction replaces the whole table: {kinds.count('chain')} chains,"
                 f" {kinds.count('set') + kinds.count('map')} sets and maps,"
                 f" {kinds.count('counter')} counters, {kinds.count('rule')} rules"]
        fqdn = [n for n, s in plan.compiled.sets.items() if s.timeout]
        if fqdn:  # made anew: what they start with is the resolver's saved cache, no more
            lines.append(f"    the {len(fqdn)} DNS-filled sets are made anew with the"
                         f" {sum(len(plan.prefill.get(n, ())) for n in fqdn)} addresses of the"
                         " resolver's saved cache")
        return lines
    phases, out = plan.phases, []
    made = _made(phases.prepare, _counts(phases.prepare), fills, set(plan.held.chains))
    if made:
        out += ["  new objects (one transaction, before any rule uses them):",
                *_limited(made, most, "    ")]
    held = set(plan.held.sets)
    synced = [f"    ~ set {f.name}: +{len(f.add)} -{len(f.delete)} elements (kept, changed in"
              " place)" for f in plan.fills if f.name in held]
    loaded = [f"    + {len(f.add)} elements into new set {f.name}" for f in plan.fills
              if f.name not in held]
    if synced or loaded:
        out += ["  feed sets over netlink, before the switch:", *synced, *loaded]
    switch = _switch_lines(plan, old_stored, full)
    if switch:
        out += ["  the switch (one transaction):", *switch]
    gone = []
    for kind, name, _obj in _objects(phases.cleanup, "delete"):
        what = _counter(name) if kind == "counter" \
            else f"{kind} {name}"
        gone.append(f"    - {what}")
    if gone:
        out += ["  cleanup (one transaction, once no rule uses them):", *_limited(gone, most, "    ")]
    return out


def _switch_lines(plan: ApplyPlan, old_stored: list[Cmd] | None, full: bool) -> list[str]:
    assert plan.phases is not None
    switch = plan.phases.switch
    new_rules = _rule_texts(switch)
    old_rules = _rule_texts(old_stored or [])
    flushed = [name for kind, name, _o in _objects(switch, "flush") if kind == "chain"]
    lines = [f"    + set {name} (filled by the packet path: made with the rules that fill it)"
             for kind, name, _o in _objects(switch, "add") if kind == "set"]
    lines += [f"    ~ set {name}: emptied and filled with the cgroup as it is now"
              for kind, name, _o in _objects(switch, "flush") if kind == "set"]
    same = 0
    for chain in flushed:
        if chain not in plan.compiled.chains:
            lines.append(f"    ~ chain {chain}: emptied (it goes at the cleanup)")
            continue
        old, new = old_rules.get(chain, []), new_rules.get(chain, [])
        diff = [d for d in difflib.ndiff(old, new) if d[:2] in ("- ", "+ ")]
        if not diff:
            same += 1
            continue
        lines.append(f"    ~ chain {chain}: {len(old)} → {len(new)} rules")
        lines += _limited([f"        {d}" for d in diff], None if full else MAX_DIFF, "        ")
    new_chains = [c for c in new_rules if c not in flushed]
    if new_chains:
        lines.append(f"    + rules of {len(new_chains)} new chain(s):"
                     f" {', '.join(sorted(new_chains)[:8])}" + (" …" if len(new_chains) > 8
                                                               else ""))
    if same:
        lines.append(f"    ~ {same} chain(s) refilled with the rules they hold")
    return lines
