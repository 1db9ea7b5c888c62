"""`outguard lockdown` in the kernel: it blocks every new outbound connection but the kept rules,
leaves an open connection alone, lifts by itself with no outguard process running, survives an
apply of a new policy, and names itself in the log (the monitor's incidents).

Everything through the real CLI (`topo.cli`: a subprocess that exits), IPv4 and IPv6, TCP and
UDP, in the kernel fixtures' namespaces.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from outguard.kernel.netns import NetnsThread
from tests.kernel.topology import NflogReader, Probe, Topology

pytestmark = pytest.mark.kernel

WEB4, WEB6, API4, APP4 = "203.0.113.10", "2001:db8:10::10", "203.0.113.11", "203.0.113.12"
POLICY = f"""version: 1
allow:
  - name: web
    to: [{WEB4}, "{WEB6}"]
    ports: [443]
  - name: api
    to: [{API4}]
    ports: [443]
  - name: app
    to: [{APP4}]
    ports: [8080]
    proto: tcp
"""
WEB = [Probe(WEB4, 443), Probe(WEB6, 443), Probe(WEB4, 443, "udp"), Probe(WEB6, 443, "udp")]
API = [Probe(API4, 443), Probe(API4, 443, "udp")]


def _listener(addr: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(4)
    return s


def _connect(addr: str, port: int) -> socket.socket:
    return socket.create_connection((addr, port), timeout=3)


def _lockdown(topo: Topology, *args: str) -> dict[str, object]:
    proc = topo.cli("lockdown", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    got: dict[str, object] = json.loads(proc.stdout)
    return got


def test_lockdown_blocks_all_but_kept_rules_and_keeps_an_open_connection(
        topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4, WEB6, API4, APP4)
    topo.apply(POLICY)
    assert topo.passes(*WEB, *API) == [True] * 6
    peer = NetnsThread(topo.peer)
    try:
        listener = peer.call(_listener, APP4, 8080)
        client = topo.thread.call(_connect, APP4, 8080)  # opened before the lockdown
        server, _ = listener.accept()
        before = topo.counters(logged=True)
        reader = NflogReader(topo.server)
        try:
            _lockdown(topo, "--for", "10m", "--keep", "api")
            assert topo.passes(*WEB, *API) == [False] * 4 + [True] * 2
            records = reader.collect(until=1.0)
        finally:
            reader.close()
        after = topo.counters(logged=True)
        assert after["lockdown"] - before.get("lockdown", 0) >= 4
        assert after["allow.api"] > before["allow.api"]
        assert after["allow.web"] == before["allow.web"]
        # the log names the lockdown: the monitor's incident says what blocked it
        assert {r.prefix for r in records if r.dst in (WEB4, WEB6)} == {"og:lockdown"}
        # the connection opened before goes on both ways; a new one to the same place does not
        client.sendall(b"ping")
        assert server.recv(4) == b"ping"
        server.sendall(b"pong")
        assert client.recv(4) == b"pong"
        assert topo.passes(Probe(APP4, 8080)) == [False]
        status = topo.status_cli()
        assert status["lockdown"]["keep"] == ["api"] and status["lockdown"]["in_kernel"]
        # verify knows the lockdown: what it drops is expected, what it keeps must get out
        proc = topo.cli("verify", "--json", "--timeout", "1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outcomes = {(p["subject"], p["dst"]): (p["outcome"], p["blocked_by"])
                    for p in json.loads(proc.stdout)["probes"]}
        assert outcomes[("allow:web", WEB6)] == ("blocked by outguard", "lockdown")
        assert outcomes[("allow:api", API4)] == ("reached", None)
        assert status["problems"] == []

        _lockdown(topo, "--off")
        assert topo.passes(*WEB, *API, Probe(APP4, 8080)) == [True] * 7
        assert topo.status_cli()["lockdown"] is None
        for s in (client, server, listener):
            s.close()
    finally:
        peer.close()


def test_lockdown_without_a_policy_lifts_by_itself_with_no_outguard_running(
        topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4, WEB6)
    assert topo.passes(*WEB) == [True] * 4
    got = _lockdown(topo, "--for", "4s")
    until = got["lockdown"]["until"]  # type: ignore[index]
    assert got["policy"] is False
    # the command has exited: no outguard process runs from here on
    assert time.time() < until - 1, "the lockdown took too long to test this"
    assert topo.passes(*WEB) == [False] * 4
    time.sleep(max(0.0, until + 1 - time.time()))
    assert topo.passes(*WEB) == [True] * 4


def test_lockdown_survives_an_apply_and_then_lifts_by_itself(topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4, WEB6, API4)
    topo.apply(POLICY)
    got = _lockdown(topo, "--for", "8s", "--keep", "web")
    until = got["lockdown"]["until"]  # type: ignore[index]
    # a new policy (the api rule gone, a new rule) is applied during the lockdown
    newer = POLICY.replace("name: api", "name: api2")
    report = topo.apply(newer)
    assert report.rules == 3
    assert time.time() < until - 2, "the apply took too long to test this"
    assert topo.passes(*WEB, *API) == [True] * 4 + [False] * 2
    assert topo.status()["lockdown"]["until"] == until
    time.sleep(max(0.0, until + 1 - time.time()))
    assert topo.passes(*WEB, *API) == [True] * 6


def test_an_unknown_keep_rule_is_refused_and_nothing_changes(topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4)
    topo.apply(POLICY)
    listing = topo.nft("list", "chain", "inet", "outguard", "output")
    proc = topo.cli("lockdown", "--for", "1h", "--keep", "web", "--keep", "nope")
    assert proc.returncode == 1
    assert "--keep nope" in proc.stderr and "Traceback" not in proc.stderr
    assert topo.nft("list", "chain", "inet", "outguard", "output") == listing
    assert not (topo.state_dir / "lockdown.json").exists()
    assert topo.passes(Probe(WEB4, 443)) == [True]


def test_remove_ends_a_lockdown_made_without_a_policy_for_good(topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4)
    _lockdown(topo, "--for", "1h")
    assert topo.passes(Probe(WEB4, 443)) == [False]
    proc = topo.cli("remove")  # this state directory made the table: no --force needed
    assert proc.returncode == 0, proc.stderr
    assert topo.passes(Probe(WEB4, 443)) == [True]
    assert not (topo.state_dir / "lockdown.json").exists()
    topo.apply(POLICY)  # and an apply does not bring it back
    assert topo.passes(Probe(WEB4, 443)) == [True]


def test_lockdown_off_leaves_a_table_of_another_state_directory_alone(
        topology: Topology, tmp_path: object) -> None:
    topo = topology
    topo.add_addresses(WEB4)
    topo.apply(POLICY.replace(f"to: [{WEB4}, ", "to: ["))  # web no longer allowed for WEB4
    assert topo.passes(Probe(WEB4, 443)) == [False]
    proc = subprocess.run([sys.executable, "-m", "outguard", "lockdown", "--off", "--netns",
                           topo.server, "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "nothing changed" in proc.stderr
    assert topo.passes(Probe(WEB4, 443)) == [False]  # still closed
    listing = topo.nft("list", "chain", "inet", "outguard", "output")
    proc = subprocess.run([sys.executable, "-m", "outguard", "lockdown", "--for", "1h",
                           "--netns", topo.server, "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and "did not apply" in proc.stderr, proc.stderr
    assert topo.nft("list", "chain", "inet", "outguard", "output") == listing


def test_what_a_lockdown_blocks_is_an_incident_naming_it(topology: Topology) -> None:
    import io

    from outguard.service.options import AgentOptions
    from outguard.service.runner import AgentHandle

    topo = topology
    topo.add_addresses(WEB4)
    policy = topo.write_policy(POLICY)
    topo.apply(policy)
    _lockdown(topo, "--for", "10m")
    opts = AgentOptions(policy=policy, state_dir=topo.state_dir, netns=topo.server,
                        stdout=io.StringIO())
    with AgentHandle(opts) as agent:  # its apply at start carries the lockdown
        assert topo.probe([Probe(WEB4, 443)]) == ["timeout"]
        agent.wait_for_incidents(1, timeout=3.0)
        time.sleep(0.3)
        (inc,) = agent.incidents()
        assert (inc.dst, inc.dport, inc.rule, inc.proto) == (WEB4, 443, "lockdown", "tcp")
        assert "lockdown" in {c.signature for c in inc.classifications}
        assert inc.pid == os.getpid(), inc.attribution_failure


def test_a_lockdown_leaves_rollback_going_to_the_policy_before(topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4, API4)
    first = topo.apply(POLICY).policy_hash
    second = topo.apply(POLICY.replace("name: api", "name: api2")).policy_hash
    _lockdown(topo, "--for", "10m")
    _lockdown(topo, "--off")
    proc = topo.cli("rollback")
    assert proc.returncode == 0, proc.stderr
    assert topo.status()["policy_hash"] == first != second


def test_a_rollback_keeps_the_lockdown_in_the_kernel(topology: Topology) -> None:
    # the snapshot rolled back to was compiled before the lockdown: it came back without it,
    # and `rollback` lifted the emergency brake (found in session 7, fixed in session 8)
    topo = topology
    topo.add_addresses(WEB4)
    first = topo.apply(POLICY).policy_hash
    topo.apply(POLICY.replace("name: api", "name: api2"))
    _lockdown(topo, "--for", "10m")
    proc = topo.cli("rollback")
    assert proc.returncode == 0, proc.stderr
    assert "stays in force" in proc.stdout + proc.stderr
    status = topo.status_cli()
    assert status["policy_hash"] == first
    assert status["lockdown"]["in_kernel"] is True and status["problems"] == []
    assert topo.passes(Probe(WEB4, 443)) == [False]


def test_status_flags_a_lockdown_the_kernel_does_not_hold(topology: Topology) -> None:
    from outguard.state import StateDir

    topo = topology
    topo.add_addresses(WEB4)
    topo.apply(POLICY)
    got = _lockdown(topo, "--for", "10m")
    assert topo.status_cli()["problems"] == []
    record = {"until": got["lockdown"]["until"], "keep": []}  # type: ignore[index]
    StateDir(topo.state_dir).set_lockdown(None)
    topo.apply(POLICY)  # compiled without it; then the record alone says one is in force
    StateDir(topo.state_dir).set_lockdown(record)
    status = topo.status_cli()
    assert status["lockdown"]["in_kernel"] is False
    assert any("lockdown" in p for p in status["problems"]), status["problems"]


def test_restore_after_a_reboot_brings_back_a_lockdown_made_without_a_policy(
        topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4)
    _lockdown(topo, "--for", "10m")
    assert topo.passes(Probe(WEB4, 443)) == [False]
    subprocess.run(["ip", "netns", "exec", topo.server, "nft", "delete", "table", "inet",
                    "outguard"], check=True)  # what a reboot does to the kernel's tables
    assert topo.passes(Probe(WEB4, 443)) == [True]
    proc = topo.cli("restore")
    assert proc.returncode == 0, proc.stderr
    assert topo.passes(Probe(WEB4, 443)) == [False]
    assert topo.status_cli()["lockdown"]["in_kernel"] is True


class _NoLockdownKernel:
    """The real kernel, refusing every batch that would put a lockdown in."""

    def __init__(self, real: object) -> None:
        self.real = real

    def run_json(self, doc: object) -> object:
        if "v_lockdown" in str(doc):
            from outguard.errors import KernelError

            raise KernelError("refused (test)")
        return self.real.run_json(doc)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


@pytest.mark.parametrize("with_policy", [True, False])
def test_a_refused_lockdown_changes_nothing(topology: Topology, with_policy: bool) -> None:
    from outguard.apply import lockdown as ld
    from outguard.errors import OutguardError
    from outguard.state import StateDir

    topo = topology
    topo.add_addresses(WEB4)
    applied = topo.apply(POLICY).policy_hash if with_policy else None
    state = StateDir(topo.state_dir)
    state.ensure()
    with pytest.raises(OutguardError):
        ld.start(state, _NoLockdownKernel(topo.kernel()), 600, [])  # type: ignore[arg-type]
    assert state.lockdown() is None
    assert topo.passes(Probe(WEB4, 443)) == [True]
    assert topo.status()["policy_hash"] == applied
    assert "lockdown" not in topo.nft("list", "tables") + str(topo.counters())
