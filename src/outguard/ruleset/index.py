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

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from outguard.ruleset.ir import IRRule, Ruleset


def normalize(name: str) -> str:
    """Canonical text of a name as policies write it: lower case, no trailing dot, punycode."""
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


@dataclass(frozen=True)
class DecisionIndex:
    """Names → the rules that name them, in evaluation order (deny first, then allow)."""

    exact: dict[str, tuple[IRRule, ...]]
    wildcard: dict[str, tuple[IRRule, ...]]  # key: the part after "*."

    @classmethod
    def of(cls, ruleset: Ruleset) -> DecisionIndex:
        exact: dict[str, dict[RuleId, IRRule]] = {}
        wildcard: dict[str, dict[RuleId, IRRule]] = {}
        for rule in ruleset.rules():
            names, wilds = rule_names(ruleset, rule)
            rid = (rule.section, rule.index)
            for n in names:
                exact.setdefault(normalize(n), {})[rid] = rule
            for w in wilds:
                wildcard.setdefault(normalize(w[2:]), {})[rid] = rule
        return cls({k: tuple(v.values()) for k, v in exact.items()},
                   {k: tuple(v.values()) for k, v in wildcard.items()})

    def naming(self, name: str) -> tuple[IRRule, ...]:
        """The rules that name `name` (already normalised), deny rules first, each once."""
        found: dict[RuleId, IRRule] = {(r.section, r.index): r for r in self.exact.get(name, ())}
        if self.wildcard:
            for up in suffixes(name):
                for r in self.wildcard.get(up, ()):
                    found.setdefault((r.section, r.index), r)
        return tuple(sorted(found.values(), key=lambda r: (r.section != "deny", r.index)))

    def names(self, rule: IRRule, name: str) -> bool:
        """Whether `rule` names `name` (already normalised)."""
        return any(r.section == rule.section and r.index == rule.index for r in self.naming(name))


_CACHE: dict[int, DecisionIndex] = {}


def index_of(ruleset: Ruleset) -> DecisionIndex:
    """The ruleset's index, computed on first use and dropped with the ruleset."""
    key = id(ruleset)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = DecisionIndex.of(ruleset)
        weakref.finalize(ruleset, _CACHE.pop, key, None)
    return found
