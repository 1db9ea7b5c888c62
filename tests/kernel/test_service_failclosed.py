"""Fail closed when the agent dies: `outguard run` is killed with SIGKILL (what an OOM kill, a
crash of the interpreter or `systemctl kill -s KILL` does) and the kernel keeps the applied
table: a blocked destination stays blocked, an allowed one still passes. Only `outguard remove`
opens egress. The agent runs as systemd runs it: `Type=notify` (a real notify socket gets
`READY=1`, then `WATCHDOG=1` at half of `WATCHDOG_USEC`).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kernel.test_apply_safety import ADDRESSES, POLICY_A, _table
from tests.kernel.topology import Probe, Topology

pytestmark = pytest.mark.kernel

DENIED = Probe("198.51.100.7", 443)
ALLOWED = Probe("203.0.113.10", 443)
WATCHDOG_USEC = 400_000  # pings every 0.2 s


def _datagrams(sock: socket.socket, until: float, want: bytes) -> list[bytes]:
    """Every datagram received until one holds `want` (or the deadline passes)."""
    got: list[bytes] = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            got.append(sock.recv(4096))
        except TimeoutError:
            break
        if want in got[-1]:
            break
    return got


def test_sigkill_of_the_agent_leaves_the_policy_enforced(topology: Topology,
                                                         tmp_path: Path) -> None:
    topo = topology
    topo.add_addresses(*ADDRESSES)
    policy = topo.write_policy(POLICY_A, "a.yaml")
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET": str(notify_path),
               "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        proc = subprocess.Popen([sys.executable, "-m", "outguard", "run", str(policy), "--netns",
                                 topo.server, "--state-dir", str(topo.state_dir)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready = _datagrams(sock, time.monotonic() + 60, b"READY=1")
            assert ready and b"READY=1" in ready[-1], (ready, proc.poll())
            pings = [d for d in _datagrams(sock, time.monotonic() + 1.5, b"never")
                     if d == b"WATCHDOG=1"]
            assert len(pings) >= 3, pings  # ~7 in 1.5 s at 0.2 s
            applied = _table(topo)[1]
            assert topo.passes(DENIED, ALLOWED) == [False, True]
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # the kernel kept the table, byte for byte: still closed, still open where allowed
    assert _table(topo)[1] == applied
    assert topo.passes(DENIED, ALLOWED) == [False, True]
    # and after a while too (no watchdog of outguard's rolls anything back behind the agent)
    time.sleep(1)
    assert topo.passes(DENIED, ALLOWED) == [False, True]
    # only `outguard remove` opens egress
    done = topo.cli("remove")
    assert done.returncode == 0, done.stderr
    assert ("inet", "outguard") not in topo.tables()
    assert topo.passes(DENIED, ALLOWED) == [True, True]


def test_sigterm_stops_the_agent_and_keeps_the_table(topology: Topology, tmp_path: Path) -> None:
    """`systemctl stop` sends SIGTERM (the unit has no ExecStop): the agent says STOPPING=1,
    exits 0, and the rules stay."""
    topo = topology
    topo.add_addresses(*ADDRESSES)
    policy = topo.write_policy(POLICY_A, "a.yaml")
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify_path))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET": str(notify_path)}
        proc = subprocess.Popen([sys.executable, "-m", "outguard", "run", str(policy), "--netns",
                                 topo.server, "--state-dir", str(topo.state_dir)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready = _datagrams(sock, time.monotonic() + 60, b"READY=1")
            assert ready and b"READY=1" in ready[-1], (ready, proc.poll())
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
            stopping = _datagrams(sock, time.monotonic() + 1, b"STOPPING=1")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert any(b"STOPPING=1" in d for d in stopping), stopping
    assert b"WATCHDOG=1" not in b"".join(stopping)  # no watchdog asked for: none sent
    assert topo.passes(DENIED, ALLOWED) == [False, True]
