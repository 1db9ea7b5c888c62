"""The demo report's monitor check: what counts as the JNDI callback being caught (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outguard.events import Incident
from outguard.lab import report

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _incident(id_: str = "a", severity: str = "critical", pid: int | None = 4242,
              process: str = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java") -> Incident:
    return Incident(id=id_, process=process, dst="198.51.100.66", dport=1389,
                    rule="deny:attacker-net", proto="tcp", signature="jndi-callback",
                    title="possible JNDI callback (Log4Shell)", severity=severity,
                    first_seen=T0, last_seen=T0, pid=pid)


def _view(incidents: list[Incident], after: float = 0.2) -> report.MonitorView:
    return report.MonitorView(4242, incidents, {i.id: after for i in incidents},
                              [f'{{"id":"{i.id}"}}' for i in incidents])


def test_one_critical_incident_from_the_java_pid_in_time_is_ok() -> None:
    view = _view([_incident(), _incident("b", "medium", 99, "/usr/bin/curl")])
    assert view.ok
    text = "\n".join(report.monitor_lines(view))
    assert "✓ CRITICAL possible JNDI callback (Log4Shell) [jndi-callback]" in text
    assert "198.51.100.66:1389/tcp by deny:attacker-net" in text
    assert '{"id":"a"}' in text


@pytest.mark.parametrize(("incidents", "after"), [
    ([], 0.2),  # nothing caught
    ([_incident(), _incident("b")], 0.2),  # two critical incidents
    ([_incident(pid=1)], 0.2),  # another process
    ([_incident(pid=None)], 0.2),  # not attributed
    ([_incident(process="/usr/bin/curl")], 0.2),  # not java
    ([_incident()], 1.5),  # too late
])
def test_anything_else_is_not(incidents: list[Incident], after: float) -> None:
    assert not _view(incidents, after).ok


def test_ipv6_destinations_are_bracketed() -> None:
    other = _incident("b", "medium", 99, "/usr/bin/curl")
    other.dst, other.dport = "2001:db8:bad::66", 8080
    text = "\n".join(report.monitor_lines(_view([_incident(), other])))
    assert "[2001:db8:bad::66]:8080" in text
