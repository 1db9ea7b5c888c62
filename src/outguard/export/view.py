"""What the host and cloud exporters (windows, aws, azure, gcp, k8s) share: each IR rule seen as
plain CIDRs, names and conditions, and a ledger that collects the fidelity of each rule.

Place in the data flow: `Ruleset` (from `ruleset.lower`) → `views` → one exporter → `Export`.

One policy for what a target cannot express, so every exporter fails the same, safe way:
a condition the target has no notion of (`for:` user, group, systemd unit or cgroup) makes an
**allow** rule *dropped* (its traffic falls to the default block) and a **deny** rule
*approximated* by applying it to everyone. Both block at least what the policy blocks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from outguard.export.fidelity import Level, RuleFidelity
from outguard.export.names import RuleNames, rule_names
from outguard.ruleset.ir import IRRule, Ruleset

ALL_V4 = "0.0.0.0/0"
ALL_V6 = "::/0"
T = TypeVar("T")


@dataclass(frozen=True)
class RuleView:
    rule: IRRule
    v4: tuple[str, ...]  # CIDRs; single addresses as /32
    v6: tuple[str, ...]  # CIDRs; single addresses as /128
    named: RuleNames  # its names and its lists' (`export.names`), resolved or not
    blocked: str = "drop"  # what the policy does with what a deny rule matches: drop, reject

    @property
    def key(self) -> str:
        return self.rule.counter

    @property
    def deny(self) -> bool:
        return self.rule.section == "deny"

    @property
    def any_destination(self) -> bool:
        return self.rule.any_destination

    @property
    def names(self) -> tuple[str, ...]:
        """Host names: the rule's own and those in its lists' entries."""
        return self.named.names

    @property
    def wildcards(self) -> tuple[str, ...]:
        return self.named.wildcards

    @property
    def fqdns(self) -> tuple[str, ...]:
        return self.named.fqdns

    @property
    def from_names(self) -> tuple[str, ...]:
        """The names whose export-time addresses are in v4/v6."""
        return self.named.resolved

    @property
    def proto(self) -> str:
        return self.rule.match.proto

    @property
    def ports(self) -> tuple[tuple[int, int], ...]:
        return self.rule.match.ports

    def cidrs(self, version: int) -> tuple[str, ...]:
        """The rule's destinations of one family; every address for an any-destination rule."""
        if self.any_destination:
            return (ALL_V4,) if version == 4 else (ALL_V6,)
        return self.v4 if version == 4 else self.v6

    @property
    def has_addresses(self) -> bool:
        return self.any_destination or bool(self.v4 or self.v6)

    def owner(self) -> str | None:
        """The `for:` conditions as text, or None: no export target can check them."""
        m = self.rule.match
        parts = []
        if m.uid is not None:
            parts.append(f"uid {m.uid}")
        if m.gid is not None:
            parts.append(f"gid {m.gid}")
        if m.cgroup is not None:
            parts.append(f"cgroup {m.cgroup}")
        return ", ".join(parts) or None


def _as_cidr(text: str) -> str:
    return text if "/" in text else f"{text}/{32 if ':' not in text else 128}"


def views(ruleset: Ruleset) -> list[RuleView]:
    """Deny rules then allow rules, in policy order, with their destinations flattened."""
    out = []
    for rule in ruleset.rules():
        v4: dict[str, None] = {}
        v6: dict[str, None] = {}
        for key in ((rule.inline,) if rule.inline else ()) + rule.lists:
            el = ruleset.sources[key].elements
            for text in el.v4 + el.v4_nets:
                v4[_as_cidr(text)] = None
            for text in el.v6 + el.v6_nets:
                v6[_as_cidr(text)] = None
        blocked = ruleset.default_action if ruleset.mode == "enforce" else "accept"
        out.append(RuleView(rule, tuple(v4), tuple(v6), rule_names(ruleset, rule), blocked))
    return out


def port_texts(ports: Sequence[tuple[int, int]]) -> list[str]:
    """["80", "8000-8100"]: the form most firewalls take."""
    return [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ports]


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def covers(outer: Sequence[str], inner: Sequence[str]) -> bool:
    """Every CIDR of `inner` lies inside some CIDR of `outer` (same family assumed)."""
    nets = [ipaddress.ip_network(o) for o in outer]
    for text in inner:
        net = ipaddress.ip_network(text)
        if not any(net.version == o.version and net.subnet_of(o) for o in nets):  # type: ignore[arg-type]
            return False
    return True


def overlaps(a: Sequence[str], b: Sequence[str]) -> bool:
    nets = [ipaddress.ip_network(x) for x in b]
    return any(ipaddress.ip_network(x).overlaps(n) for x in a for n in nets)


_RANK: dict[Level, int] = {"exact": 0, "approximated": 1, "dropped": 2}


class Ledger:
    """Collects what an exporter did with each rule; the worst level wins, the notes add up."""

    def __init__(self) -> None:
        self._level: dict[str, Level] = {}
        self._how: dict[str, list[str]] = {}
        self.warnings: list[str] = []

    def note(self, rule: str, level: Level, how: str = "") -> None:
        current = self._level.get(rule, "exact")
        self._level[rule] = level if _RANK[level] > _RANK[current] else current
        notes = self._how.setdefault(rule, [])
        if how and how not in notes:
            notes.append(how)

    def exact(self, rule: str) -> None:
        self.note(rule, "exact")

    def approx(self, rule: str, how: str) -> None:
        self.note(rule, "approximated", how)

    def drop(self, rule: str, why: str) -> None:
        self.note(rule, "dropped", why)

    def level(self, rule: str) -> Level:
        return self._level.get(rule, "exact")

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def fidelity(self) -> list[RuleFidelity]:
        return [RuleFidelity(rule, level, "; ".join(self._how[rule]))
                for rule, level in self._level.items()]


def common_notes(view: RuleView, ledger: Ledger, target: str, *, mode: str) -> bool:
    """Record what no target here can do (owners, expiry, audit mode). False: leave the rule out."""
    ledger.exact(view.key)
    if mode == "audit" and view.deny:
        ledger.drop(view.key, f"audit mode: {target} has no log-and-accept rule, so the deny rule"
                              " is left out and nothing is blocked")
        return False
    owner = view.owner()
    if owner is not None and not view.deny:
        ledger.drop(view.key, f"{target} cannot tell processes apart ({owner}); the rule is left"
                              " out, so this traffic falls to the default block")
        return False
    if owner is not None:
        ledger.approx(view.key, f"applies to every process: {target} cannot check {owner}")
    if view.deny and view.blocked == "reject":
        ledger.approx(view.key, f"{target} drops silently: it cannot reject")
    until = view.rule.match.until
    if until is not None:
        ledger.approx(view.key, f"{target} has no expiry: the rule stays after"
                                f" {until.isoformat()} until you export and apply again")
    if view.from_names:
        ledger.approx(view.key, "addresses of " + ", ".join(view.from_names)
                      + " resolved at export time (they go stale: export again when they change)")
    if view.named.unresolved:
        ledger.approx(view.key, "no addresses for " + ", ".join(view.named.unresolved)
                      + ": did not resolve at export time")
    for feed, count in view.named.feed_names:
        ledger.approx(view.key, f"the {count} host names of @{feed} are not exported: only"
                                " outguard's DNS resolver blocks them")
    return True


def default_note(ruleset: Ruleset, ledger: Ledger, target: str, *, logs: str) -> None:
    """The fidelity of the default verdict: drop is exact, reject and audit are not."""
    ledger.exact("default")
    if ruleset.mode == "audit":
        ledger.approx("default", f"audit mode: everything is allowed; {logs} instead of"
                                 " outguard's log of what would be blocked")
    elif ruleset.default_action == "reject":
        ledger.approx("default", f"{target} drops silently: it cannot reject")


def merged(forms: Sequence[tuple[str, Ledger]], order: Sequence[str]) -> tuple[list[RuleFidelity],
                                                                                list[str]]:
    """One report for an export of several forms (e.g. NetworkPolicy and CiliumNetworkPolicy):
    per rule the worse level (but *dropped* only when every form left the rule out: otherwise
    the export holds it, approximated), each form's explanation prefixed with the form's name,
    in `order` (rule keys; keys not in it last); and every form's warnings, prefixed too. With
    one form the report is that form's, unprefixed."""
    if len(forms) == 1:
        [(_kind, ledger)] = forms
        items = ledger.fidelity()
        warnings = list(ledger.warnings)
    else:
        combined = Ledger()
        kept: set[str] = set()
        for kind, ledger in forms:
            for item in ledger.fidelity():
                combined.note(item.rule, item.level, f"{kind} {item.level}"
                              + (f": {item.how}" if item.how else ""))
                if item.level != "dropped":
                    kept.add(item.rule)
        items = [RuleFidelity(f.rule, "approximated", f.how)
                 if f.level == "dropped" and f.rule in kept else f for f in combined.fidelity()]
        warnings = [f"{kind}: {w}" for kind, ledger in forms for w in ledger.warnings]
    rank = {key: i for i, key in enumerate(order)}
    return sorted(items, key=lambda f: rank.get(f.rule, len(rank))), warnings
