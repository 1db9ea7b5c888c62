"""Host names for the export targets: the names each rule covers, and their addresses.

Place in the data flow: policy → `ruleset.lower` → `for_export` (here) → an exporter
(`export.targets`). Without `dns:`, `lower` has resolved the names of the rules and of inline
lists already (apply time is export time). With `dns:`, outguard resolves nothing ahead: its
resolver fills kernel sets as clients ask, so `lower` leaves every name without an address. A
static export has no such resolver: `for_export` resolves every name of the rules and of the
lists they use once, now, and puts the addresses where `lower` would have (the rule's inline
source, the list's source). The fidelity reports say so ("resolved at export time: the
addresses go stale"), and the targets that have a name form of their own (Windows dynamic
keywords, AWS Network Firewall domain lists, Azure Firewall FQDNs, GCP FQDN objects, Cilium
toFQDNs) use the names as well, those inside `@list` entries too. A name that does not resolve
is reported by every target, never dropped silently. Host names a threat feed lists (URLhaus)
are not resolved: only outguard's resolver can block them, and every target says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime

from outguard.policy.loaded import Policy
from outguard.policy.targets import Target, parse_target
from outguard.ruleset.ir import Elements, IRRule, Ruleset, Source
from outguard.ruleset.lower import Resolver, lower, system_resolver

FEED_PREFIX = "list:feed:"
WORKERS = 16  # getaddrinfo blocks; a list of names resolves in parallel


@dataclass(frozen=True)
class RuleNames:
    """The names of one rule, its own and those of its lists, as an exporter needs them."""

    names: tuple[str, ...]  # host names: the rule's own, then those of its lists
    wildcards: tuple[str, ...]
    resolved: tuple[str, ...]  # the names that have addresses (in the rule's sources)
    unresolved: tuple[str, ...]  # names that did not resolve at export time
    feed_names: tuple[tuple[str, int], ...]  # (feed list, how many host names it holds)

    @property
    def fqdns(self) -> tuple[str, ...]:
        return self.names + self.wildcards


def rule_names(rs: Ruleset, rule: IRRule) -> RuleNames:
    names, wilds = list(rule.names), list(rule.wildcards)
    feeds: list[tuple[str, int]] = []
    for key in rule.lists:
        values = rs.list_names.get(key, ())
        if key.startswith(FEED_PREFIX):
            if values:
                feeds.append((key.removeprefix("list:"), len(values)))
            continue
        for value in values:
            (wilds if value.startswith("*.") else names).append(value)
    names = list(dict.fromkeys(names))
    wilds = list(dict.fromkeys(wilds))
    resolved = tuple(n for n in names if rs.resolved.get(n))
    unresolved = tuple(n for n in names if not rs.resolved.get(n))
    return RuleNames(tuple(names), tuple(wilds), resolved, unresolved, tuple(feeds))


def name_notes(rs: Ruleset, rule: IRRule, *, native: str | None = None) -> list[str]:
    """What an export does with a rule's names, one note each, for the fidelity report.

    `native`: the target's own name form, when it holds the rule's names (then the names that
    did not resolve are still matched there)."""
    info = rule_names(rs, rule)
    notes = []
    if info.resolved:
        shown = ", ".join(f"{n} → {' '.join(rs.resolved[n])}" for n in info.resolved)
        notes.append(f"host names resolved at export time, the addresses go stale ({shown});"
                     " export again when they change")
    if info.unresolved:
        tail = f" (only {native} matches them)" if native else ": left out"
        notes.append(f"host names that did not resolve at export time"
                     f" ({', '.join(info.unresolved)}){tail}")
    if info.wildcards and native is None:
        notes.append(f"wildcard names ({', '.join(info.wildcards)}) need outguard's DNS "
                     "resolver: left out")
    for feed, count in info.feed_names:
        notes.append(f"the {count} host names of @{feed} are not exported: only outguard's DNS"
                     " resolver blocks them")
    return notes


def _merge(elements: Elements, addresses: Iterable[str]) -> Elements:
    extra = []
    for text in addresses:
        try:
            extra.append(parse_target(text))
        except ValueError:
            continue
    if not extra:
        return elements
    current = [Target("addr", a, 4) for a in elements.v4] + [Target("addr", a, 6) for a in elements.v6]
    current += [Target("net", a, 4) for a in elements.v4_nets]
    current += [Target("net", a, 6) for a in elements.v6_nets]
    return Elements.of(current + extra, {})


def _source(key: str, elements: Elements) -> Source:
    return Source(key, elements.digest(), lambda: elements)


def _resolve_all(names: list[str], resolver: Resolver) -> dict[str, tuple[str, ...]]:
    if not names:
        return {}
    with ThreadPoolExecutor(min(WORKERS, len(names))) as pool:
        answers = list(pool.map(resolver, names))
    return {n: tuple(dict.fromkeys(a)) for n, a in zip(names, answers, strict=True)}


def _list_names(policy: Policy, rs: Ruleset) -> dict[str, tuple[str, ...]]:
    """Names and wildcards of every list a rule uses (with `dns:`, `lower` made this already;
    feeds keep only what `lower` gave them)."""
    out = dict(rs.list_names)
    used = {key for rule in rs.rules() for key in rule.lists}
    for key in sorted(used):
        name = key.removeprefix("list:")
        if key in out or key.startswith(FEED_PREFIX) or name not in policy.lists:
            continue
        out[key] = tuple(t.value for t in policy.lists[name].targets
                         if t.kind in ("host", "wildcard"))
    return out


def resolve_names(rs: Ruleset, policy: Policy, resolver: Resolver = system_resolver) -> Ruleset:
    """`rs` with every name of its rules and their lists resolved (those `lower` resolved keep
    their addresses), the addresses added to the sources that hold the names."""
    list_names = _list_names(policy, rs)
    wanted: dict[str, None] = {}
    for rule in rs.rules():
        wanted.update(dict.fromkeys(rule.names))
    for key, values in list_names.items():
        if not key.startswith(FEED_PREFIX):
            wanted.update(dict.fromkeys(v for v in values if not v.startswith("*.")))
    answers = _resolve_all([n for n in wanted if n not in rs.resolved], resolver)
    resolved = {**rs.resolved, **answers}
    sources = dict(rs.sources)
    for key, values in list_names.items():
        if key.startswith(FEED_PREFIX) or key not in sources:
            continue
        addresses = [a for v in values for a in answers.get(v, ())]
        if addresses:
            merged = _merge(sources[key].elements, addresses)
            sources[key] = _source(key, merged)

    def with_addresses(rule: IRRule) -> IRRule:
        addresses = [a for n in rule.names for a in answers.get(n, ())]
        if not addresses:
            return rule
        key = rule.inline or f"rule:{rule.section}:{rule.name}"
        base = sources[key].elements if key in sources else Elements()
        merged = _merge(base, addresses)
        sources[key] = _source(key, merged)
        return replace(rule, inline=key)

    deny = tuple(with_addresses(r) for r in rs.deny)
    allow = tuple(with_addresses(r) for r in rs.allow)
    return replace(rs, sources=sources, deny=deny, allow=allow, resolved=resolved,
                   list_names=list_names)


def for_export(policy: Policy, *, resolver: Resolver = system_resolver,
               now: datetime | None = None) -> Ruleset:
    """The ruleset an exporter translates: `lower`'s, with every name resolved (see above)."""
    return resolve_names(lower(policy, resolver=resolver, now=now), policy, resolver)
