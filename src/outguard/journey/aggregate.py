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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from outguard.events import LearnedFlow, severity_rank
from outguard.policy.addresses import packet_address
from outguard.policy.targets import parse_target
from outguard.ruleset.keys import DNS_PORTS

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
        if len(self.exes) < 8:
            self.exes.add(flow.exe or "?")

    def merge(self, other: Evidence) -> None:
        self.flows += other.flows
        self.connections += other.connections
        for moment in (other.first, other.last):
            if moment is not None:
                self.first = moment if self.first is None else min(self.first, moment)
                self.last = moment if self.last is None else max(self.last, moment)
        for exe in sorted(other.exes):
            if len(self.exes) < 8:
                self.exes.add(exe)


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

    exe: str
    dst: str
    names: tuple[str, ...]
    port: int | None
    proto: str
    why: str
    evidence: Evidence = field(default_factory=Evidence)


@dataclass
class Table:
    """The summary of a pass (`collect`)."""

    names: dict[str, set[str]] = field(default_factory=dict)  # address → valid names seen
    banned: dict[str, str] = field(default_factory=dict)  # address → why never allowed
    services: dict[str, Service] = field(default_factory=dict)
    refused: dict[tuple[str, str, int | None, str, str], Refused] = field(default_factory=dict)
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


def service_of(flow: LearnedFlow, per_host: bool) -> str:
    """The rule group of a flow: its systemd unit, else its executable (`host` with --per)."""
    if per_host:
        return HOST
    if flow.unit:
        return f"unit:{flow.unit}"
    return f"exe:{flow.exe or '?'}"


def _is_loopback(dst: str) -> bool:
    parsed = packet_address(dst)
    if parsed is None:
        return False
    value, version = parsed
    return value >> 24 == 127 if version == 4 else value == 1


def _in_unit(flow: LearnedFlow) -> bool:
    cgroup = (flow.cgroup or "").strip("/") + "/"
    return flow.unit is not None and cgroup.startswith(f"system.slice/{flow.unit}/")


def collect(flows: Iterable[LearnedFlow], *, per_host: bool = False,
            on_feed: Callable[[str], str | None] = lambda _d: None,
            keep: Callable[[LearnedFlow], bool] = lambda _f: True) -> Table:
    """The one pass. `keep` false: the flow only lends its names (what `--against` already
    allows)."""
    t = Table()
    feed_seen: dict[str, str | None] = {}
    for flow in flows:
        t.total += 1
        if flow.names:
            known = t.names.get(flow.dst)
            for name in flow.names:
                if (known is None or name not in known) and valid_name(name):
                    known = t.names.setdefault(flow.dst, set())
                    known.add(name)
        if flow.dst not in feed_seen:
            feed_seen[flow.dst] = on_feed(flow.dst)
        feed = feed_seen[flow.dst]
        classified = flow.severity is not None and severity_rank(flow.severity) >= MEDIUM
        if classified:
            t.banned.setdefault(flow.dst, f"{flow.signature or 'classified'} ({flow.severity})")
        elif feed is not None:
            t.banned.setdefault(flow.dst, f"on feed {feed}")
        if not keep(flow) and not classified:
            continue
        if _is_loopback(flow.dst):
            t.loopback += 1
            continue
        if classified or feed is not None:
            _refuse(t, flow, t.banned[flow.dst] if not classified
                    else f"{flow.signature or 'classified'} ({flow.severity})")
            continue
        if flow.proto in ("tcp", "udp") and flow.port in DNS_PORTS:
            t.dns.setdefault((flow.dst, flow.port, flow.proto), Evidence()).add(flow)
        _account(t, flow, service_of(flow, per_host))
    return t


def _refuse(t: Table, flow: LearnedFlow, why: str) -> None:
    key = (flow.exe or "?", flow.dst, flow.port, flow.proto, why)
    got = t.refused.get(key)
    if got is None:
        got = t.refused[key] = Refused(flow.exe or "?", flow.dst, (), flow.port, flow.proto, why)
    got.evidence.add(flow)


def _account(t: Table, flow: LearnedFlow, group: str) -> None:
    service = t.services.get(group)
    if service is None:
        service = t.services[group] = Service()
    service.uids.add(flow.uid)
    if flow.uid is not None and flow.user:
        service.users[flow.uid] = flow.user
    service.units.add(flow.unit)
    if service.in_unit_cgroup and not _in_unit(flow):
        service.in_unit_cgroup = False
    seen = service.seen.get((flow.dst, flow.proto))
    if seen is None:
        seen = service.seen[(flow.dst, flow.proto)] = Seen()
    seen.ports.add(flow.port)
    seen.evidence.add(flow)
