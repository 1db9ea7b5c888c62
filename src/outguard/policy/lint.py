"""Warnings about a valid policy: things that load but are probably not what was meant.

Shadowed rules, allows of everything, unused lists, expired rules, and host names that are only
resolved at apply time. Pure: takes a `Policy` and a clock reading, returns `Problem`s.
"""

from __future__ import annotations

from datetime import UTC, datetime

from outguard.errors import Problem
from outguard.policy.addresses import AddrSet
from outguard.policy.load import Policy
from outguard.policy.model import Rule

_PROTOS = {"tcp": {"tcp"}, "udp": {"udp"}, "icmp": {"icmp"}, "any": {"tcp", "udp", "icmp", "other"}}


def as_utc(moment: datetime) -> datetime:
    """Naive times in a policy are the machine's local time, as people write them."""
    return moment.astimezone(UTC)  # a naive datetime is taken as local time


def _ports_cover(outer: Rule, inner: Rule) -> bool:
    if outer.ports is None:
        return True
    if inner.ports is None:
        return False
    return all(any(lo <= ilo and ihi <= hi for lo, hi in outer.ports) for ilo, ihi in inner.ports)


def _plain_addresses(rule: Rule) -> AddrSet | None:
    """The rule's destinations when they are all addresses or prefixes; None otherwise."""
    if rule.to is None or any(t.kind not in ("addr", "net") for t in rule.to):
        return None
    return AddrSet.of(rule.to)


def _shadows(earlier: Rule, later: Rule, outer: AddrSet | None, inner: AddrSet | None) -> bool:
    if earlier.owner is not None or earlier.expires is not None:
        return False
    if not _PROTOS[later.proto] <= _PROTOS[earlier.proto] or not _ports_cover(earlier, later):
        return False
    if earlier.to is None:
        return True
    return outer is not None and inner is not None and outer.covers(inner)


def _shadow_candidates(ordered: list[tuple[str, int, Rule]],
                       plain: list[AddrSet | None]) -> list[list[int]]:
    """For each rule, the earlier rules that might cover it. An index by address keeps this
    linear for the common policy of many rules with a few addresses each."""
    by_single: dict[tuple[int, int], list[int]] = {}
    broad: list[int] = []  # rules with prefixes or every destination: compared with everyone
    out: list[list[int]] = []
    for position, (_s, _i, rule) in enumerate(ordered):
        addrs = plain[position]
        first = next(((v, version) for version in (4, 6) for v in addrs.singles[version]), None) \
            if addrs is not None else None
        found = list(broad)
        if first is not None:
            found += by_single.get(first, [])
        out.append(sorted(found))
        if rule.to is None or (addrs is not None and any(addrs.nets.values())):
            broad.append(position)
        if addrs is not None:
            for version in (4, 6):
                for value in addrs.singles[version]:
                    by_single.setdefault((value, version), []).append(position)
    return out


def lint(policy: Policy, now: datetime | None = None) -> list[Problem]:
    now = now or datetime.now(UTC)
    out: list[Problem] = []
    src = policy.source

    def warn(path: tuple[str | int, ...], text: str) -> None:
        from outguard.policy.load import format_path  # noqa: PLC0415

        line, col = policy.positions.of(path)
        out.append(Problem(src, line, col, format_path(path), text))

    ordered = policy.rules()
    plain = [_plain_addresses(rule) for _s, _i, rule in ordered]
    candidates = _shadow_candidates(ordered, plain)
    used: set[str] = set()
    for position, (section, index, rule) in enumerate(ordered):
        path: tuple[str | int, ...] = (section, index)
        if rule.expires is not None and as_utc(rule.expires) <= now:
            warn((*path, "expires"), f"rule {rule.name!r} expired on {rule.expires.isoformat()};"
                 " it is left out of the ruleset")
        for j, target in enumerate(rule.to or []):
            if target.kind == "list":
                used.add(target.value)
            elif policy.doc.dns is not None:
                continue  # outguard's resolver keeps names and wildcards fresh
            elif target.kind == "host":
                warn((*path, "to", j), f"host name {target.value!r} is resolved when the policy is"
                     " applied; its addresses go stale until the next apply")
            elif target.kind == "wildcard":
                warn((*path, "to", j), f"wildcard {target.value!r} needs outguard's DNS resolver;"
                     " until then it matches nothing in the kernel")
            elif section == "allow" and target.kind == "net" and target.value in ("0.0.0.0/0", "::/0"):
                warn((*path, "to", j), f"allows every {'IPv4' if '.' in target.value else 'IPv6'}"
                     " destination")
        if section == "allow" and rule.to is None and rule.ports is None and rule.owner is None:
            warn(path, f"rule {rule.name!r} allows every destination on every port")
        for earlier_position in candidates[position]:
            earlier_section, earlier_index, earlier = ordered[earlier_position]
            if _shadows(earlier, rule, plain[earlier_position], plain[position]):
                verb = "blocks" if earlier_section == "deny" else "already allows"
                warn(path, f"rule {rule.name!r} never decides anything: {earlier_section}"
                     f"[{earlier_index}] {earlier.name!r} {verb} all of it first")
                break
    for name in policy.doc.lists:
        if name not in used:
            warn(("lists", name), f"list {name!r} is not used by any rule")
    return out
