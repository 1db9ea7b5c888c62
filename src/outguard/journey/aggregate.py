"""One pass over the learned flows: what `suggest` needs from a table of any size.

Learned tables get big (a million rows), so the flows stream through once and only small
summaries stay: the names seen for each address, the destinations that may never be allowed,
and per (service, address, protocol) the ports, counts, times and processes seen. A flow is
never kept whole, except the few that are refused (their lines in "seen, not allowed").

Refused, never allowed: a flow the classifier marked medium or worse (`severity`), a destination
on an applied feed (`on_feed`), and every other flow to the same address or one of its names (a
JNDI callback's server does not become allowed because curl reached it too).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from outguard.events import LearnedFlow, severity_rank
from outguard.policy.addresses import packet_address
from outguard.policy.targets import parse_target
from outguard.ruleset.keys import DNS_PORTS

# A group of the store's summary (`store.flowsummary.suggest_rows`): (service, dst, proto,
# classified, rows, connections, first and last as epoch seconds, and as JSON lists the ports,
# executables, owners (uid, user, unit, cgroup) and name lists)
SuggestRow = tuple[str, str, str, bool, int, int, float, float, str, str, str, str]

HOST = "host"  # the one service of `--per host`
MEDIUM = severity_rank("medium")


@dataclass
class Evidence:
    """What was seen of a destination, a rule or a refused flow."""

    flows: int = 0
    connections: int = 0
    first: datetime | None = None
    last: datetime | None = None
    exes: set[str] = field(default_factory=set)

    def add(self, flow: LearnedFlow) -> None:
        self.flows += 1
        self.connections += flow.count
        if self.first is None or flow.first_seen < self.first:
            self.first = flow.first_seen
        if self.last is None or flow.last_seen > self.last:
            self.last = flow.last_seen
        keep_exe(self.exes, flow.exe or "?")

    def merge(self, other: Evidence) -> None:
        self.flows += other.flows
        self.connections += other.connections
        for moment in (other.first, other.last):
            if moment is not None:
                self.first = moment if self.first is None else min(self.first, moment)
                self.last = moment if self.last is None else max(self.last, moment)
        for exe in other.exes:
            keep_exe(self.exes, exe)


def keep_exe(exes: set[str], exe: str) -> None:
    """Add `exe`, keeping the 8 smallest names: which 8 a comment shows does not depend on the
    order the flows came in (the store's summary and a file give the same file)."""
    if exe in exes:
        return
    exes.add(exe)
    if len(exes) > 8:
        exes.remove(max(exes))


@dataclass
class Seen:
    """One (service, address, protocol): its ports and evidence."""

    ports: set[int | None] = field(default_factory=set)
    evidence: Evidence = field(default_factory=Evidence)


@dataclass
class Service:
    """A systemd unit, an executable, or the whole host, and whose it was."""

    uids: set[int | None] = field(default_factory=set)
    users: dict[int, str] = field(default_factory=dict)  # uid → name, where known
    units: set[str | None] = field(default_factory=set)
    in_unit_cgroup: bool = True  # every flow's cgroup lies in system.slice/UNIT
    seen: dict[tuple[str, str], Seen] = field(default_factory=dict)  # (dst, proto) → seen


@dataclass
class Refused:
    """Flows that were seen and must not be allowed, with why."""

    dst: str
    names: tuple[str, ...]
    port: int | None
    proto: str
    why: str
    evidence: Evidence = field(default_factory=Evidence)

    @property
    def exes(self) -> str:
        """The processes that made them (at most 8 named)."""
        return ", ".join(sorted(self.evidence.exes))


RefusedKey = tuple[str, int | None, str, str]  # (dst, port, proto, why)


def refuse(refused: dict[RefusedKey, Refused], dst: str, port: int | None, proto: str, why: str,
           evidence: Evidence) -> None:
    """Add `evidence` to the refused (dst, port, proto) for `why`."""
    got = refused.get((dst, port, proto, why))
    if got is None:
        got = refused[(dst, port, proto, why)] = Refused(dst, (), port, proto, why)
    got.evidence.merge(evidence)


@dataclass
class Table:
    """The summary of a pass (`collect`)."""

    names: dict[str, set[str]] = field(default_factory=dict)  # address → valid names seen
    banned: dict[str, str] = field(default_factory=dict)  # address → why never allowed
    services: dict[str, Service] = field(default_factory=dict)
    refused: dict[RefusedKey, Refused] = field(default_factory=dict)
    dns: dict[tuple[str, int | None, str], Evidence] = field(default_factory=dict)
    loopback: int = 0
    total: int = 0

    def banned_names(self) -> set[str]:
        return {n for dst in self.banned for n in self.names.get(dst, ())}


_VALID: dict[str, bool] = {}


def valid_name(name: str) -> bool:
    """A name a policy can carry as a host name (cached: a million flows share few names)."""
    got = _VALID.get(name)
    if got is None:
        try:
            got = parse_target(name).kind == "host"
        except ValueError:
            got = False
        if len(_VALID) < 1_000_000:
            _VALID[name] = got
    return got


def _is_loopback(dst: str) -> bool:
    parsed = packet_address(dst)
    if parsed is None:
        return False
    value, version = parsed
    return value >> 24 == 127 if version == 4 else value == 1


def _in_unit(unit: str | None, cgroup: str | None) -> bool:
    path = (cgroup or "").strip("/") + "/"
    return unit is not None and path.startswith(f"system.slice/{unit}/")


def collect(flows: Iterable[LearnedFlow], *, per_host: bool = False,
            on_feed: Callable[[str], str | None] = lambda _d: None,
            keep: Callable[[LearnedFlow], bool] | None = None) -> Table:
    """The one pass. `keep` false: the flow only lends its names (what `--against` already
    allows). The loop does the least it can per flow (a million of them): one dict entry per
    (service, destination, protocol); everything else is worked out per entry afterwards."""
    t = Table()
    raw: dict[tuple[str, str, str], _Raw] = {}
    classified: list[LearnedFlow] = []
    names = t.names
    for flow in flows:
        t.total += 1
        if flow.names:
            known = names.get(flow.dst)
            if known is None or not known.issuperset(flow.names):
                _add_names(names, flow)
        if flow.severity is not None and severity_rank(flow.severity) >= MEDIUM:
            classified.append(flow)
            continue
        if keep is not None and not keep(flow):
            continue
        group = HOST if per_host else f"unit:{flow.unit}" if flow.unit else f"exe:{flow.exe or '?'}"
        key = (group, flow.dst, flow.proto)
        rec = raw.get(key)
        if rec is None:
            rec = raw[key] = _Raw(flow)
        else:
            rec.add(flow)
    return _finish(t, raw, classified, on_feed)


def collect_summary(rows: Iterable[SuggestRow],
                    classified: Callable[[set[str]], list[LearnedFlow]], *,
                    on_feed: Callable[[str], str | None] = lambda _d: None) -> Table:
    """`collect` from the store's summary of the table (`store.flowsummary.suggest_rows`: one
    row per service, destination, protocol and severity); `classified` reads the
    classified rows to the given addresses whole, asked only when there are some. The same table gives the same
    `Table` as `collect` over its flows, in a fraction of the time."""
    t = Table()
    raw: dict[tuple[str, str, str], _Raw] = {}
    bad_dsts: set[str] = set()
    lists: dict[str, list[Any]] = {}  # the same JSON texts recur: parse each once

    def parsed(text: str) -> list[Any]:
        got = lists.get(text)
        if got is None:
            got = lists[text] = json.loads(text)
        return got

    for service, dst, proto, bad, n, conns, first, last, ports, exes, owners, names in rows:
        t.total += n
        for group in parsed(names):
            for name in group:
                if valid_name(name):
                    t.names.setdefault(dst, set()).add(name)
        if bad:
            bad_dsts.add(dst)
            continue
        evidence = Evidence(n, conns, datetime.fromtimestamp(first, UTC),
                            datetime.fromtimestamp(last, UTC), set(sorted(parsed(exes))[:8]))
        who = {(o[0], o[1], o[2], o[3]) for o in json.loads(owners)}
        rec = raw.get((service, dst, proto))
        if rec is None:
            rec = raw[(service, dst, proto)] = _Raw.__new__(_Raw)
            rec.ports, rec.owners, rec.evidence = set(parsed(ports)), who, evidence
            continue
        # the same rows with another severity below medium
        rec.ports.update(parsed(ports))
        rec.owners |= who
        rec.evidence.merge(evidence)
    return _finish(t, raw, classified(bad_dsts) if bad_dsts else [], on_feed)


def _finish(t: Table, raw: dict[tuple[str, str, str], _Raw], classified: list[LearnedFlow],
            on_feed: Callable[[str], str | None]) -> Table:
    # the most severe verdict names a destination, whatever order the flows came in
    for flow in sorted(classified, key=lambda f: (-severity_rank(f.severity or ""),
                                                  f.signature or "")):
        t.banned.setdefault(flow.dst, f"{flow.signature or 'classified'} ({flow.severity})")
    _settle(t, raw, classified, on_feed)
    return t


class _Raw:
    """A (service, destination, protocol) as the loop sees it."""

    __slots__ = ("evidence", "owners", "ports")

    def __init__(self, flow: LearnedFlow) -> None:
        self.ports: set[int | None] = {flow.port}
        self.owners = {(flow.uid, flow.user, flow.unit, flow.cgroup)}
        self.evidence = Evidence(1, flow.count, flow.first_seen, flow.last_seen,
                                 {flow.exe or "?"})

    def add(self, flow: LearnedFlow) -> None:
        self.ports.add(flow.port)
        e = self.evidence
        e.flows += 1
        e.connections += flow.count
        # plain comparisons: min()/max() calls cost a million flows a second
        if flow.first_seen < e.first:  # type: ignore[operator]  # noqa: PLR1730
            e.first = flow.first_seen
        if flow.last_seen > e.last:  # type: ignore[operator]  # noqa: PLR1730
            e.last = flow.last_seen
        keep_exe(e.exes, flow.exe or "?")
        self.owners.add((flow.uid, flow.user, flow.unit, flow.cgroup))  # never cut: `for:`


def _add_names(names: dict[str, set[str]], flow: LearnedFlow) -> None:
    for name in flow.names:
        if valid_name(name):
            names.setdefault(flow.dst, set()).add(name)


def _settle(t: Table, raw: dict[tuple[str, str, str], _Raw],
            classified: list[LearnedFlow], on_feed: Callable[[str], str | None]) -> None:
    """Per entry: loopback, feeds, refusals, services."""
    feeds: dict[str, str | None] = {}
    loopback: dict[str, bool] = {}
    for flow in classified:
        if flow.dst not in loopback:
            loopback[flow.dst] = _is_loopback(flow.dst)
        if not loopback[flow.dst]:
            _refuse(t, flow, f"{flow.signature or 'classified'} ({flow.severity})")
    for (group, dst, proto), rec in sorted(raw.items(), key=lambda kv: kv[0]):
        if dst not in loopback:
            loopback[dst] = _is_loopback(dst)
        if loopback[dst]:
            t.loopback += rec.evidence.flows
            continue
        if dst not in feeds:
            feeds[dst] = on_feed(dst)
        feed = feeds[dst]
        if feed is not None:
            t.banned.setdefault(dst, f"on feed {feed}")
            for port in sorted(rec.ports, key=lambda p: -1 if p is None else p):
                refuse(t.refused, dst, port, proto, t.banned[dst], rec.evidence)
            continue
        if proto in ("tcp", "udp"):
            for port in rec.ports & {*DNS_PORTS}:
                t.dns.setdefault((dst, port, proto), Evidence()).merge(rec.evidence)
        service = t.services.get(group)
        if service is None:
            service = t.services[group] = Service()
        for uid, user, unit, cgroup in rec.owners:
            service.uids.add(uid)
            if uid is not None and user:
                service.users[uid] = user
            service.units.add(unit)
            service.in_unit_cgroup &= _in_unit(unit, cgroup)
        seen = service.seen.setdefault((dst, proto), Seen())
        seen.ports |= rec.ports
        seen.evidence.merge(rec.evidence)


def _refuse(t: Table, flow: LearnedFlow, why: str) -> None:
    evidence = Evidence()
    evidence.add(flow)
    refuse(t.refused, flow.dst, flow.port, flow.proto, why, evidence)
