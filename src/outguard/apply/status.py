"""`outguard status`: what is applied, what the kernel holds, and what is wrong with it.

Pure: the kernel's answers (table present, counters, object names, rule digests — all read by
netlink, never set elements) come in, a dictionary for people and monitors goes out. Besides the
applied policy and its counters it reports what a sysadmin must not miss: a pending
confirmation (and whether anything will still roll it back), the last rollback (the watchdog's
too), outguard's fail-closed table standing in for a policy, rules that did not apply fully
(warnings), and drift — chains, sets, counters or rules in our table that the last apply did not
leave there (a rule inserted by hand). `problems` lists what `status --check` fails for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from outguard.apply.transact import CGROUPS
from outguard.clock import Clock, system_clock
from outguard.nftables import nft_tx
from outguard.state import Snapshot, StateDir

Objects = tuple[list[str], list[str], list[str]]
# what every warning of a rule that applies only in part says (a name that did not resolve, a
# unit that is not running, an empty list, a wildcard without `dns:`)
_PARTIAL = re.compile(r"\bmatch(?:es)? nothing\b")


def drift(snap: Snapshot, objects: Objects | None,
          rules: dict[str, str] | None) -> list[str] | None:
    """How our table differs from what the last apply (or restore, or rollback) left; None
    when that cannot be told (no rules were read back then, or the kernel cannot be read)."""
    if objects is None or rules is None:
        return None
    made = nft_tx.Inventory.from_json(snap.inventory)
    chains, sets, counters = objects
    found = []
    for kind, have, want in (("chain", chains, made.chains), ("set", sets, made.sets),
                             ("counter", counters, made.counters)):
        found += [f"{kind} {n} is in outguard's table, but outguard did not make it"
                  for n in have if n not in set(want)]
        found += [f"{kind} {n} is missing from outguard's table" for n in want
                  if n not in set(have)]
    if snap.rule_digests is None:
        return found or None
    for chain in sorted(set(snap.rule_digests) | set(rules)):
        if chain in set(chains) and snap.rule_digests.get(chain) != rules.get(chain):
            found.append(f"the rules of chain {chain} differ from what outguard applied")
    return found


def _bound_cgroups(cmds: list[Any], exists: Callable[[str], bool] | None) -> list[str]:
    """The cgroup paths of the applied sets that exist now (None: not looked at)."""
    if exists is None:
        return []
    return [p for c in cmds if isinstance(c, dict) and CGROUPS in c
            for p in c.get("paths", []) if exists(p)]


_AGENT = {"none": "it never reported", "stopped": "it stopped",
          "stale": "its pid is gone or its report is over a minute old"}


def status(state: StateDir, counters: dict[str, tuple[int, int]], table: bool, *,
           objects: Objects | None = None, rules: dict[str, str] | None = None,
           clock: Clock = system_clock, agent: dict[str, Any] | None = None,
           cgroup_exists: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """The status as data (`outguard status --json`); `agent`: the agent's last report
    (`monitor.agentstate.read`). `clock` is read once: every age, deadline and expiry in it is
    measured from that moment. With `cgroup_exists`, a unit that was not running at the apply
    and runs now is no longer a rule that applies only in part, while the agent runs (its
    `service.cgroupwatch` binds it within a second)."""
    from outguard.agentstate import condition as agent_condition  # noqa: PLC0415
    from outguard.apply.recovery import pending_condition, watchdog_alive  # noqa: PLC0415

    now = clock()
    got = state.read("applied")
    out: dict[str, Any] = {"applied": got is not None and table, "table_present": table,
                           "policy_hash": None, "applied_at": None, "mode": None, "source": None,
                           "fail_closed": None, "warnings": [], "counters": {},
                           "pending_confirmation": None, "last_rollback": None, "drift": None,
                           "partial": [], "expired": {}, "dns_listen": None,
                           "agent": agent_condition(agent, now), "problems": []}
    problems: list[str] = out["problems"]
    snap = got[0] if got is not None else None
    if snap is None and not table:
        problems.append("no outguard table in the kernel and no policy applied with this state"
                        " directory: egress is open")
    if snap is not None:
        out.update(policy_hash=snap.policy_hash, applied_at=snap.applied_at, mode=snap.mode,
                   source=snap.source, fail_closed=snap.fallback, warnings=snap.warnings,
                   dns_listen=snap.dns_listen)
        for key, name in snap.counters.items():
            packets, nbytes = counters.get(name, (0, 0))
            out["counters"][key] = {"packets": packets, "bytes": nbytes}
        out["expired"] = {key: at for key, at in snap.expires.items()
                          if datetime.fromisoformat(at).timestamp() <= now}
        if snap.fallback:
            problems.append(f"outguard's fail-closed table is applied, not the policy:"
                            f" {snap.fallback}")
        if not table:
            problems.append("no outguard table in the kernel, but a policy was applied:"
                            " egress is open (`outguard restore` puts it back)")
        else:
            out["drift"] = drift(snap, objects, rules)
            problems += [f"drift: {d}" for d in out["drift"] or []]
            if out["drift"] is None:
                problems.append("drift unknown: the rules outguard left in the kernel were not"
                                " recorded (apply the policy again to record them)")
        bound = _bound_cgroups(got[1] if got is not None else [], cgroup_exists) \
            if out["agent"] == "running" else []
        out["partial"] = [w for w in snap.warnings if _PARTIAL.search(w)
                          and not any(f"cgroup {p} does not exist now" in w for p in bound)]
        problems += [f"applies only in part: {w}" for w in out["partial"]]
        if snap.dns_listen is not None and table and out["agent"] != "running":
            problems.append(f"the policy has `dns:` but the agent (`outguard run`, its resolver"
                            f" on {snap.dns_listen}) is not running ({_AGENT[out['agent']]}):"
                            " names the policy allows do not resolve")
    try:
        pending = state.pending()
    except Exception as exc:  # a damaged pending file is a problem to show, not a crash
        problems.append(f"pending confirmation: {exc}")
        pending = None
    if pending is not None:
        condition = pending_condition(pending, now)
        out["pending_confirmation"] = {
            "deadline": pending.deadline, "seconds_left": max(0.0, pending.deadline - now),
            "policy_hash": pending.policy_hash, "state": condition,
            "watchdog_running": watchdog_alive(pending)}
        if condition != "waiting":
            problems.append(f"a pending confirmation is {condition} and nothing will roll it"
                            " back until the next outguard command (`outguard rollback`"
                            " does it now)")
    out["lockdown"] = _lockdown(state, counters, objects, table, now, problems)
    last = state.last_rollback()
    if last is not None and (snap.snapshot_id if snap is not None else "") == \
            last.get("snapshot_id"):
        out["last_rollback"] = last
    return out


def _lockdown(state: StateDir, counters: dict[str, tuple[int, int]], objects: Objects | None,
              table: bool, now: float, problems: list[str]) -> dict[str, Any] | None:
    """The lockdown in force (`outguard lockdown`): its end, what it keeps, what it dropped,
    and whether the kernel holds it (its expiry is the kernel's own)."""
    from outguard.apply.lockrecord import current_lockdown  # noqa: PLC0415

    try:
        got = current_lockdown(state, now)
    except Exception as exc:  # a damaged record is a problem to show, not a crash
        problems.append(f"lockdown: {exc}")
        return None
    if got is None:
        return None
    in_kernel = table and (objects is None or "lockdown" in objects[0])
    if not in_kernel:
        problems.append(f"a lockdown until {got.until_text} was put in, but the kernel does not"
                        " hold it: egress is not locked down (`outguard lockdown --for ...`"
                        " again)")
    return {"until": got.until, "until_text": got.until_text, "keep": list(got.keep),
            "seconds_left": max(0.0, got.until - now), "in_kernel": in_kernel,
            "dropped": counters.get("lockdown", (0, 0))[0]}
