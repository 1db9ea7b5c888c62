"""Blocked DNS queries as monitor incidents (`monitor.dns_incidents`): aggregated, stored, alerted."""

from __future__ import annotations

from typing import Any

from outguard.dns.events import DnsEvent, MemoryEvents
from outguard.events import Incident
from outguard.monitor.aggregate import Aggregator
from outguard.monitor.dns_incidents import IncidentEvents, event_of


def _event(action: str = "blocked", t: float = 1700000000.0, **kw: Any) -> DnsEvent:
    base: dict[str, Any] = dict(time=t, client="127.0.0.1:40001", qname="evil.example.test",
                                qtype="A", action=action, rule="default", reason="no rule",
                                rcode="REFUSED")
    return DnsEvent(**{**base, **kw})


def test_a_blocked_java_query_is_a_critical_incident_to_the_name() -> None:
    ev = event_of(_event(pid=42, exe="/usr/bin/java", uid=1000, cmdline=["java"],
                         classifications=["java-unknown-name: a Java process resolving it"]))
    assert ev is not None
    p = ev.packet
    assert (p.dst, p.dport, p.proto, p.rule, p.src, p.sport) == (
        "evil.example.test", 53, "dns", "dns:default", "127.0.0.1", 40001)
    assert [(c.signature, c.severity) for c in ev.classifications] == [
        ("java-unknown-name", "critical"), ("dns-blocked", "medium")]
    assert ev.attribution.pid == 42 and ev.attribution.failure is None


def test_answered_queries_are_no_incidents_and_ipv6_tcp_clients_parse() -> None:
    assert event_of(_event(action="resolved", rcode="NOERROR")) is None
    ev = event_of(_event(action="blocklisted", client="[2001:db8::5]:5353/tcp"))
    assert ev is not None and (ev.packet.src, ev.packet.sport, ev.packet.family) == (
        "2001:db8::5", 5353, 6)
    assert ev.classifications[0].signature == "dns-blocklisted"
    assert ev.attribution.failure is not None  # no pid: said why


def test_sink_aggregates_retries_and_alerts_once() -> None:
    inner = MemoryEvents()
    stored: list[Incident] = []
    alerts: list[dict[str, Any]] = []
    sink = IncidentEvents(inner, Aggregator(), stored.append, alerts.append, host="h")
    for i in range(3):
        sink.append(_event(t=1700000000.0 + i, pid=42, exe="/usr/bin/curl"))
    sink.append(_event(action="resolved", qname="api.example.test", rcode="NOERROR"))
    assert len(inner.events) == 4  # everything still goes to the JSON lines
    assert len({i.id for i in stored}) == 1 and stored[-1].count == 3
    assert len(alerts) == 1 and alerts[0]["dst"] == "evil.example.test"
    assert alerts[0]["host"] == "h" and alerts[0]["rule"] == "dns:default"


def test_a_dns_incident_names_the_user_of_its_uid() -> None:
    """DNS incidents had `user: null` where packet incidents name the user."""
    ev = event_of(_event(pid=42, exe="/usr/bin/curl", uid=0, cmdline=["curl"]))
    assert ev is not None and (ev.attribution.uid, ev.attribution.user) == (0, "root")
    agg = Aggregator()
    inc = agg.add(ev).incident
    assert inc.to_json()["process"]["user"] == "root"
    ev = event_of(_event(uid=None))
    assert ev is not None and ev.attribution.user is None
