"""The agent end to end with an in-memory source: packets in → one incident stored, alerts out."""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.request
from pathlib import Path

import pytest

from outguard.events import Attribution, BlockedPacket
from outguard.monitor.agent import MemorySource
from outguard.policy.alertconf import AlertSpec
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle, Running, run_agent
from outguard.store import Query, open_store
from tests.alerts.peers import receiver
from tests.monitor.events import packet

JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"


class FakeProcs:
    """An attributor over a fixed table (dport → process); others fail like a lost race."""

    def __init__(self) -> None:
        self.seen: list[BlockedPacket] = []

    def attribute(self, pkt: BlockedPacket) -> Attribution:
        self.seen.append(pkt)
        if pkt.dport == 1389:
            return Attribution(pid=777, exe=JAVA, cmdline=("java", "-jar", "app.jar"),
                               user="app", uid=1000)
        return Attribution(uid=pkt.uid, failure=f"tcp socket {pkt.src}:{pkt.sport} → "
                           f"{pkt.dst}:{pkt.dport} not found", failure_kind="no-socket")


def test_blocked_connects_become_one_incident_and_one_alert(tmp_path: Path) -> None:
    out = io.StringIO()
    source = MemorySource()
    procs = FakeProcs()
    got: list[Running] = []

    async def main(hook: str) -> None:
        opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, stdout=out,
                            alerts=[AlertSpec.model_validate({"stdout": "json"}),
                                    AlertSpec.model_validate({"webhook": hook})],
                            metrics_listen="127.0.0.1:0")
        stop = asyncio.Event()
        task = asyncio.create_task(run_agent(opts, stop, source=source, attributor=procs,
                                             started=got.append))
        # a SYN and its retries, in two batches, then one unattributed packet elsewhere
        source.push(packet("203.0.113.9", 1389, rule="deny:ldap", at=0),
                    packet("203.0.113.9", 1389, rule="deny:ldap", at=1))
        source.push(packet("203.0.113.9", 1389, rule="deny:ldap", at=3),
                    packet("198.51.100.7", 443, at=3))
        await asyncio.sleep(0.3)
        port = got[0].metrics_server.port  # type: ignore[union-attr]
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
        assert 'outguard_logged_drops_total{rule="deny:ldap"} 3.0' in text
        assert 'outguard_incidents_total{class="jndi-callback",severity="critical"} 1.0' in text
        assert 'outguard_attribution_failures_total{reason="no-socket"} 1.0' in text
        assert "outguard_nflog_received_total 4.0" in text
        # the agent's in-memory view of alerts is no sink of the policy
        assert 'sink="memory"' not in text
        assert 'outguard_alerts_total{outcome="sent",sink="stdout:json"} 2.0' in text
        stop.set()
        await task

    with receiver() as r:
        asyncio.run(main(r.url))
        posted = [json.loads(b) for b in r.bodies]
    store = open_store(tmp_path / "events.db")
    incidents = store.query(Query())
    assert len(incidents) == 2
    (jndi,) = store.query(Query(min_severity="critical"))
    assert (jndi.signature, jndi.count, jndi.pid, jndi.process) == ("jndi-callback", 3, 777, JAVA)
    assert jndi.dst == "203.0.113.9" and jndi.dport == 1389 and jndi.rule == "deny:ldap"
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [a["signature"] for a in lines if a["severity"] == "critical"] == ["jndi-callback"]
    assert len(lines) == 2  # one per incident: the retries are aggregated, not re-alerted
    assert {a["id"] for a in posted} == {i.id for i in incidents}
    assert len(procs.seen) == 4


def test_attribution_failure_labels_are_bounded(tmp_path: Path) -> None:
    """Trial run: the failure reason label held the socket's addresses and ephemeral ports, one
    time series per blocked connect."""
    source = MemorySource()
    opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, alerts=[])
    with AgentHandle(opts, source=source, attributor=FakeProcs()) as agent:
        agent.call_soon(lambda: source.push(*(packet("198.51.100.7", 1000 + i, at=i * 0.01)
                                              for i in range(300))))
        agent.wait_for_incidents(300, timeout=5.0)
        metrics = agent.running.metrics
        reasons = {s.labels["reason"] for m in metrics.attribution_failures.collect()
                   for s in m.samples}
        assert reasons == {"no-socket"}
        assert metrics.value("outguard_attribution_failures_total", reason="no-socket") == 300


def test_the_agent_reports_its_counts_for_status(tmp_path: Path) -> None:
    from outguard import agentstate

    source = MemorySource()
    opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, alerts=[])
    with AgentHandle(opts, source=source, attributor=FakeProcs()) as agent:
        agent.call_soon(lambda: source.push(packet("203.0.113.9", 1389, rule="default")))
        agent.wait_for_incidents(1, timeout=1.0)
    report = agentstate.read(tmp_path)
    assert report is not None
    assert (report["received"], report["incidents"], report["stopped"]) == (1, 1, True)
    lines = agentstate.status_lines({}, report)
    assert lines[0].startswith("monitor: stopped")


def test_a_store_that_cannot_be_opened_is_alerted_and_counted(tmp_path: Path) -> None:
    """Hostile tester: a read-only or damaged state directory lost incidents in silence. The
    agent runs on (its resolver and alerts matter more), says so, counts what it loses, and
    writes again once the store can be opened."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    source = MemorySource()
    opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, alerts=[],
                        store=blocker / "events.db")
    with AgentHandle(opts, source=source, attributor=FakeProcs()) as agent:
        agent.call_soon(lambda: source.push(packet("203.0.113.9", 1389, rule="default")))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not {"store-failed", "jndi-callback"} <= {
                a.get("signature") for a in agent.alerts}:
            time.sleep(0.05)
        titles = [a["title"] for a in agent.alerts if a.get("signature") == "store-failed"]
        assert titles and "incidents are not being stored" in titles[0]
        assert "jndi-callback" in {a.get("signature") for a in agent.alerts}  # still alerted
        metrics = agent.running.metrics
        assert metrics.value("outguard_store_errors_total") >= 1
        # the state directory comes back: the waiting incident is written
        blocker.unlink()
        blocker.mkdir()
        agent.running.writer.flush()
        assert [i.signature for i in agent.running.store.query(Query())] == ["jndi-callback"]
    assert (blocker / "events.db").exists()


def test_handle_runs_on_a_thread_and_answers_queries(tmp_path: Path) -> None:
    source = MemorySource()
    opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, alerts=[])
    with AgentHandle(opts, source=source, attributor=FakeProcs()) as agent:
        assert agent.incidents() == []
        agent.call_soon(lambda: source.push(packet("203.0.113.9", 1389, rule="default")))
        found = agent.wait_for_incidents(1, timeout=1.0, query=Query(min_severity="critical"))
        assert [(i.signature, i.pid) for i in found] == [("jndi-callback", 777)]
        assert [a["signature"] for a in agent.alerts] == ["jndi-callback"]
    # stopped and flushed: the file has it
    assert len(open_store(tmp_path / "events.db").query(Query())) == 1


def test_source_failure_still_flushes_and_is_raised(tmp_path: Path) -> None:
    class Broken:
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield [packet("203.0.113.9", 1389)]
            raise OSError("netlink went away")

    opts = AgentOptions(policy=None, state_dir=tmp_path, apply=False, alerts=[])
    with pytest.raises(OSError, match="netlink went away"):
        asyncio.run(run_agent(opts, asyncio.Event(), source=Broken(), attributor=FakeProcs()))
    assert len(open_store(tmp_path / "events.db").query(Query())) == 1


def test_apply_without_policy_is_refused(tmp_path: Path) -> None:
    from outguard.errors import OutguardError

    with pytest.raises(OutguardError, match="nothing to apply"):
        asyncio.run(run_agent(AgentOptions(policy=None, state_dir=tmp_path), asyncio.Event(),
                              source=MemorySource(), attributor=FakeProcs()))
