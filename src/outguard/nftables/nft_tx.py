"""`Compiled` → nftables transactions: the batch that replaces outguard's table atomically.

Two forms, both one kernel transaction touching only `inet outguard` (never `flush ruleset`):
- `full`: add table, delete table, add everything — used the first time, and whenever the table
  in the kernel may not match what outguard recorded.
- `delta`: against the inventory recorded at the last apply: create only new sets (with their
  elements), chains and counters; flush and refill only the chains whose rules changed (each
  chain's rules are recorded as a digest) and the cgroup sets; then delete what is gone (three
  transactions: `Phases`). Unchanged sets — a million-address list — and unchanged chains are not touched,
  and per-rule counters keep counting.
Pure: data in, JSON commands out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from outguard.nftables.model import BASE_CHAINS, FAMILY, TABLE, Compiled, NftChain, NftSet
from outguard.nftables.nft_proxy import NAT_CHAIN
from outguard.ruleset.keys import SetName

Cmd = dict[str, Any]
ElementsOf = Callable[[NftSet], "Cmd | None"]


@dataclass
class Inventory:
    """The kernel objects outguard created at its last apply, by name."""

    chains: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    counters: list[str] = field(default_factory=list)
    # chain → digest of the rule commands it was filled with; a chain without one (recorded by
    # an older outguard, or left over) is always flushed and refilled
    rules: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, compiled: Compiled) -> Inventory:
        return cls(list(compiled.chains), list(compiled.sets), list(compiled.counters),
                   {name: rules_digest(chain) for name, chain in compiled.chains.items()})

    def without(self, other: Inventory) -> Inventory:
        """What this holds and `other` does not: what is left over when `other` replaces it."""
        chains, sets, counters = set(other.chains), set(other.sets), set(other.counters)
        return Inventory([n for n in self.chains if n not in chains],
                         [n for n in self.sets if n not in sets],
                         [n for n in self.counters if n not in counters])

    def to_json(self) -> dict[str, Any]:
        return {"chains": self.chains, "sets": self.sets, "counters": self.counters,
                "rules": self.rules}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inventory:
        rules = data.get("rules")
        return cls(list(data.get("chains", [])), list(data.get("sets", [])),
                   list(data.get("counters", [])),
                   {str(k): str(v) for k, v in rules.items()} if isinstance(rules, dict) else {})


def _obj(**kw: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **kw}


def set_decl(s: NftSet, size: int | None = None) -> Cmd:
    body = _obj(name=s.name, type=list(s.key_type) if isinstance(s.key_type, tuple) else s.key_type)
    if size is not None:
        body["size"] = max(size, 1)
    if s.interval:
        body["flags"] = ["interval"]
    if s.timeout:  # DNS-filled: entries carry their own timeouts
        body["flags"] = ["timeout"]
    if s.element_timeout is not None:  # filled by the packet path (nft makes it `dynamic`)
        body["flags"] = ["timeout"]
        body["timeout"] = s.element_timeout
    if s.verdict_map:
        body["map"] = "verdict"
        return {"add": {"map": body}}
    return {"add": {"set": body}}


def set_elements(s: NftSet) -> Cmd | None:
    elements = s.elements()
    if not elements:
        return None
    return {"add": {"element": _obj(name=s.name, elem=elements)}}


def _chain_decl(compiled: Compiled, name: str) -> Cmd:
    chain = compiled.chains[name]
    if chain.hook is None:
        return {"add": {"chain": _obj(name=name)}}
    return {"add": {"chain": _obj(name=name, type=chain.kind, hook=chain.hook, prio=chain.prio,
                                  policy="accept")}}


def _comment(text: str | None) -> str | None:
    # nft takes at most 128 bytes of comment (with its NUL)
    return text.encode()[:120].decode(errors="ignore") if text else None


def _chain_rules(chain: NftChain) -> list[Cmd]:
    out = []
    for rule in chain.rules:
        body = _obj(chain=chain.name, expr=rule.expr)
        if rule.comment:
            body["comment"] = _comment(rule.comment)
        out.append({"add": {"rule": body}})
    return out


def _rules(compiled: Compiled, only: Callable[[str], bool] | None = None) -> list[Cmd]:
    return [cmd for chain in compiled.chains.values() if only is None or only(chain.name)
            for cmd in _chain_rules(chain)]


def refreshed(compiled: Compiled, before: Inventory) -> list[str]:
    """The cgroup sets that stay: emptied and filled again at every apply (a restarted unit has
    a new cgroup, whose id the kernel matches), in the switch, with the rules."""
    known = set(before.sets)
    return [n for n, s in compiled.sets.items() if s.cgroup is not None and n in known]


def _refill(name: str, elements: Cmd | None) -> list[Cmd]:
    return [{"flush": {"set": _obj(name=name)}}, *([elements] if elements is not None else [])]


def rules_digest(chain: NftChain) -> str:
    """What a chain holds, in short: equal digests, equal rule commands (names of sets, maps,
    counters and jump targets included, so a chain that refers to a new object differs)."""
    return _digest([[r.expr, _comment(r.comment)] for r in chain.rules])


def _digest(rules: list[list[Any]]) -> str:
    data = orjson.dumps(rules, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def stored_digests(stored: list[Cmd]) -> dict[str, str]:
    """`rules_digest` of every chain of a stored full form (what `restore` put back)."""
    got = _Stored.parse(stored)
    rules: dict[str, list[list[Any]]] = {name: [] for name in got.chains}
    for cmd in got.rules:
        body = cmd["add"]["rule"]
        rules[body["chain"]].append([body["expr"], body.get("comment")])
    return {name: _digest(items) for name, items in rules.items()}


def _count(elements: Cmd | None) -> int | None:
    """How many elements an `add element` command (or a stored marker with a count) holds."""
    if elements is None:
        return None
    if "add" in elements:
        return len(elements["add"]["element"]["elem"])
    count = elements.get("count")
    return count if isinstance(count, int) else None


def _objects(compiled: Compiled, new_sets: list[str], new_counters: list[str],
             new_chains: list[str], elements_of: ElementsOf) -> list[Cmd]:
    """Counters, (empty) chains, and filled sets and maps: everything but rules."""
    cmds: list[Cmd] = [{"add": {"counter": _obj(name=n)}} for n in new_counters]
    cmds += [_chain_decl(compiled, n) for n in new_chains]
    for name in new_sets:
        s = compiled.sets[name]
        elements = elements_of(s)
        size = s.capacity if s.capacity is not None else \
            _count(elements) if s.fixed and not s.interval else None
        cmds.append(set_decl(s, size))
        if elements is not None:
            cmds.append(elements)
    return cmds


def _creation(compiled: Compiled, new_sets: list[str], new_counters: list[str],
              new_chains: list[str], elements_of: ElementsOf) -> list[Cmd]:
    return _objects(compiled, new_sets, new_counters, new_chains, elements_of) + _rules(compiled)


def full(compiled: Compiled, elements_of: ElementsOf = set_elements) -> list[Cmd]:
    """Replace the whole table, whatever the kernel holds now."""
    table = {"table": {"family": FAMILY, "name": TABLE}}
    return [{"add": table}, {"delete": table}, {"add": table},
            *_creation(compiled, list(compiled.sets), compiled.counters, list(compiled.chains),
                       elements_of)]


@dataclass
class Phases:
    """A delta in three transactions. `prepare` creates what is new — counters, empty chains,
    filled sets and maps — while nothing refers to it yet; `switch` then replaces the rules of
    every chain that changed, atomically; `cleanup` deletes what no rule refers to any more.
    Measured on kernel 6.18:
    - a named interval set created in the transaction whose rules look into it can miss for
      packets evaluated while that transaction commits (an allowed UDP probe dropped in ~1 of
      2 runs of 100 re-applies): new sets must exist before the switch;
    - deleting a map deactivates its elements for the next generation, and a packet that began
      its walk through the old rules before the commit flipped the generation looks into the
      map after it, misses, and falls to the default drop (an allowed probe dropped in ~1 of 25
      runs of 100 re-applies on a loaded machine): old maps and sets must outlive the switch.
    One exception: a set the packet path fills (`update @set`, `add @set`: learning's, the log
    gate's) is made in the switch, with the rules that fill it. nft gives such a set the
    `dynamic` flag only when the rule that fills it comes in the same transaction, JSON cannot
    declare the flag (nft 1.0.6: "Invalid set flag"), and the kernel refuses (EINVAL) a rule
    that updates a set made without it. A miss there while the switch commits costs a log line
    or a learned flow's key, never a verdict.
    `undo` removes what `prepare` made, for when the switch is refused: the kernel then holds
    exactly what it held before."""

    prepare: list[Cmd]
    switch: list[Cmd]
    cleanup: list[Cmd]
    undo: list[Cmd]

    @property
    def all(self) -> list[Cmd]:
        """One transaction (each phase's first command is the same `add table`)."""
        return self.prepare + self.switch[1:] + self.cleanup[1:]


def delta_phases(compiled: Compiled, before: Inventory,
                 elements_of: ElementsOf = set_elements, after: Inventory | None = None) -> Phases:
    """Replace the table's contents assuming the kernel holds exactly `before` (`after`: the
    inventory of `compiled`, when the caller has it already)."""
    table: Cmd = {"add": {"table": {"family": FAMILY, "name": TABLE}}}
    known_sets, known_counters, known_chains = set(before.sets), set(before.counters), set(before.chains)
    new_sets = [n for n in compiled.sets if n not in known_sets]
    new_counters = [n for n in compiled.counters if n not in known_counters]
    new_chains = [n for n in compiled.chains if n not in known_chains]
    digests = (after or Inventory.of(compiled)).rules
    # A chain that is gone is left as it is until the cleanup: only old rules and old maps
    # lead into it.
    changed = [n for n in before.chains if n in compiled.chains
               and before.rules.get(n) != digests.get(n)]
    refill = set(changed).union(new_chains)
    dynamic = [n for n in new_sets if compiled.sets[n].element_timeout is not None]
    early = [n for n in new_sets if n not in dynamic]
    prepare = [table, *_objects(compiled, early, new_counters,
                                [*new_chains, *_redeclared(compiled.chains, before)], elements_of)]
    gone = leftovers(compiled, before)
    switch = [table, *_objects(compiled, dynamic, [], [], elements_of),
              *(c for n in refreshed(compiled, before)
                for c in _refill(n, elements_of(compiled.sets[n]))),
              *_flushes(changed, gone.chains), *_rules(compiled, refill.__contains__)]
    undo = [table, *_deletions(early, new_chains, new_counters)]
    return Phases(prepare, switch, _cleanup(table, gone), undo)


def delta(compiled: Compiled, before: Inventory,
          elements_of: ElementsOf = set_elements) -> list[Cmd]:
    """The delta as one transaction (what `plan` and the tests read; apply uses the phases)."""
    return delta_phases(compiled, before, elements_of).all


@dataclass
class _Stored:
    """A stored full form, taken apart: the objects in order, each set with its declaration
    and its elements command (or apply's marker), the rules in order."""

    counters: list[str] = field(default_factory=list)
    chains: dict[str, Cmd] = field(default_factory=dict)
    sets: dict[str, list[Cmd]] = field(default_factory=dict)
    rules: list[Cmd] = field(default_factory=list)

    @classmethod
    def parse(cls, stored: list[Cmd]) -> _Stored:
        try:
            return cls._parse(stored)
        except (KeyError, TypeError, AttributeError) as exc:  # a damaged file, still JSON
            raise ValueError(f"unexpected stored command: {exc!r:.80}") from exc

    @classmethod
    def _parse(cls, stored: list[Cmd]) -> _Stored:
        out = cls()
        last_set: str | None = None
        for cmd in stored:
            body = cmd.get("add")
            if isinstance(body, dict) and len(body) == 1:
                ((kind, obj),) = body.items()
                if kind == "counter":
                    out.counters.append(obj["name"])
                elif kind == "chain":
                    out.chains[obj["name"]] = cmd
                elif kind in ("set", "map"):
                    last_set = obj["name"]
                    out.sets[last_set] = [cmd]
                elif kind == "element" and obj.get("name") in out.sets:
                    out.sets[obj["name"]].append(cmd)
                elif kind == "rule" and obj.get("chain") in out.chains:
                    out.rules.append(cmd)
                elif kind != "table":
                    raise ValueError(f"unexpected stored command {cmd!r:.80}")
            elif cmd.get("delete") == {"table": {"family": FAMILY, "name": TABLE}}:
                continue  # the full form's `delete table`
            elif last_set is not None and "add" not in cmd and "delete" not in cmd:
                out.sets[last_set].append(cmd)  # an elements marker: apply expands it
            else:
                raise ValueError(f"unexpected stored command {cmd!r:.80}")
        return out

    def inventory(self) -> Inventory:
        return Inventory(list(self.chains), list(self.sets), list(self.counters))


def stored_inventory(stored: list[Cmd]) -> Inventory:
    """What the kernel holds once a stored full form is in place (without chain digests).
    ValueError if the stored commands are not a full form."""
    return _Stored.parse(stored).inventory()


def stored_phases(stored: list[Cmd], before: Inventory) -> Phases:
    """A delta from `before` to a snapshot's stored full form (`full`'s commands, list elements
    possibly still as apply's markers, which stay in `prepare` for it to expand): what
    `rollback` runs, so that a rollback, like an apply, makes new sets before the switch and
    deletes old ones after it, and does not load again a list both policies share. The stored
    commands carry no digests: every chain that stays is flushed and refilled. ValueError if
    the stored commands are not a full form."""
    table: Cmd = {"add": {"table": {"family": FAMILY, "name": TABLE}}}
    got = _Stored.parse(stored)
    known_sets, known_counters, known_chains = set(before.sets), set(before.counters), set(before.chains)
    new_sets = [n for n in got.sets if n not in known_sets]
    new_counters = [n for n in got.counters if n not in known_counters]
    new_chains = [n for n in got.chains if n not in known_chains]
    gone = before.without(got.inventory())
    # as in `delta_phases`: a set the packet path fills is made with the rules that fill it
    dynamic = [n for n in new_sets if _dynamic(got.sets[n][0])]
    early = [n for n in new_sets if n not in dynamic]
    prepare = [table, *({"add": {"counter": _obj(name=n)}} for n in new_counters),
               *(got.chains[n] for n in [*new_chains, *_redeclared(got.chains, before)]),
               *(c for n in early for c in got.sets[n])]
    kept_cgroups = [n for n in got.sets if SetName.kind_of(n) == "c" and n in known_sets]
    switch = [table, *(c for n in dynamic for c in got.sets[n]),
              *(c for n in kept_cgroups for c in _refill(n, None) + got.sets[n][1:]),
              *_flushes([n for n in got.chains if n in known_chains], gone.chains),
              *got.rules]
    undo = [table, *_deletions(early, new_chains, new_counters)]
    return Phases(prepare, switch, _cleanup(table, gone), undo)


def _dynamic(decl: Cmd) -> bool:
    """Is this stored declaration a set the packet path fills (`set_decl`: its own timeout)?"""
    body = decl.get("add", {})
    return isinstance(body, dict) and "timeout" in body.get("set", {})


def _redeclared(chains: Iterable[str], before: Inventory) -> list[str]:
    """Base chains that exist but were not recorded with a digest (the record was not trusted
    and `before` is what the kernel lists): declared again with their hook, as a chain of the
    same name made by hand may lack it (the kernel refuses to add a hook to a regular chain, and
    the apply replaces the whole table). Declaring an existing base chain changes nothing."""
    known = set(before.chains)
    return [n for n in chains if n in BASE_CHAINS and n in known and n not in before.rules]


def _flushes(changed: list[str], gone: list[str]) -> list[Cmd]:
    """The switch's flushes: the chains refilled, and the base chains that are gone. A gone
    base chain (`forward` when forward filtering was turned off) is emptied at the switch —
    nothing jumps into it, and with policy accept an empty one filters nothing — so that it
    stops filtering even if the kernel refuses the cleanup."""
    return [{"flush": {"chain": _obj(name=n)}}
            for n in [*changed, *(n for n in gone if n in (*BASE_CHAINS, NAT_CHAIN))]]


def _cleanup(table: Cmd, gone: Inventory) -> list[Cmd]:
    # The cleanup first empties the chains that are gone: their rules still use old sets and
    # counters, which the kernel refuses to delete while a rule refers to them (EBUSY).
    return [table, *({"flush": {"chain": _obj(name=n)}} for n in gone.chains),
            *_deletions(gone.sets, gone.chains, gone.counters)]


def leftovers(compiled: Compiled, before: Inventory) -> Inventory:
    """What `before` holds and `compiled` no longer needs: the cleanup's work."""
    return before.without(Inventory(list(compiled.chains), list(compiled.sets), compiled.counters))


def _deletions(sets: list[str], chains: list[str], counters: list[str]) -> list[Cmd]:
    # maps first: their elements jump to chains that may be deleted next
    cmds: list[Cmd] = [{"delete": {"map" if SetName.kind_of(n) == "m" else "set": _obj(name=n)}}
                       for n in sorted(sets, key=lambda n: SetName.kind_of(n) != "m")]
    cmds += [{"delete": {"chain": _obj(name=n)}} for n in chains]
    return cmds + [{"delete": {"counter": _obj(name=n)}} for n in counters]


def remove() -> list[Cmd]:
    """Delete outguard's table (and nothing else); fine when it does not exist."""
    table = {"table": {"family": FAMILY, "name": TABLE}}
    return [{"add": table}, {"delete": table}]


def document(cmds: list[Cmd]) -> dict[str, Any]:
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *cmds]}
