"""The agent with the real NFLOG source and attributor, in a private namespace pair.

A blocked TCP connect from the server namespace must give exactly one incident in the store,
attributed to the process that connected (this test process), and one alert line; through the
in-process runner, and through the real `outguard run` CLI stopped with SIGTERM.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from outguard.alerts.format import text_line
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.store import Query
from tests.kernel.conftest import kernel_skip_reason, new_netns
from tests.kernel.topology import Probe, Topology, build

pytestmark = pytest.mark.kernel

ATTACKER = "203.0.113.9"
POLICY = f"""
version: 1
allow:
  - name: web
    to: [198.51.100.10]
    ports: [443]
deny:
  - name: ldap-out
    to: [{ATTACKER}]
    ports: [1389]
alerts:
  - stdout: json
"""


@pytest.fixture
def topo() -> Iterator[Topology]:
    if reason := kernel_skip_reason():
        pytest.skip(reason)
    with build(new_netns, addresses=[ATTACKER, "198.51.100.10"]) as t:
        yield t


def test_blocked_connect_is_one_attributed_incident(topo: Topology) -> None:
    out = io.StringIO()
    policy = topo.write_policy(POLICY)
    opts = AgentOptions(policy=policy, state_dir=topo.state_dir, netns=topo.server, stdout=out)
    with AgentHandle(opts) as agent:
        assert topo.probe([Probe(ATTACKER, 1389)]) == ["timeout"]  # dropped: one SYN
        found = agent.wait_for_incidents(1, timeout=2.0)
        time.sleep(0.3)
        found = agent.incidents()
        assert len(found) == 1
        (inc,) = found
        assert (inc.dst, inc.dport, inc.rule, inc.proto) == (ATTACKER, 1389, "deny:ldap-out", "tcp")
        assert inc.pid == os.getpid(), inc.attribution_failure
        assert inc.process == os.path.realpath(sys.executable) or inc.process.endswith(
            os.path.basename(os.path.realpath(sys.executable)))
        assert inc.severity == "medium"
        signatures = {c.signature for c in inc.classifications}
        assert "explicit-deny" in signatures
        # the policy has no `dns:`: no resolver saw the names, so "no DNS answer" is not claimed
        assert "raw-ip-no-dns" not in signatures
        # an allowed connect is not an incident
        assert topo.probe([Probe("198.51.100.10", 443)]) == ["refused"]
        time.sleep(0.3)
        assert len(agent.incidents()) == 1
        metrics = agent.running.metrics
        assert metrics.value("outguard_logged_drops_total", rule="deny:ldap-out") >= 1
        # the kernel's own count, read at scrape time: all of it was logged
        kernel = metrics.value("outguard_kernel_drops_total", rule="deny:ldap-out")
        assert kernel >= 1
        assert metrics.value("outguard_kernel_logged_total", rule="deny:ldap-out") == kernel
        assert metrics.value("outguard_not_logged_total", rule="deny:ldap-out") == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 1 and lines[0]["id"] == inc.id


def test_outguard_run_cli_until_sigterm(topo: Topology) -> None:
    policy = topo.write_policy(POLICY)
    argv = [sys.executable, "-m", "outguard", "run", str(policy), "--netns", topo.server,
            "--state-dir", str(topo.state_dir), "--metrics-listen", "127.0.0.1:0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (topo.state_dir / "events.db").exists() or not topo.status()["applied"]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.05)
        time.sleep(0.2)
        assert topo.probe([Probe(ATTACKER, 1389)]) == ["timeout"]
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "store flushed" in stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert len(lines) == 1 and lines[0]["dport"] == 1389 and lines[0]["rule"] == "deny:ldap-out"
    got = subprocess.run([sys.executable, "-m", "outguard", "events", "--json", "--state-dir",
                          str(topo.state_dir), "--rule", "deny:ldap-out"],
                         capture_output=True, text=True, timeout=30, check=True)
    (event,) = [json.loads(line) for line in got.stdout.splitlines()]
    assert event["id"] == lines[0]["id"] and event["process"]["pid"] is not None
    assert topo.status()["applied"]  # the policy stays applied after the agent stops
    _ = Query  # the store API the CLI used


def test_a_drop_by_a_feed_set_names_the_feed_and_its_category(topo: Topology) -> None:
    (topo.state_dir.parent / "bad.txt").write_text("# local intel\n203.0.113.77\n198.51.100.0/28\n")
    policy = topo.write_policy("""
version: 1
deny:
  - name: threat-intel
    to: ["@feed:local-bad"]
feeds:
  local-bad: {file: bad.txt, format: plain, category: botnet-c2}
""")
    topo.add_addresses("203.0.113.77")
    opts = AgentOptions(policy=policy, state_dir=topo.state_dir, netns=topo.server,
                        alerts=[])
    with AgentHandle(opts) as agent:
        assert topo.probe([Probe("203.0.113.77", 443)]) == ["timeout"]
        (inc,) = agent.wait_for_incidents(1, timeout=2.0)
        assert inc.rule == "deny:threat-intel"
        assert inc.feed == "local-bad (botnet-c2)"


@pytest.mark.parametrize(("mode", "action"), [("enforce", "rejected"),
                                              ("audit", "logged-only")])
def test_reject_and_audit_are_attributed_and_say_what_was_done(
        topo: Topology, mode: str, action: str) -> None:
    """Trial run: with `default_action: reject` the RST closed the socket before the lookup, so
    every incident said "no process behind it"; and audit-mode incidents said "blocked". Now a
    logged connect's first SYN is held back (the connect is refused ~1 s later), and every
    incident carries the action the kernel took."""
    out = io.StringIO()
    policy = topo.write_policy(POLICY.replace("version: 1\n", f"version: 1\nmode: {mode}\n")
                               + "options:\n  default_action: reject\n")
    opts = AgentOptions(policy=policy, state_dir=topo.state_dir, netns=topo.server, stdout=out)
    with AgentHandle(opts) as agent:
        t0 = time.monotonic()
        outcome = topo.probe([Probe(ATTACKER, 1389)], timeout=3.0)
        elapsed = time.monotonic() - t0
        agent.wait_for_incidents(1, timeout=2.0)
        time.sleep(0.5)
        # one incident: the reset retransmit is not logged again (it would be unattributed)
        (inc,) = agent.incidents()
    if mode == "enforce":  # a RST, after the retransmit of the held SYN
        assert outcome == ["refused"] and 0.8 < elapsed < 2.5
        assert inc.pid == os.getpid(), inc.attribution_failure
    else:  # audit: nothing is blocked; the test peer resets at once, the socket may be gone
        assert outcome == ["refused"] and elapsed < 0.8
        assert inc.uid == os.getuid()  # NFLOG's uid, always
    assert inc.action == action
    (alert,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert alert["action"] == action
    if action == "logged-only":
        assert "NOT blocked" in text_line(alert)


def test_a_connect_closed_at_once_is_attributed_to_its_user(topo: Topology) -> None:
    """A blocked connect closed before the lookup was "outbound packet with no process behind
    it", exe "uid:0": a process was there, and NFLOG gave its uid."""
    import socket

    def connect_and_close() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("198.51.100.10", 8080))  # no rule: the default drops it
        s.close()  # gone long before the agent reads the NFLOG message

    opts = AgentOptions(policy=topo.write_policy(POLICY), state_dir=topo.state_dir,
                        netns=topo.server, alerts=[])
    with AgentHandle(opts) as agent:
        topo.thread.call(connect_and_close)
        (inc,) = agent.wait_for_incidents(1, timeout=2.0)
    assert inc.pid is None, "attributed after all: the socket outlived the lookup"
    assert (inc.uid, inc.user) == (os.getuid(), "root")
    assert (inc.signature, inc.severity) == ("closed-early", "low")
    assert inc.title == f"socket closed before it could be looked up (uid {os.getuid()}, user root)"
