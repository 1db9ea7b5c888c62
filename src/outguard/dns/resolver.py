"""The resolver's decisions for one query: block, answer from cache, or ask upstream — and put
the answer's addresses into the kernel sets before the answer is released.

Sans-I/O core of the DNS forwarder: `Resolver.fast` (synchronous: a cache hit needing no kernel
write) and `Resolver.handle` (everything else) take a message and return the reply bytes. The
listeners in `server` do the sockets; upstream queries, set writes and attribution are the
objects passed in (in the resolver process: its own upstream sockets, and requests to the agent
for the rest). Forwarded names under a wildcard go past `tunnel.TunnelDetector`: a suspect is
answered as usual and recorded as a "suspicious" event (an incident under `outguard run`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from outguard.dns.answers import Resolved
from outguard.dns.cache import AnswerCache, Entry, RecentNames, SetItem, SetTracker, entry_of
from outguard.dns.client import Client, classify
from outguard.dns.events import DnsEvent, EventSink
from outguard.dns.tunnel import TunnelDetector, zone_of
from outguard.dns.upstream import UpstreamError
from outguard.dns.wire import (
    RCODE_NOTIMP,
    RCODE_NXDOMAIN,
    RCODE_REFUSED,
    RCODE_SERVFAIL,
    Query,
    WireError,
    error_reply,
    formerr_for,
    parse_query,
)
from outguard.errors import OutguardError
from outguard.ruleset.ir import DnsSettings
from outguard.ruleset.names import NamePolicy, NameVerdict

log = logging.getLogger("outguard.dns")
# False: no table of ours holds sets now (nothing is filtered), the items are not held
SetWrite = Callable[[list[SetItem]], Awaitable[bool | None]]
Ask = Callable[[Query], Awaitable[bytes]]
HOT_MAX = 4096
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
_TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 15: "MX", 16: "TXT", 33: "SRV", 12: "PTR", 2: "NS",
          6: "SOA", 65: "HTTPS", 64: "SVCB", 255: "ANY"}


@dataclass
class Stats:
    """The resolver's counters (monotonic since its start, except the `tcp_open` gauge). The
    agent reads them as `DnsHandle.stats()` (README "DNS resolver counters")."""

    queries: int = 0  # every query received
    hits: int = 0  # answered from the cache
    upstream: int = 0  # upstream resolutions (one per name and type, however many clients ask)
    blocked: int = 0  # refused, NXDOMAIN by a blocklist, or (audit) would have been
    set_writes: int = 0  # kernel set writes an answer waited for
    failures: int = 0  # SERVFAIL: no upstream answered, or the set write failed
    malformed: int = 0  # not a DNS query: FORMERR or nothing
    tunnel_suspects: int = 0  # forwarded queries that looked like DNS tunnelling
    tcp_open: int = 0  # TCP client connections open now
    tcp_evicted: int = 0  # idle TCP connections closed to make room for new ones
    events_dropped: int = 0  # events not sent: the agent did not keep up
    restarts: int = 0  # times the agent had to restart the resolver process
    by_rcode: dict[str, int] = field(default_factory=dict)  # answers with an event, by rcode
    upstream_queries: dict[str, int] = field(default_factory=dict)  # "addr:port" → queries
    upstream_failures: dict[str, int] = field(default_factory=dict)  # "addr:port" → failures


class Resolver:
    def __init__(self, settings: DnsSettings, names: NamePolicy, *, ask: Ask, write: SetWrite,
                 events: EventSink, attribute: Callable[[Query, tuple[str, int], bool],
                                                        Awaitable[Client]] | None = None,
                 cache: AnswerCache | None = None, tracker: SetTracker | None = None,
                 clock: Callable[[], float] = time.time,
                 on_resolved: Callable[[Resolved, float], None] | None = None) -> None:
        self.settings, self.names = settings, names
        self.ask, self.write, self.events, self.attribute = ask, write, events, attribute
        self.cache = cache or AnswerCache()
        self.tracker = tracker or SetTracker()
        self.clock = clock
        self.on_resolved = on_resolved  # each upstream answer (the agent's copy of `recent`)
        self.stats = Stats()
        self.tunnels = TunnelDetector(settings.tunnel_names_per_minute)
        self._verdicts: dict[str, NameVerdict] = {}
        self._inflight: dict[tuple[str, int, int, bool], asyncio.Future[Entry]] = {}
        # exact query bytes after the id → (reply bytes after the id, valid until): see `fast`
        self._hot: dict[bytes, tuple[bytes, float]] = {}
        self.recent = RecentNames()
        for entry in self.cache.entries.values():  # a restart: what clients may still use
            self.recent.record(entry.resolved, entry.stored_at)

    def update(self, settings: DnsSettings, names: NamePolicy) -> None:
        """A new policy: new rules, possibly new set names (the tracker keys on set names).
        Atomic for the queries: each one sees the old policy or the new one, never a mix."""
        self.settings, self.names = settings, names
        # the apply that brought this policy may have made the sets anew (empty): every address
        # is written again at its next answer
        self.tracker.expiry.clear()
        self._verdicts.clear()
        self._hot.clear()
        self.tunnels.per_minute = settings.tunnel_names_per_minute

    def names_of(self, addr: str) -> tuple[str, ...]:
        """Names that resolved to `addr` lately (the monitor's "was this destination resolved?")."""
        return self.recent.names_of(addr, self.clock())

    def verdict(self, qname: str) -> NameVerdict:
        found = self._verdicts.get(qname)
        if found is None:
            if len(self._verdicts) > 50000:
                self._verdicts.clear()
            found = self._verdicts[qname] = self.names.lookup(qname)
        return found

    def fast(self, data: bytes) -> bytes | None:
        """The reply when it needs nothing but the cache (no kernel write, no event); else None.

        A hit costs a dict lookup: the same query bytes (everything after the id: flags, question
        as sent, EDNS size, DO) get the same reply bytes until the answer's age in whole seconds
        changes (TTLs count down) or a set entry would need rewriting (`SetTracker.plan`), so
        the reply is built once per second and only the client's id is patched in."""
        key = data[2:]
        hot = self._hot.get(key)
        now = self.clock()
        if hot is not None and now < hot[1]:
            self.stats.queries += 1
            self.stats.hits += 1
            return data[:2] + hot[0]
        reply, until = self._fast_reply(data, now)
        if reply is not None:
            if len(self._hot) >= HOT_MAX:
                self._hot.clear()
            self._hot[key] = (reply[2:], until)
        elif hot is not None:
            del self._hot[key]
        return reply

    def _fast_reply(self, data: bytes, now: float) -> tuple[bytes | None, float]:
        try:
            q = parse_query(data)
        except WireError:
            return None, 0.0
        if q.opcode or q.qclass != 1 or len(data) > 512:
            return None, 0.0
        verdict = self.verdict(q.qname)
        if verdict.action != "resolve":
            return None, 0.0
        hit = self.cache.get(q.key, now)
        if hit is None:
            return None, 0.0
        entry, age = hit
        if self.tracker.plan(verdict.sets, entry.resolved, age, self.settings, now):
            return None, 0.0
        self.stats.queries += 1
        self.stats.hits += 1
        until = min(entry.stored_at + age + 1,
                    self.tracker.still_held_until(verdict.sets, entry.resolved, age, self.settings))
        return entry.answer.reply(q, age, q.udp_limit()), until

    async def handle(self, data: bytes, client: tuple[str, int], tcp: bool = False) -> bytes | None:
        self.stats.queries += 1
        try:
            q = parse_query(data)
        except WireError:
            self.stats.malformed += 1
            return formerr_for(data)
        limit = 65535 if tcp else q.udp_limit()
        if q.opcode:
            return error_reply(q, RCODE_NOTIMP)
        if q.qclass != 1:
            return error_reply(q, RCODE_REFUSED)
        verdict = self.verdict(q.qname)
        if verdict.action != "resolve":
            self.stats.blocked += 1
            if self.names.mode == "enforce":
                rcode = (RCODE_NXDOMAIN if verdict.action == "blocklist"
                         or self.settings.unlisted == "nxdomain" else RCODE_REFUSED)
                await self._blocked_event(q, client, tcp, verdict, rcode, "blocklisted"
                                          if verdict.action == "blocklist" else "blocked")
                return error_reply(q, rcode)
        now = self.clock()
        hit = self.cache.get(q.key, now)
        try:
            if hit is not None:
                entry, age = hit
                self.stats.hits += 1
            else:
                entry, age = await self._resolve(q, verdict), 0
                now = self.clock()
            items = self.tracker.plan(verdict.sets, entry.resolved, age, self.settings, now)
            if items:
                await self._write(items, now)
            self.recent.record(entry.resolved, now)
        except (UpstreamError, OutguardError, WireError, ValueError) as exc:
            self.stats.failures += 1
            self._event(q, client, tcp, verdict, "failed", RCODE_SERVFAIL, reason=str(exc))
            return error_reply(q, RCODE_SERVFAIL)
        if verdict.action != "resolve":  # audit mode: resolved, and recorded as it would block
            await self._blocked_event(q, client, tcp, verdict, entry.answer.rcode, "audit",
                                      entry)
        elif (why := self._tunnel(q, verdict, now)) is not None:
            await self._blocked_event(q, client, tcp, verdict, entry.answer.rcode, "suspicious",
                                      entry, [f"dns-tunneling: {why}"])
        elif hit is None:
            self._event(q, client, tcp, verdict, "resolved", entry.answer.rcode, entry=entry)
        return entry.answer.reply(q, age, limit)

    def _tunnel(self, q: Query, verdict: NameVerdict, now: float) -> str | None:
        if verdict.zone is None:
            return None
        why = self.tunnels.check(q.qname, verdict.zone or zone_of(q.qname), now)
        self.stats.tunnel_suspects = self.tunnels.suspects
        return why

    async def _resolve(self, q: Query, verdict: NameVerdict) -> Entry:
        """One upstream query per (name, type) however many clients ask at once."""
        key = q.key
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        fut: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            self.stats.upstream += 1
            wire = await self.ask(q)
            entry = entry_of(wire, q.qname, self.clock())
            self.cache.put(key, entry)
            if self.on_resolved is not None and (entry.resolved.v4 or entry.resolved.v6):
                self.on_resolved(entry.resolved, entry.stored_at)
            fut.set_result(entry)
            return entry
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            del self._inflight[key]

    async def _write(self, items: list[SetItem], now: float) -> None:
        held = await self.write(items)
        self.stats.set_writes += 1
        if held is not False:  # else written again at the next answer: a table may come
            self.tracker.written(items, now)

    async def _blocked_event(self, q: Query, client: tuple[str, int], tcp: bool,
                             verdict: NameVerdict, rcode: int, action: str,
                             entry: Entry | None = None, found: list[str] | None = None) -> None:
        """An event with the process that asked, looked up while its socket still waits for
        our answer. Attribution may fail; the event is recorded all the same."""
        who = Client()
        if self.attribute is not None:
            try:
                who = await self.attribute(q, client, tcp)
            except (OSError, TimeoutError, OutguardError, ValueError) as exc:
                log.debug("no attribution for %s: %s", q.qname, exc)
        self._event(q, client, tcp, verdict, action, rcode, entry=entry, who=who,
                    classifications=found if found is not None
                    else classify(q.qname, who, verdict.rule == "default"))

    def _event(self, q: Query, client: tuple[str, int], tcp: bool, verdict: NameVerdict,
               action: str, rcode: int, *, reason: str | None = None, entry: Entry | None = None,
               who: Client | None = None, classifications: list[str] | None = None) -> None:
        name = _RCODES.get(rcode, str(rcode))
        self.stats.by_rcode[name] = self.stats.by_rcode.get(name, 0) + 1
        who = who or Client()
        addrs = [*entry.resolved.v4, *entry.resolved.v6] if entry is not None else []
        host = f"[{client[0]}]" if ":" in client[0] else client[0]
        self.events.append(DnsEvent(
            time=self.clock(), client=f"{host}:{client[1]}{'/tcp' if tcp else ''}",
            qname=q.qname, qtype=_TYPES.get(q.qtype, str(q.qtype)), action=action,
            rule=verdict.rule, reason=reason or verdict.reason, rcode=name, addresses=addrs,
            pid=who.pid, exe=who.exe, uid=who.uid, cmdline=list(who.cmdline),
            classifications=classifications or [],
            zone=(verdict.zone or zone_of(q.qname)) if action == "suspicious" else None))
