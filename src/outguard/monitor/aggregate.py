"""Aggregation: many blocked packets of one flow → one incident, and when to alert about it.

Place in the data flow: classify → **aggregate** → store / alerts. Pure: the clock comes in
with each event (`event.packet.time`), nothing here does I/O.

The same (process, user, destination, port, rule) within `window` of its last packet is one
incident with a count and first/last seen; later packets start a new incident. The user is part
of the key: one shell binary run by `nobody` and by root is two incidents, or a root reverse
shell could be filed under the first user's name. An alert goes out for the
first packet of an incident, and again when its severity rises; after that at most one per
`realert` per incident (a summary with the count so far). Each severity has its own budget of
`burst` alerts per minute, so that a flood (a scan, a miner retrying) cannot become an alert
storm, and a flood of low incidents cannot use up the budget of a high one. Severities below
`min_alert` (what the least demanding sink takes) raise no alert and use no budget. Alerts the
budget held back are counted per severity (`suppressed`).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from outguard.events import Classification, Event, Incident, Key, severity_rank


def process_key(event: Event) -> str:
    att = event.attribution
    if att.exe:
        return att.exe
    if att.cmdline:
        return att.cmdline[0]
    uid = att.uid if att.uid is not None else event.packet.uid
    return f"uid:{uid}" if uid is not None else "?"


@dataclass(frozen=True)
class Update:
    incident: Incident
    new: bool  # the first packet of this incident
    alert: bool  # send an alert about it now


@dataclass
class Aggregator:
    window: timedelta = timedelta(minutes=10)
    realert: timedelta = timedelta(minutes=5)
    burst: int = 60  # alerts per minute, per severity
    min_alert: str | None = "info"  # the least severity a sink sends; None: no alerts at all
    open: dict[Key, Incident] = field(default_factory=dict)
    _last_alert: dict[str, datetime] = field(default_factory=dict)
    _alerted_rank: dict[str, int] = field(default_factory=dict)
    _sent: dict[str, deque[datetime]] = field(default_factory=dict)
    suppressed: Counter[str] = field(default_factory=Counter)  # by severity
    _named: dict[tuple[int | None, str, int | None, str], Key] = field(default_factory=dict)

    def _joined(self, key: Key, now: datetime) -> Key:
        """The key a packet joins. The first SYN of a connect is often logged before its
        process can be found, a retransmit after it: an unattributed packet (`uid:N`) joins
        the open incident of the same user and flow whose process is known, and a packet whose
        process is known takes over the open `uid:N` incident of its flow, naming it. One
        connect is then one incident (it was two under load: `uid:0` and python's)."""
        process, uid, dst, dport, rule = key
        flow = (uid, dst, dport, rule)
        anon = f"uid:{uid}" if uid is not None else "?"
        current = self.open.get(key)
        if current is not None and now - current.last_seen <= self.window:
            return key
        if process == anon:
            named = self._named.get(flow)
            inc = self.open.get(named) if named is not None else None
            return named if named is not None and inc is not None and \
                now - inc.last_seen <= self.window else key
        self._named[flow] = key
        anon_key: Key = (anon, uid, dst, dport, rule)
        inc = self.open.get(anon_key)
        if inc is not None and now - inc.last_seen <= self.window:
            del self.open[anon_key]
            inc.process = process
            self.open[key] = inc
        return key

    def add(self, event: Event) -> Update:
        pkt, att = event.packet, event.attribution
        now = pkt.time
        uid = att.uid if att.uid is not None else pkt.uid
        key = self._joined((process_key(event), uid, pkt.dst, pkt.dport, pkt.rule), now)
        top = event.classifications[0] if event.classifications else None
        inc = self.open.get(key)
        new = inc is None or now - inc.last_seen > self.window
        if new:
            inc = Incident(
                id=uuid.UUID(bytes=os.urandom(16), version=4).hex, process=key[0], dst=pkt.dst,
                dport=pkt.dport, rule=pkt.rule, proto=pkt.proto, uid=uid,
                signature=top.signature if top else "blocked",
                title=top.title if top else "outbound connection outside the policy",
                severity=top.severity if top else "low", first_seen=now, last_seen=now)
            self.open[key] = inc
        else:
            assert inc is not None
            inc.count += 1
            inc.last_seen = max(inc.last_seen, now)
        # the latest packet tells the most about who is behind the flow now
        inc.pid = att.pid if att.pid is not None else inc.pid
        inc.user = att.user or inc.user
        inc.cmdline = att.cmdline or inc.cmdline
        inc.unit = att.unit or inc.unit
        inc.container = att.container or inc.container
        inc.attribution_failure = att.failure if inc.pid is None else None
        inc.ppid = att.ppid if att.pid is not None else inc.ppid
        inc.parent = att.parent_exe if att.pid is not None else inc.parent
        inc.names = event.names or inc.names
        inc.feed = event.feed or inc.feed
        inc.action = pkt.action or inc.action
        self._merge(inc, event.classifications)
        return Update(inc, new, self._may_alert(inc, now, new))

    def _merge(self, inc: Incident, found: list[Classification]) -> None:
        known = {c.signature for c in inc.classifications}
        inc.classifications.extend(c for c in found if c.signature not in known)
        inc.classifications.sort(key=lambda c: -severity_rank(c.severity))
        if inc.classifications and severity_rank(inc.classifications[0].severity) > severity_rank(
                inc.severity):
            best = inc.classifications[0]
            inc.signature, inc.title, inc.severity = best.signature, best.title, best.severity

    def _may_alert(self, inc: Incident, now: datetime, new: bool) -> bool:
        rank = severity_rank(inc.severity)
        if self.min_alert is None or rank < severity_rank(self.min_alert):
            return False  # no sink would send it: nothing to budget, nothing lost
        last = self._last_alert.get(inc.id)
        risen = rank > self._alerted_rank.get(inc.id, -1)
        if not new and last is not None and not risen and now - last < self.realert:
            return False
        sent = self._sent.setdefault(inc.severity, deque())
        while sent and now - sent[0] >= timedelta(minutes=1):
            sent.popleft()
        if len(sent) >= self.burst:
            self.suppressed[inc.severity] += 1
            return False
        sent.append(now)
        self._last_alert[inc.id] = now
        self._alerted_rank[inc.id] = rank
        inc.alerts += 1
        return True

    def expire(self, now: datetime) -> list[Incident]:
        """Forget incidents whose window has passed (they are complete in the store)."""
        gone = [k for k, inc in self.open.items() if now - inc.last_seen > self.window]
        out = [self.open.pop(k) for k in gone]
        self._named = {flow: k for flow, k in self._named.items() if k in self.open}
        for inc in out:
            self._last_alert.pop(inc.id, None)
            self._alerted_rank.pop(inc.id, None)
        return out
