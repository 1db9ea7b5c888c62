"""Issue 20's agent side, end to end: ten hosts, each its own network namespace running the real
`outguard run --fleet`, against w20a's real `outguard fleet serve` and a real PostgreSQL in a
server namespace (tests/fleet/agentlab.py).

One scenario, in order (each step needs the state the one before left):
1. every agent enrols with its token and follows the fleet; a push reaches every host, which
   applies and verifies it and reports `applied` from under it;
2. a burst of blocked packets on every host while the server, and then its database, are away
   for 10 s each (one agent is SIGKILLed and restarted meanwhile): every incident arrives
   exactly once; one host's outbox has a small bound, which drops (counted) what it cannot
   hold, and its books balance;
3. the fleet's lockdown reaches a host (keeping the rule to the server) and is lifted again;
4. a version that cuts a host off its server is rolled back by the host itself and reported
   `rolled_back` once it is back; one whose verify fails is rolled back and reported
   `verify_failed` with the probe that differed;
5. an agent that starts while the server is away applies its last policy (its kernel table was
   deleted meanwhile) and alerts locally; its incidents of that time arrive when the server is
   back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from outguard.kernel import netns as ns
from tests.fleet.agentlab import BLOCKED_NET, URL, AgentLab, Host, policy_text
from tests.fleet.pgserver import available
from tests.kernel.conftest import kernel_skip_reason

pytestmark = pytest.mark.kernel
HOSTS = int(os.environ.get("OG_FLEET_HOSTS", "10"))
BOUND = 25  # the last host's outbox bound
OUTAGE_S = 10.0


@pytest.fixture(scope="module")
def lab() -> Iterator[AgentLab]:
    if reason := kernel_skip_reason():
        pytest.skip(reason)
    if why := available():
        pytest.fail(why)  # as tests/fleet/conftest.py: a missing PostgreSQL fails, never skips
    built = AgentLab(HOSTS).build()
    try:
        yield built
    finally:
        built.close()


def _server_rows(lab: AgentLab, h: Host) -> list[tuple[str, dict[str, object]]]:
    got = lab.sql("SELECT i.id, i.record FROM incidents i JOIN hosts h ON h.id = i.host_id"
                  " WHERE h.name = %s", h.name)
    return [(row[0], row[1]) for row in got]


def _burst_all(lab: AgentLab, first: int, count: int) -> None:
    for h in lab.hosts:
        lab.burst(h, first, count)


def _until(t0: float, seconds: float) -> None:
    time.sleep(max(0.0, t0 + seconds - time.monotonic()))


def _table_policy(h: Host) -> str | None:
    path = h.state / "applied" / "policy.yaml"
    return path.read_text() if path.exists() else None


def test_a_fleet_of_agents(lab: AgentLab) -> None:
    p0 = lab.root / "p0.yaml"
    p0.write_text(policy_text("p0"))
    for h in lab.hosts:
        extra = ("--fleet-outbox-bound", str(BOUND)) if h is lab.hosts[-1] else ()
        lab.start_agent(h, p0, "--fleet-confirm-timeout", "10", *extra)
    lab.wait("every host enrolled", lambda: lab.sql("SELECT count(*) FROM hosts")[0][0]
             == HOSTS, 90)
    lab.wait("every agent asked for its policy", lambda: all(
        (h.state / "fleet" / "follow.json").exists() for h in lab.hosts), 60)

    # 1. a push reaches every host
    p1 = lab.root / "p1.yaml"
    p1.write_text(policy_text("p1"))
    lab.fleet_cli("push", str(p1), "--to", "h*", "--canary", "0", "--waves", "100%",
                  "--soak", "0")
    lab.wait("version 1 applied everywhere", lambda: all(
        h.follow().get("version") == 1 for h in lab.hosts), 60)
    results = lab.sql("SELECT result, count(*) FROM rollout_hosts WHERE rollout_id = 1"
                      " GROUP BY result")
    assert results == [("applied", HOSTS)], results
    assert all("; verified (" in h.follow()["detail"] for h in lab.hosts)

    # 2. bursts while the server and then the database are away
    _burst_all(lab, 0, 10)
    lab.wait("the first burst sent", lambda: all(
        h.outbox_books()["incidents"]["sent"] >= 10 for h in lab.hosts), 30)
    t0 = time.monotonic()
    lab.stop_server()
    _burst_all(lab, 10, 30)
    # one agent is killed (SIGKILL) with its burst waiting in the outbox, and started again
    h4 = lab.hosts[4 % HOSTS]
    lab.wait("h04's burst in its outbox", lambda: h4.outbox_books()["incidents"]["pending"]
             >= 30, 20)
    assert h4.proc is not None
    h4.proc.kill()
    h4.proc.wait()
    h4.proc = None
    mark = h4.log.stat().st_size
    lab.start_agent(h4, None, "--fleet-confirm-timeout", "10")
    lab.wait("h04 monitoring again", lambda: b"outguard: monitoring" in
             h4.log.read_bytes()[mark:], 30)
    _until(t0, OUTAGE_S)
    lab.start_server()
    t0 = time.monotonic()
    lab.stop_db()
    _burst_all(lab, 40, 15)
    _until(t0, OUTAGE_S)
    lab.start_db()
    _burst_all(lab, 55, 5)
    lab.wait("every outbox drained", lambda: all(
        h.outbox_books()["incidents"]["pending"] == 0 and
        len(h.local_incident_ids()) >= 60 for h in lab.hosts), 120, 0.5)
    dupes = lab.sql("SELECT host_id, id, count(*) FROM incidents GROUP BY host_id, id"
                    " HAVING count(*) > 1")
    assert dupes == []
    for h in lab.hosts:
        books = h.outbox_books()["incidents"]
        assert books["balanced"], (h.name, books)
        local = h.local_incident_ids()
        rows = _server_rows(lab, h)
        server = {i for i, _r in rows}
        assert server <= local, h.name
        assert len(local) - len(server) == books["dropped"], (h.name, books)
        burst = {(r["dst"], r["dport"]) for _i, r in rows
                 if str(r["dst"]).startswith(BLOCKED_NET)}
        if h is lab.hosts[-1]:
            # 30 waited while the server was away: 5 over the bound at least
            assert books["dropped"] >= 5, books
            assert books["enqueued"] == books["sent"] + books["dropped"]
        else:
            assert books["dropped"] == 0 and server == local, h.name
            assert burst == {(f"{BLOCKED_NET}{1 + k}", 9000) for k in range(60)}, h.name

    h9 = lab.hosts[-1]
    shown = subprocess.run([sys.executable, "-m", "outguard", "status", "--netns", h9.netns,
                            "--state-dir", str(h9.state)], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    b9 = h9.outbox_books()["incidents"]
    assert f"enrolled with {URL} as {h9.name}" in shown, shown
    assert (f"outbox incidents: {b9['enqueued']} enqueued = {b9['sent']} sent + 0 pending +"
            f" {b9['dropped']} dropped (full) + 0 rejected  <-- DROPPED") in shown, shown

    # ... and the flows they learned (`learn: true`), each once, as the local store has them
    for h in lab.hosts:
        lab.wait(f"{h.name}'s flows sent", lambda h=h: h.outbox_books()["flows"]["pending"] == 0
                 and h.outbox_books()["flows"]["enqueued"] > 0, 30)
        server_flows = lab.sql("SELECT count(*), count(DISTINCT f.id) FROM flows f JOIN hosts h"
                               " ON h.id = f.host_id WHERE h.name = %s", h.name)[0]
        books = h.outbox_books()["flows"]
        assert books["balanced"] and server_flows == (books["sent"], books["sent"]), \
            (h.name, books, server_flows)
        assert server_flows[0] == h.local_flow_count() - books["dropped"], h.name

    # 3. the fleet's lockdown, kept to the server, and lifted
    h1 = lab.hosts[1]
    lab.fleet_cli("lockdown", "--to", h1.name, "--for", "120s")
    lab.wait("lockdown on h01", lambda: h1.follow().get("lockdown_until"), 30, host=h1)
    lockdown = json.loads((h1.state / "lockdown.json").read_text())
    assert lockdown["keep"] == ["fleet-server"], lockdown
    lab.fleet_cli("lockdown", "--to", h1.name, "--lift")
    lab.wait("lockdown lifted on h01", lambda: h1.follow().get("lockdown_until") is None, 30, host=h1)
    assert not (h1.state / "lockdown.json").exists()

    # 4. a version that cuts the host off its server: rolled back by the host
    h2 = lab.hosts[2]
    lab.wait("rollout 1 done", lambda: lab.sql("SELECT state FROM rollouts WHERE id = 1")
             == [("done",)], 30)
    cut = lab.root / "cut.yaml"
    cut.write_text(policy_text("cut").replace(f"ports: [{8080}]", "ports: [9]"))
    lab.fleet_cli("push", str(cut), "--to", h2.name, "--canary", "0", "--waves", "100%",
                  "--soak", "0")
    lab.wait("h02 rolled back", lambda: h2.follow().get("result") == "rolled_back", 90,
             host=h2)
    assert h2.follow()["version"] == 1
    assert _table_policy(h2) == p1.read_text()
    lab.wait("rolled_back reported", lambda: lab.sql(
        "SELECT result FROM rollout_hosts WHERE rollout_id = 2") == [("rolled_back",)], 60)

    # 4b. a version whose verify fails (an allowed destination nothing answers): rolled back
    h3 = lab.hosts[3 % HOSTS]
    lab.fleet_cli("rollout", "abort")  # the halted rollout 2 (a push waits for it)
    bad = lab.root / "unverifiable.yaml"
    bad.write_text(policy_text("unverifiable", extra_allow=(
        "  - name: nobody-answers\n    to: [192.0.2.99]\n    ports: [443]\n    proto: tcp\n")))
    lab.fleet_cli("push", str(bad), "--to", h3.name, "--canary", "0", "--waves", "100%",
                  "--soak", "0")
    lab.wait("h03's verify failed", lambda: h3.follow().get("result") == "verify_failed", 60, host=h3)
    assert h3.follow()["version"] == 1 and "nobody-answers" in h3.follow()["detail"]
    assert _table_policy(h3) == p1.read_text()
    lab.wait("verify_failed reported", lambda: lab.sql(
        "SELECT result FROM rollout_hosts WHERE rollout_id = 3") == [("verify_failed",)], 60)

    # 5. a start while the server is away: the last policy, a local alert
    h0 = lab.hosts[0]
    lab.stop_server()
    assert lab.stop_agent(h0) == 0
    subprocess.run(ns.exec_argv(h0.netns, ["nft", "delete", "table", "inet", "outguard"]),
                   check=True)
    log_size = h0.log.stat().st_size
    lab.start_agent(h0, None, "--fleet-confirm-timeout", "10")
    lab.wait("h00's table back", lambda: subprocess.run(
        ns.exec_argv(h0.netns, ["nft", "list", "table", "inet", "outguard"]),
        capture_output=True, check=False).returncode == 0, 60)
    assert _table_policy(h0) == p1.read_text()  # the last policy, from the state dir

    def alerted() -> bool:
        text = h0.log.read_bytes()[log_size:].decode(errors="replace")
        return any(json.loads(line).get("signature") == "fleet-unreachable"
                   for line in text.splitlines() if line.startswith("{"))
    lab.wait("the local alert", alerted, 30)
    lab.burst(h0, 100, 5)
    lab.wait("h00's incidents while away", lambda: h0.outbox_books()["incidents"]["pending"]
             >= 5, 20)
    lab.start_server()
    lab.wait("h00's incidents arrive", lambda: h0.outbox_books()["incidents"]["pending"] == 0,
             60)
    assert {i for i, _r in _server_rows(lab, h0)} == h0.local_incident_ids()
