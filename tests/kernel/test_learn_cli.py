"""`outguard learn` and `outguard flows` through the real CLI, in a namespace: learning without
a policy blocks nothing and leaves no table behind; it never replaces a table in place."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from outguard.events import LearnedFlow
from tests.kernel.topology import Probe, Topology

pytestmark = pytest.mark.kernel

ADDR4, ADDR6 = "203.0.113.40", "2001:db8::40"


def start_learn(topo: Topology, *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "outguard", "learn", *args, "--netns", topo.server,
            "--state-dir", str(topo.state_dir)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("outguard: learning"):
            return proc
    raise AssertionError(f"outguard learn did not start: {proc.communicate()}")


def test_learning_without_a_policy_blocks_nothing_and_removes_its_table(
        topology: Topology) -> None:
    topology.add_addresses(ADDR4, ADDR6)
    proc = start_learn(topology, "--for", "4s")
    assert ("inet", "outguard") in topology.tables()
    probes = [Probe(ADDR4, 80), Probe(ADDR6, 80), Probe(ADDR4, 123, "udp"),
              Probe(ADDR6, 123, "udp"), Probe(ADDR4, 8443, uid=65534)]
    assert topology.probe(probes) == ["refused"] * 5  # every one reached the peer
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "books balance" in err and " 0 lost" in err, err
    assert ("inet", "outguard") not in topology.tables()  # egress as it was: no table
    got = topology.cli("flows", "--json")
    assert got.returncode == 0, got.stderr
    flows = [LearnedFlow.from_json(json.loads(line)) for line in got.stdout.splitlines()]
    seen = {(f.dst, f.port, f.proto, f.uid) for f in flows}
    assert seen == {(ADDR4, 80, "tcp", 0), (ADDR6, 80, "tcp", 0), (ADDR4, 123, "udp", 0),
                    (ADDR6, 123, "udp", 0), (ADDR4, 8443, "tcp", 65534)}
    assert {f.decision for f in flows} == {""}  # no policy: nothing decided


def test_learning_without_a_policy_never_replaces_a_table_in_place(topology: Topology) -> None:
    topology.apply("version: 1\nallow:\n  - {name: web, to: [203.0.113.40], ports: [80]}\n")
    before = topology.ruleset()
    got = topology.cli("learn", "--for", "2s")
    assert got.returncode != 0
    assert "an outguard table is in place" in got.stderr and "Traceback" not in got.stderr
    assert topology.ruleset() == before
    assert topology.probe([Probe("203.0.113.41", 80)]) == ["timeout"]  # still enforced


def test_learn_under_a_policy_that_does_not_load_changes_nothing(topology: Topology) -> None:
    policy = topology.write_policy("version: 1\nallow:\n  - {name: web, to: [nope!]}\n")
    got = topology.cli("learn", str(policy), "--for", "2s")
    assert got.returncode != 0 and "Traceback" not in got.stderr
    assert "allow[0].to[0]" in got.stderr or "nope" in got.stderr, got.stderr
    assert ("inet", "outguard") not in topology.tables()


def test_a_second_learning_session_balances_its_own_books(topology: Topology) -> None:
    """The kernel's counter lives as long as the table: a second `learn` under the same policy
    must count from its own start (it once compared the whole life's count with its own)."""
    topology.add_addresses(ADDR4)
    policy = topology.write_policy("version: 1\nallow:\n  - {name: all}\n")
    for round_ in range(2):
        proc = start_learn(topology, str(policy), "--for", "3s")
        assert topology.probe([Probe(ADDR4, 80 + round_)]) == ["refused"]
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "learned 1 new flow(s)" in err and "the kernel counted 1 new connection(s)" \
            in err, err


def test_run_with_learn_true_learns_beside_enforcing(topology: Topology) -> None:
    topology.add_addresses(ADDR4)
    policy = topology.write_policy(
        "version: 1\nlearn: true\nallow:\n  - {name: web, to: [203.0.113.40], ports: [80]}\n")
    argv = [sys.executable, "-m", "outguard", "run", str(policy), "--netns", topology.server,
            "--state-dir", str(topology.state_dir)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("outguard: monitoring"):
            break
    assert topology.probe([Probe(ADDR4, 80), Probe(ADDR4, 81)]) == ["refused", "timeout"]
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "books balance" in err, err
    got = topology.cli("flows", "--json")
    decisions = {(f["port"], f["decision"]) for f in map(json.loads, got.stdout.splitlines())}
    assert {(80, "allow:web"), (81, "default")} <= decisions
