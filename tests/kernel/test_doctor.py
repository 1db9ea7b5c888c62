"""`outguard doctor --netns` against a real namespace: the probes (NFLOG, cgroup2 passed in,
the resolver's port and who holds it, the state directory) and the exit code.

Real pieces: `outguard run` with a `dns:` policy (its resolver binds 127.0.0.1:53 in the
namespace), a foreign process holding the port, the state directory's real mode.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from outguard.kernel import hostprobe
from outguard.kernel import netns as ns
from tests.kernel.topology import Topology

pytestmark = pytest.mark.kernel

POLICY = """version: 1
mode: audit
dns:
  listen: "127.0.0.1:53"
  upstreams: ["203.0.113.53"]
allow:
  - name: web
    to: [203.0.113.10]
    ports: [443]
"""


def _doctor(topo: Topology) -> tuple[int, dict[str, str]]:
    proc = topo.cli("doctor")
    lines = {}
    for line in proc.stdout.splitlines()[:-1]:
        level, rest = line.split(None, 1)
        lines.setdefault(rest.split(":", 1)[0], f"{level}:{rest}")
    return proc.returncode, lines


def _wait(pred: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_doctor_in_a_namespace(topology: Topology) -> None:
    topo = topology
    assert topo.cli("apply", str(topo.write_policy(POLICY))).returncode == 0
    code, lines = _doctor(topo)
    assert code == 0, lines
    assert lines["nftables"].startswith("ok:") and lines["NFLOG"].startswith("ok:")
    assert lines["cgroup v2"].startswith("ok:"), lines
    assert lines["state dir"].startswith("ok:"), lines
    assert lines["resolver port"].startswith("warn:") and "is free" in lines["resolver port"]

    agent = subprocess.Popen([sys.executable, "-m", "outguard", "run", "--no-apply", "--netns",
                              topo.server, "--state-dir", str(topo.state_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: "served by outguard" in _doctor(topo)[1]["resolver port"])
        code, lines = _doctor(topo)
        assert code == 0 and lines["resolver port"].startswith("ok:"), lines
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=30)

    # someone else takes the port: a failure, named, and exit 1
    squatter = subprocess.Popen(ns.exec_argv(topo.server, [
        "/usr/bin/python3", "-c", "import socket,time; s=socket.socket(socket.AF_INET,"
        " socket.SOCK_DGRAM); s.bind(('127.0.0.1', 53)); print('bound', flush=True);"
        " time.sleep(60)"]), stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout is not None and squatter.stdout.readline() == "bound\n"
        found = topo.thread.call(hostprobe.listeners, 53)
        assert [(f.proto, f.addr, f.pid) for f in found] == [("udp", "127.0.0.1", squatter.pid)]
        code, lines = _doctor(topo)
        assert code == 1 and lines["resolver port"].startswith("fail:"), lines
        assert f"pid {squatter.pid}" in lines["resolver port"]
    finally:
        squatter.kill()
        squatter.wait(timeout=10)


def test_a_state_dir_others_can_write_fails(topology: Topology) -> None:
    topo = topology
    assert topo.cli("apply", str(topo.write_policy(POLICY))).returncode == 0
    Path(topo.state_dir).chmod(0o777)
    code, lines = _doctor(topo)
    assert code == 1 and lines["state dir"].startswith("fail:"), lines
    assert "chmod 700" in lines["state dir"]


def test_listeners_reads_ipv6_and_tcp(netns: str) -> None:
    """The /proc/net parser: a TCP listener on ::1 is found with its address and pid."""
    holder = subprocess.Popen(ns.exec_argv(netns, [
        "/usr/bin/python3", "-c", "import socket,time; s=socket.socket(socket.AF_INET6);"
        " s.bind(('::1', 8053)); s.listen(); print('bound', flush=True); time.sleep(60)"]),
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "bound\n"
        found = ns.NetnsThread(netns)
        try:
            got = found.call(hostprobe.listeners, 8053)
        finally:
            found.close()
        assert [(f.proto, f.addr, f.pid) for f in got] == [("tcp", "::1", holder.pid)]
        assert got[0].cmdline[0] == "/usr/bin/python3"
    finally:
        holder.kill()
        holder.wait(timeout=10)
