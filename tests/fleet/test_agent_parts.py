"""The agent's small parts without a kernel: `run --fleet`'s start (which policy, enrolment
demanded), `outguard status`'s fleet lines, the Prometheus families, the blocked rate, and the
store tee (incidents and learned flows queued beside the local store; an outbox that cannot be
written is a store error, retried)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest

from outguard.cli.fleetrun import fleet_setup
from outguard.events import Incident, LearnedFlow
from outguard.fleet import follow as fl
from outguard.fleet import status
from outguard.fleet.agent import FOLLOW, OUTBOX, FleetAgent, FleetOptions
from outguard.fleet.client import Credential, save_credential
from outguard.fleet.outbox import Outbox
from outguard.fleet.status import families
from outguard.fleet.tee import Teed, flow_id
from outguard.monitor.metrics import Metrics
from outguard.store import Query
from outguard.store.base import StoreError
from outguard.store.sqlite import SQLiteStore

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def kw(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"fleet_url": "https://fleet.example:8443", "enroll_token": None,
                               "fleet_ca": None, "fleet_host": None,
                               "fleet_confirm_timeout": 30.0, "fleet_no_verify": False,
                               "fleet_outbox_bound": None}
    return {**base, **over}


def test_run_without_fleet_needs_a_policy_or_no_apply(tmp_path: Path) -> None:
    with pytest.raises(click.UsageError, match="give the POLICY"):
        fleet_setup(kw(fleet_url=None), None, False, None, tmp_path)
    with pytest.raises(click.UsageError, match="go with --fleet"):
        fleet_setup(kw(fleet_url=None, enroll_token="t"), Path("p.yaml"), False, None, tmp_path)
    assert fleet_setup(kw(fleet_url=None), None, True, None, tmp_path) == (None, None, False)


def test_first_start_needs_a_token_then_the_given_policy_is_the_first(tmp_path: Path) -> None:
    with pytest.raises(click.UsageError, match="--enroll TOKEN"):
        fleet_setup(kw(), None, False, None, tmp_path)
    given = tmp_path / "given.yaml"
    given.write_text("version: 1\n")
    opts, policy, apply = fleet_setup(kw(enroll_token="tok", fleet_outbox_bound=7), given, False,
                                      "og-x", tmp_path / "state")
    assert policy == tmp_path / "state" / "fleet" / "policy.yaml" and apply
    assert policy.read_text() == "version: 1\n" and (policy.stat().st_mode & 0o777) == 0o600
    assert (opts.enroll, opts.outbox_bound, opts.host.endswith("-og-x")) == ("tok", 7, True)


def test_later_start_applies_the_last_good_policy_not_the_given_one(tmp_path: Path) -> None:
    save_credential(tmp_path, Credential("https://fleet.example:8443", "h", 1, "c"))
    good = tmp_path / "fleet" / "policy.yaml"
    good.write_text("# the fleet's\n")
    given = tmp_path / "given.yaml"
    given.write_text("# typed\n")
    opts, policy, apply = fleet_setup(kw(enroll_token="ignored"), given, False, None, tmp_path)
    assert (policy, apply, opts.enroll) == (good, True, None)
    assert good.read_text() == "# the fleet's\n"
    good.unlink()  # enrolled, nothing received yet and no POLICY: serve what is applied
    assert fleet_setup(kw(), None, False, None, tmp_path)[1:] == (None, False)


def test_status_lines_and_families(tmp_path: Path) -> None:
    assert status.read(tmp_path) is None and status.lines(None) == []
    save_credential(tmp_path, Credential("https://fleet.example:8443", "web-1", 4, "c"))
    box = Outbox(tmp_path / OUTBOX, bound=2)
    box.put("incidents", [("a", 1.0, {}), ("b", 2.0, {}), ("c", 3.0, {})])
    box.ack("incidents", [box.take("incidents", 1)[0].seq])
    (tmp_path / FOLLOW).write_text(fl.dump(fl.Follow(version=3, tried=4, result="verify_failed",
                                                     reported=False)))
    text = "\n".join(status.lines(status.read(tmp_path)))
    assert "enrolled with https://fleet.example:8443 as web-1 (host id 4)" in text
    assert "in force: 3; last tried 4: verify_failed (not reported yet)" in text
    assert "incidents: 3 enqueued = 1 sent + 1 pending + 1 dropped (full) + 0 rejected" in text
    assert "<-- DROPPED" in text and "DO NOT BALANCE" not in text and "lockdown" not in text
    # a fleet lockdown in force is shown as a time; one the kernel has ended, not at all (a
    # trial saw `fleet lockdown until 1796324440` minutes after it had lifted)
    import time as _time

    for until, shown in ((_time.time() + 600, True), (_time.time() - 5, False)):
        (tmp_path / FOLLOW).write_text(fl.dump(fl.Follow(version=3, tried=4, result="applied",
                                                         reported=True, lockdown_until=until)))
        text = "\n".join(status.lines(status.read(tmp_path)))
        assert ("fleet lockdown until 20" in text) == shown, text
    agent = FleetAgent(FleetOptions(url="https://fleet.example:8443"), tmp_path, box,
                       publish=lambda _a: None)
    metrics = Metrics()
    metrics.watch(families(agent))
    assert metrics.value("outguard_fleet_outbox_enqueued_total", kind="incidents") == 3
    assert metrics.value("outguard_fleet_outbox_dropped_total", kind="incidents") == 1
    assert metrics.value("outguard_fleet_outbox_pending", kind="incidents") == 1
    assert metrics.value("outguard_fleet_policy_version") == 3
    assert metrics.value("outguard_fleet_server_reachable") == 0


def test_blocked_rate_over_the_last_minute(tmp_path: Path) -> None:
    count = [0]
    agent = FleetAgent(FleetOptions(url="http://x"), tmp_path, Outbox(tmp_path / "o.db"),
                       publish=lambda _a: None, blocked=lambda: count[0])
    assert agent.blocked_rate(now=0.0) == 0.0
    count[0] = 300
    assert agent.blocked_rate(now=30.0) == 10.0
    count[0] = 330
    assert agent.blocked_rate(now=90.0) == pytest.approx(0.5)  # the sample at 0 is gone


def incident(n: int, count: int = 1) -> Incident:
    return Incident(id=f"inc{n}", process="/usr/bin/curl", dst="203.0.113.9", dport=443,
                    rule="default", proto="tcp", signature="none", title="blocked",
                    severity="low", first_seen=T0, last_seen=T0, count=count)


def test_tee_queues_incidents_and_flows_beside_the_store(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    store = Teed(SQLiteStore(tmp_path / "events.db"), box)
    store.write([incident(1), incident(2)])
    store.write([incident(1, count=5)])  # an update while waiting: the newer copy goes
    flow = LearnedFlow(exe="/usr/bin/apt", cmdline=(), user="root", uid=0, unit=None,
                       cgroup=None, container=None, dst="203.0.113.5", port=80, proto="tcp",
                       names=("deb.example",), count=1, first_seen=T0, last_seen=T0)
    store.record_flows([flow])
    store.record_flows([dataclasses.replace(flow, count=4)])
    assert {i.id for i in store.query(Query())} == {"inc1", "inc2"}
    got = box.take("incidents", 10)
    # the updated one goes to the back (a new seq, so an older copy's ack cannot settle it)
    assert [(i.id, i.record["count"], i.ts) for i in got] == [("inc2", 1, T0.timestamp()),
                                                             ("inc1", 5, T0.timestamp())]
    flows = box.take("flows", 10)
    # a flow's record is the delta of a flush: the first one stays (the flow as first learned)
    assert [f.id for f in flows] == [flow_id(flow)] and flows[0].record["count"] == 1
    assert store.flows()[0].count == 5  # the running count is the local store's
    assert store.flows() and store.rules() == ["default"]  # the rest of the store: the inner's
    box.close()
    with pytest.raises(StoreError, match="fleet outbox"):
        store.write([incident(3)])  # kept by the writer and tried again
