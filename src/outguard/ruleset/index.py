"""`DecisionIndex`: which rules name which DNS names, derived once from a `Ruleset`.

Place in the data flow: `lower` makes the `Ruleset`; this index is computed from it and read by
both askers of "which rules cover this name?" — `decide` (what a connection to a name gets) and
the resolver's `names.NamePolicy` (whether the name is answered, and into which kernel sets its
addresses go). Both read the same tables, so they cannot disagree on which rules name a name:
a name in a rule's own `to`, in an entry of a list the rule uses, or under a wildcard in either.

Rules are kept in the order the kernel evaluates them (deny rules as written, then allow rules as
written); names are normalised (`names.normalize`) on both sides. The index of a ruleset is
computed on first use and kept while the ruleset lives (`index_of`); a ruleset is not changed
after `lower` made it.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from outguard.ruleset.ir import IRRule, Ruleset


@functools.lru_cache(maxsize=65536)
def normalize(name: str) -> str:
    """Canonical text of a name as policies write it: lower case, no trailing dot, punycode.
    Cached: `decide` asks it per rule, the resolver per query."""
    name = name.strip()
    if name.endswith(".") and name != ".":
        name = name[:-1]
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            # not a valid IDN: keep it comparable but unmatchable by any policy name
            return name.lower()
    return name.lower()


def suffixes(name: str) -> Iterator[str]:
    """The names strictly above `name`: a.b.c → b.c, c."""
    rest = name
    while "." in rest:
        rest = rest.split(".", 1)[1]
        yield rest


def rule_names(ruleset: Ruleset, rule: IRRule) -> tuple[list[str], list[str]]:
    """Host names and wildcards a rule covers: its own `to`, and those of the lists it uses."""
    names, wilds = list(rule.names), list(rule.wildcards)
    for key in rule.lists:
        for value in ruleset.list_names.get(key, ()):
            (wilds if value.startswith("*.") else names).append(value)
    return names, wilds


RuleId = tuple[str, int]  # (section, index): a rule's identity within its ruleset
_ORDER = {"deny": 0, "allow": 1}


def _in_order(groups: list[list[IRRule]]) -> list[IRRule]:
    """Rules of several groups, each once, in evaluation order; one group as it is."""
    if len(groups) == 1:
        return groups[0]
    found = {(r.section, r.index): r for group in groups for r in group}
    return sorted(found.values(), key=lambda r: (_ORDER[r.section], r.index))


@dataclass(frozen=True)
class DecisionIndex:
    """Names → the rules that name them, in evaluation order (deny first, then allow).

    Two levels, because a list's names are shared by every rule that uses the list: a name
    maps to its sources (a list, or a rule's own `to`), a source to the rules naming through it.
    A list of 100,000 names used by ten rules is 100,000 entries, not a million."""

    sources: dict[str, list[IRRule]]  # "list:<name>" or "rule:<section>:<index>" → rules
    exact: dict[str, list[str]]  # name → its sources
    wildcard: dict[str, list[str]]  # the part after "*." → its sources
    # rule ids per name, made when `decide` first asks (`names`), bounded
    _ids: dict[str, frozenset[RuleId]] = field(default_factory=dict, repr=False, compare=False)
    # per rule, address → the first of its names resolved to it, made when `decide` first asks
    _via: dict[RuleId, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, ruleset: Ruleset) -> DecisionIndex:
        sources: dict[str, list[IRRule]] = {}
        exact: dict[str, list[str]] = {}
        wildcard: dict[str, list[str]] = {}

        def add(values: Iterable[str], source: str) -> None:
            for value in values:
                table, key = ((wildcard, normalize(value[2:])) if value.startswith("*.")
                              else (exact, normalize(value)))
                found = table.setdefault(key, [])
                if not found or found[-1] != source:
                    found.append(source)

        for rule in ruleset.rules():
            if rule.names or rule.wildcards:
                own = f"rule:{rule.section}:{rule.index}"
                sources[own] = [rule]
                add((*rule.names, *rule.wildcards), own)
            for key in rule.lists:
                users = sources.get(key)
                if users is None:  # the list's names are indexed once, whatever uses it
                    users = sources[key] = []
                    add(ruleset.list_names.get(key, ()), key)
                if not users or users[-1] is not rule:
                    users.append(rule)
        return cls(sources, exact, wildcard)

    def rules_of(self, table: dict[str, list[str]], key: str) -> list[IRRule]:
        """The rules naming `key` of `exact` or `wildcard`, in evaluation order (do not
        change the list: it may be shared)."""
        found = table.get(key)
        if not found:
            return []
        return _in_order([self.sources[s] for s in found])

    def naming(self, name: str) -> list[IRRule]:
        """The rules that name `name` (already normalised), deny rules first, each once."""
        groups = [self.rules_of(self.exact, name)]
        if self.wildcard:
            groups += [self.rules_of(self.wildcard, up) for up in suffixes(name)]
        return _in_order([g for g in groups if g] or [[]])

    def resolved_from(self, resolved: Mapping[str, Sequence[str]], rule: IRRule,
                      dst: str | None) -> str | None:
        """The first of `rule`'s names (in its order) that `resolved` answered with `dst`:
        `decide` explains an address match by it (a rule of 400 names is not scanned per
        flow)."""
        via = self._via.get((rule.section, rule.index))
        if via is None:
            via = self._via[(rule.section, rule.index)] = {}
            for name in rule.names:
                for address in resolved.get(name, ()):
                    via.setdefault(address, name)
        return None if dst is None else via.get(dst)

    def names(self, rule: IRRule, name: str) -> bool:
        """Whether `rule` names `name` (already normalised): `decide` asks this per rule."""
        ids = self._ids.get(name)
        if ids is None:
            if len(self._ids) > 4096:
                self._ids.clear()
            ids = self._ids[name] = frozenset((r.section, r.index) for r in self.naming(name))
        return (rule.section, rule.index) in ids


_CACHE: dict[int, DecisionIndex] = {}


def index_of(ruleset: Ruleset) -> DecisionIndex:
    """The ruleset's index, computed on first use and dropped with the ruleset."""
    key = id(ruleset)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = DecisionIndex.of(ruleset)
        weakref.finalize(ruleset, _CACHE.pop, key, None)
    return found
