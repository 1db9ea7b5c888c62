"""Blocked DNS queries as monitor incidents: the resolver's events in the agent's store.

Place in the data flow: `dns.resolver` → `EventSink` → here → the monitor's `Aggregator` →
store writer and alert dispatcher (the same path blocked packets take in `monitor.agent`). Only
queries that were refused (or would be, in audit mode) become incidents; everything still goes
to the JSON lines of `dns.events` too, which `outguard dns log` reads. Queries that were
answered but look like DNS tunnelling ("suspicious") become incidents too.

A query is recorded as a flow to the *name*: `dst` is the name asked for, `dport` 53,
`proto` "dns", rule `dns:<rule>`, so `outguard events` / `top` show "java → evil.example.test"
next to the packet drops, and the aggregator folds a client's retries into one incident.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from outguard.alerts.format import alert_json
from outguard.dns.events import DnsEvent, EventSink
from outguard.events import Attribution, BlockedPacket, Classification, Event, render_prefix
from outguard.monitor.aggregate import Aggregator, Update

# the signatures `dns.client.classify` and the tunnel detector attach, and the fallbacks
_SEVERITY = {"java-unknown-name": "critical", "dns-tunneling": "high"}
_BY_ACTION = {
    "blocklisted": Classification("dns-blocklisted", "query for a blocklisted name", "high"),
    "blocked": Classification("dns-blocked", "query for a name no rule allows", "medium"),
    "audit": Classification("dns-blocked", "query for a name no rule allows (audit)", "low"),
}


def _destination(e: DnsEvent) -> str:
    """What the incident is about: the name; for tunnelling the zone, so that a tunnel's
    endless distinct names are one incident with a count, not one each."""
    if e.action == "suspicious":
        return f"*.{e.zone}" if e.zone else e.qname
    if any(c.startswith("dns-tunneling") for c in e.classifications):
        labels = e.qname.split(".")
        return "*." + ".".join(labels[-2:]) if len(labels) > 2 else e.qname
    return e.qname


@lru_cache(maxsize=1024)
def user_name(uid: int | None) -> str | None:
    """The user name of `uid` (None when unknown here), as packet incidents carry it."""
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def event_of(e: DnsEvent) -> Event | None:
    """The monitor's event for a blocked or suspicious query; None for an answered one.

    A suspicious query (DNS tunnelling under an allowed wildcard) was answered: its incident
    carries rule `dns:allow:<rule>` and the classification, and says so in its title."""
    if not e.blocked and e.action != "suspicious":
        return None
    client, _slash, _tcp = e.client.partition("/")
    host, _colon, port = client.rpartition(":")
    host = host.strip("[]")
    # the action after a space, as in the kernel's prefixes: audit answers, enforce refuses
    verdict: Literal["accept", "drop"] = "accept" if e.action == "audit" else "drop"
    pkt = BlockedPacket(time=datetime.fromtimestamp(e.time, UTC),
                        prefix=render_prefix(f"dns:{e.rule}", verdict), family=6 if ":" in host else 4,
                        proto="dns", src=host, dst=_destination(e),
                        sport=int(port) if port.isdigit() else None, dport=53, uid=e.uid)
    att = Attribution(pid=e.pid, exe=e.exe, cmdline=tuple(e.cmdline), uid=e.uid,
                      user=user_name(e.uid),
                      failure=None if e.pid is not None else "no process found for the query")
    found = []
    for text in e.classifications:
        sig, _sep, title = text.partition(":")
        if e.action == "suspicious":
            title = f"{title.strip()}; answered (the name is allowed)"
        found.append(Classification(sig, title.strip() or sig, _SEVERITY.get(sig, "medium")))
    if e.action in _BY_ACTION:
        found.append(_BY_ACTION[e.action])
    return Event(pkt, att, classifications=found)


class IncidentEvents:
    """An `EventSink`: every event to `inner`, blocked ones also to the aggregator, the store
    (`put`) and the alerts (`publish`). Called on the agent's event loop."""

    def __init__(self, inner: EventSink, aggregator: Aggregator,
                 put: Callable[[Any], None], publish: Callable[[dict[str, Any]], None],
                 host: str | None = None,
                 on_update: Callable[[Update], None] | None = None) -> None:
        self.inner, self.aggregator, self.put, self.publish = inner, aggregator, put, publish
        self.host, self.on_update = host, on_update

    def append(self, event: DnsEvent) -> None:
        self.inner.append(event)
        found = event_of(event)
        if found is None:
            return
        update = self.aggregator.add(found)
        self.put(update.incident)
        if update.alert:
            self.publish(alert_json(update.incident, repeat=not update.new, host=self.host))
        if self.on_update is not None:
            self.on_update(update)
