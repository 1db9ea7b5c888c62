"""The proxy's requests in the monitor: refusals as incidents, every decision counted.

Place in the data flow: `outguard proxy serve --agent` (the agent's child, `service.proxyrun`)
writes one JSON line per decided request → `ProxyRecords.handle` → a refusal becomes an
`Event` (the client's uid, process and unit as the proxy found them, or as the agent finds
them: the proxy, as its own user, sees only its own user's processes) → the agent's classifier
→ `Agent.record` (aggregate, store, alert: the path of a blocked packet); every decision is
counted per rule for the metrics (`outguard_proxy_requests_total{decision,rule}`) and for
`outguard status` (`report`).

A refusal is recorded as a flow to the *host the client asked for* (a name, or an address):
`dst` the host, `dport` its port, proto tcp, rule `proxy:<decision key>` (`proxy:default`,
`proxy:deny:bad`, `proxy:never-reach`), so `outguard events` shows "curl → evil.example:443"
beside the kernel's drops and the aggregator folds a client's retries into one incident.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from outguard.events import Attribution, BlockedPacket, Event, render_prefix
from outguard.monitor.classify import Classifier
from outguard.monitor.metrics import Families

log = logging.getLogger("outguard.monitor")


def _text(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) else None


def _int(doc: dict[str, Any], key: str) -> int | None:
    value = doc.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def incident_rule(rule: str) -> str:
    """The incident's rule: `proxy:` before the decision key, once."""
    return rule if rule.startswith("proxy:") else f"proxy:{rule}"


def event_of(doc: dict[str, Any], now: datetime | None = None) -> Event | None:
    """The monitor's event for a refused request (or, in audit mode, one let through that
    the rules refuse); None for an allowed one or a line that is no request."""
    if doc.get("decision") not in ("allowed", "refused") or _text(doc, "rule") is None:
        return None
    audit = bool(doc.get("audit"))
    if doc["decision"] == "allowed" and not audit:
        return None
    host = _text(doc, "host") or "?"
    client = _text(doc, "client") or ""
    uid = _int(doc, "uid")
    pkt = BlockedPacket(time=now or datetime.now(UTC),
                        prefix=render_prefix(incident_rule(str(doc["rule"])),
                                             "accept" if audit else "drop"),
                        family=6 if ":" in client else 4, proto="tcp", src=client, dst=host,
                        sport=None, dport=_int(doc, "port"), uid=uid)
    pid = _int(doc, "pid")
    att = Attribution(pid=pid, exe=_text(doc, "exe"), user=_text(doc, "user"), uid=uid,
                      unit=_text(doc, "unit"),
                      failure=None if pid is not None else "the proxy found no process")
    return Event(pkt, att, names=() if _is_address(host) else (host,))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ProxyRecords:
    """What the proxy child reported: counts per (decision, rule), whether it listens, the
    connections it has open; refusals to `record` (the agent's), classified with
    `classifier()`."""

    def __init__(self, record: Callable[[Event], None],
                 classifier: Callable[[], Classifier],
                 attribute: Callable[[BlockedPacket], Attribution | None] = lambda _p: None,
                 ) -> None:
        self.record, self.classifier, self.attribute = record, classifier, attribute
        self.counts: Counter[tuple[str, str]] = Counter()
        self.listening: list[str] = []
        self.transparent: list[int] = []
        self.connections = 0
        self.running = False

    def handle(self, doc: dict[str, Any]) -> None:
        """One line of the child's stdout, parsed."""
        if "listening" in doc:
            self.listening = [str(x) for x in doc["listening"]]
            self.transparent = [int(x) for x in doc.get("transparent") or []]
            self.running = True
            return
        if "connections" in doc:
            self.connections = _int(doc, "connections") or 0
            return
        decision, rule = doc.get("decision"), _text(doc, "rule")
        if decision not in ("allowed", "refused") or rule is None:
            return
        self.counts[str(decision), rule] += 1
        event = event_of(doc)
        if event is not None:
            event.attribution = self._process(doc, event.attribution)
            event.classifications = self.classifier().classify(event)
            self.record(event)

    def _process(self, doc: dict[str, Any], att: Attribution) -> Attribution:
        """The client's process, found by the agent (root: every /proc) when the proxy (its
        own user) could not: the client's socket to the proxy, while it is still open."""
        ends = doc.get("ends")
        if att.pid is not None or not isinstance(ends, list) or len(ends) != 4:
            return att
        try:
            src, sport, dst, dport = str(ends[0]), int(ends[1]), str(ends[2]), int(ends[3])
        except (TypeError, ValueError):
            return att
        found = self.attribute(BlockedPacket(
            time=datetime.now(UTC), prefix="proxy", family=6 if ":" in src else 4,
            proto="tcp", src=src, dst=dst, sport=sport, dport=dport, uid=att.uid))
        if found is None or found.pid is None:
            return att
        return found

    def stopped(self) -> None:
        self.running, self.connections = False, 0

    def report(self) -> dict[str, Any]:
        """The proxy's part of the agent's report (`outguard status`)."""
        by_decision: Counter[str] = Counter()
        for (decision, _rule), n in self.counts.items():
            by_decision[decision] += n
        return {"running": self.running, "listening": self.listening,
                "transparent": self.transparent, "connections": self.connections,
                "requests": dict(by_decision),
                "rules": {f"{d} {r}": n for (d, r), n in sorted(self.counts.items())}}

    def families(self) -> Families:
        def families() -> Iterator[Metric]:
            requests = CounterMetricFamily("outguard_proxy_requests", "Proxy requests decided,"
                                           " by decision and rule", labels=["decision", "rule"])
            for (decision, rule), count in dict(self.counts).items():
                requests.add_metric([decision, rule], count)
            yield requests
            yield GaugeMetricFamily("outguard_proxy_connections", "Proxy client connections"
                                    " open now", value=self.connections)
            yield GaugeMetricFamily("outguard_proxy_up", "1 while the proxy child listens",
                                    value=1 if self.running else 0)
        return families
