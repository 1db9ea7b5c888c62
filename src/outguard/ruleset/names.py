"""Names in a ruleset: normalisation, and the question "which rules cover this name?".

Pure. The resolver asks `NamePolicy.lookup(qname)` for every query; the answer says whether the
name may be resolved, which kernel sets its addresses go into, and, when it may not, why
(blocklists are read by `dns.blocklist` and given to `NamePolicy.of`).

Which rules name a name comes from `index.DecisionIndex`, the very tables `decide` reads, so the
resolver and `decide` cannot disagree about it. Matching: names are compared in lower-case ASCII without a
trailing dot, internationalised names as punycode (`xn--...`). `*.example.test` matches every
name *below* example.test (`a.example.test`, `a.b.example.test`), never `example.test` itself nor
`badexample.test`. A blocklist entry blocks the name and every name below it, as feeds mean it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from outguard.ruleset.index import index_of, normalize, rule_names, suffixes
from outguard.ruleset.ir import IRRule, Ruleset
from outguard.ruleset.keys import RuleKey

__all__ = ["NamePolicy", "NameVerdict", "normalize", "rule_names", "suffixes"]


@dataclass(frozen=True)
class NameVerdict:
    action: Literal["resolve", "block", "blocklist"]
    sets: tuple[str, ...] = ()  # fqdn set base names (f_<hash>): the answer's addresses go there
    rule: str = "default"  # "allow:<name>", "deny:<name>", "blocklist:<file>", "default"
    reason: str = ""
    # resolved under a wildcard ("cdn.example.test" for *.cdn.example.test) or a rule for every
    # destination (""): names that may vary, so may carry data (`tunnel`); None for exact names
    zone: str | None = None


@dataclass
class _Entry:
    counter: str
    fqdn_set: str | None
    conditional: bool  # the rule has conditions besides the destination (ports, owner, ...)


@dataclass
class NamePolicy:
    """Which rules name a DNS name. Build with `NamePolicy.of(ruleset, blocklist)`."""

    mode: Literal["enforce", "audit"] = "enforce"
    exact: dict[str, list[_Entry]] = field(default_factory=dict)
    wildcard: dict[str, list[_Entry]] = field(default_factory=dict)  # key: the part after "*."
    deny_exact: dict[str, list[_Entry]] = field(default_factory=dict)
    deny_wildcard: dict[str, list[_Entry]] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)  # name → blocklist it comes from
    any_name: str | None = None  # an allow rule for every destination allows every name

    @classmethod
    def of(cls, ruleset: Ruleset, blocklist: dict[str, str] | None = None) -> NamePolicy:
        """The resolver's tables: the ruleset's `DecisionIndex` (what `decide` reads) as plain
        dictionaries the resolver process receives as JSON."""
        out = cls(mode=ruleset.mode, blocked=dict(blocklist or {}))
        out.any_name = next((r.counter for r in ruleset.allow if r.any_destination), None)
        index = index_of(ruleset)
        entries = {id(r): _Entry(r.counter, r.fqdn_set, _conditional(r)) for r in ruleset.rules()}
        # rules lists are shared by every name of a list: split each into allow and deny once
        # (the value keeps the list alive, so its id stays its own)
        split: dict[int, tuple[list[IRRule], list[_Entry], list[_Entry]]] = {}
        for source, allow, deny in ((index.exact, out.exact, out.deny_exact),
                                    (index.wildcard, out.wildcard, out.deny_wildcard)):
            for key in source:
                rules = index.rules_of(source, key)
                done = split.get(id(rules))
                if done is None:
                    done = split[id(rules)] = (
                        rules, [entries[id(r)] for r in rules if r.section == "allow"],
                        [entries[id(r)] for r in rules if r.section == "deny"])
                if done[1]:
                    allow[key] = done[1]
                if done[2]:
                    deny[key] = done[2]
        return out

    @staticmethod
    def _find(name: str, exact: dict[str, list[_Entry]],
              wild: dict[str, list[_Entry]]) -> list[_Entry]:
        found = list(exact.get(name, ()))
        if wild:
            for up in suffixes(name):
                found.extend(wild.get(up, ()))
        return found

    def _zone(self, name: str) -> str | None:
        return next((up for up in suffixes(name) if up in self.wildcard), None)

    def to_json(self) -> dict[str, Any]:
        """Plain data for the resolver process (`from_json` rebuilds it)."""
        def entries(table: dict[str, list[_Entry]]) -> dict[str, list[list[Any]]]:
            return {k: [[e.counter, e.fqdn_set, e.conditional] for e in v] for k, v in table.items()}
        return {"mode": self.mode, "exact": entries(self.exact), "wildcard": entries(self.wildcard),
                "deny_exact": entries(self.deny_exact), "deny_wildcard": entries(self.deny_wildcard),
                "blocked": self.blocked, "any_name": self.any_name}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NamePolicy:
        def entries(table: dict[str, list[list[Any]]]) -> dict[str, list[_Entry]]:
            return {str(k): [_Entry(str(c), None if f is None else str(f), bool(x)) for c, f, x in v]
                    for k, v in table.items()}
        mode = data["mode"]
        if mode not in ("enforce", "audit"):
            raise ValueError(f"mode {mode!r}")
        return cls(mode, entries(data["exact"]), entries(data["wildcard"]),
                   entries(data["deny_exact"]), entries(data["deny_wildcard"]),
                   {str(k): str(v) for k, v in data["blocked"].items()},
                   None if data["any_name"] is None else str(data["any_name"]))

    def lookup(self, qname: str) -> NameVerdict:
        name = normalize(qname)
        if self.blocked:
            for candidate in (name, *suffixes(name)):
                if candidate in self.blocked:
                    return NameVerdict("blocklist", rule=f"blocklist:{self.blocked[candidate]}",
                                       reason=f"{candidate} is on blocklist {self.blocked[candidate]}")
        denied = self._find(name, self.deny_exact, self.deny_wildcard)
        allowed = self._find(name, self.exact, self.wildcard)
        sets = tuple(dict.fromkeys(e.fqdn_set for e in denied + allowed if e.fqdn_set))
        hard = [e for e in denied if not e.conditional]
        if hard:
            return NameVerdict("block", sets, hard[0].counter,
                               f"deny rule {RuleKey.parse(hard[0].counter).name!r} names {name}")
        if allowed:
            return NameVerdict("resolve", sets, allowed[0].counter,
                               f"allow rule {RuleKey.parse(allowed[0].counter).name!r} names"
                               f" {name}",
                               None if name in self.exact else self._zone(name))
        if self.any_name is not None:
            return NameVerdict("resolve", sets, self.any_name,
                               f"allow rule {RuleKey.parse(self.any_name).name!r} allows every"
                               " destination", "")
        return NameVerdict("block", sets, "default", f"no rule names {name}")


def _conditional(rule: IRRule) -> bool:
    m = rule.match
    return (m.proto != "any" or bool(m.ports) or m.uid is not None or m.gid is not None
            or m.cgroup is not None)
