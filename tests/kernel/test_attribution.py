"""Attribution against real processes: NFLOG packet → sock_diag → /proc → the right pid and exe.

The acceptance test starts 1,000 short-lived processes in the server namespace of the test
topology (tests/kernel/topology.py); each connects to a denied address on its own port, waits
0.2-0.5 s and exits. The monitor side (NflogSource + Attributor, in this process) must name the
right pid and exe for at least 99 % of them. A quarter run as `nobody`, so the uid narrowing is
exercised too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from outguard.events import Attribution, BlockedPacket
from outguard.kernel.nflog import NflogSource
from outguard.kernel.sockdiag import SockDiag
from outguard.monitor.attribute import Attributor
from tests.kernel.topology import NOBODY, Topology

pytestmark = pytest.mark.kernel

DENIED4, DENIED6 = "198.51.100.7", "2001:db8:bad::7"
POLICY = """\
version: 1
mode: enforce
deny:
  - name: attacker
    to: [198.51.100.0/24, "2001:db8:bad::/48"]
options:
  log_rate: 1000000/second
"""
PYTHON = "/usr/bin/python3"
CHILD = (
    "import socket,sys,time\n"
    "a=sys.argv[1]\n"
    "s=socket.socket(socket.AF_INET6 if ':' in a else socket.AF_INET, socket.SOCK_STREAM)\n"
    "s.setblocking(False)\n"
    "s.connect_ex((a,int(sys.argv[2])))\n"
    "time.sleep(float(sys.argv[3]))\n"
)


@pytest.fixture
def denied(topology: Topology) -> Iterator[Topology]:
    topology.add_addresses(DENIED4, DENIED6)
    topology.apply(POLICY)
    yield topology


def _child_argv(addr: str, port: int, wait: float, uid: int) -> list[str]:
    argv = [PYTHON, "-S", "-c", CHILD, addr, str(port), f"{wait:.3f}"]
    if uid:
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
    return argv


async def _collect(source: NflogSource, attributor: Attributor, want: set[int],
                   results: dict[int, Attribution], done: asyncio.Event) -> None:
    async for batch in source:
        for pkt in batch:
            if pkt.proto == "tcp" and pkt.dport in want and pkt.dport not in results:
                results[pkt.dport] = attributor.attribute(pkt)
        if len(results) == len(want) or done.is_set():
            return


def test_thousand_short_lived_processes(denied: Topology) -> None:
    n, base_port, alive_max = 1000, 20000, 48
    rng = random.Random(7)
    expected: dict[int, tuple[int, int]] = {}  # port → (pid, uid)
    results: dict[int, Attribution] = {}

    def spawn_all() -> None:
        running: list[subprocess.Popen[bytes]] = []
        for i in range(n):
            while len(running) >= alive_max:
                running.pop(0).wait(timeout=30)
            port = base_port + i
            uid = NOBODY if i % 4 == 3 else 0
            addr = DENIED6 if i % 5 == 4 else DENIED4
            argv = _child_argv(addr, port, rng.uniform(0.2, 0.5), uid)
            # Popen on the namespace's thread: the child is born in the server namespace
            proc = denied.thread.call(subprocess.Popen, argv, stdin=subprocess.DEVNULL)
            expected[port] = (proc.pid, uid)
            running.append(proc)
        for proc in running:
            proc.wait(timeout=30)

    async def main() -> float:
        with SockDiag(denied.server) as diag:
            attributor = Attributor(diag)
            async with NflogSource(0, netns=denied.server) as source:
                done = asyncio.Event()
                collector = asyncio.create_task(
                    _collect(source, attributor, set(range(base_port, base_port + n)), results,
                             done))
                t0 = time.monotonic()
                await asyncio.get_running_loop().run_in_executor(None, spawn_all)
                elapsed = time.monotonic() - t0
                done.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(collector, timeout=3)
                print(f"\nsource {source.stats.as_dict()}; attributor {dict(attributor.stats)}; "
                      f"index listings {attributor.index.listings}, "
                      f"fd scans {attributor.index.fd_scans}")
                assert source.stats.lost == 0 and source.stats.enobufs == 0
                return elapsed

    elapsed = asyncio.run(main())
    exe = os.path.realpath(PYTHON)
    right = 0
    wrong: Counter[str] = Counter()
    for port, (pid, uid) in expected.items():
        got = results.get(port)
        if got is None:
            wrong["no NFLOG packet"] += 1
        elif got.pid == pid and got.exe == exe and got.uid == uid:
            right += 1
        elif got.failure:
            wrong[got.failure.split(" (")[0][:60]] += 1
        else:
            wrong[f"pid {got.pid} exe {got.exe} uid {got.uid}"[:60]] += 1
    rate = right / n
    print(f"attributed to the right pid, exe and uid: {right}/{n} = {rate:.1%} "
          f"in {elapsed:.1f} s; misses: {dict(wrong)}")
    assert rate >= 0.99


def _in_ns(topo: Topology, fn, *args):  # type: ignore[no-untyped-def]
    return topo.thread.call(fn, *args)


def _read(source: NflogSource, want: int, timeout: float = 3.0) -> list[BlockedPacket]:
    got: list[BlockedPacket] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += source.read_nowait()
        time.sleep(0.01)
    return got


def test_details_udp_and_failures(denied: Topology) -> None:
    """Every field for a known child; UDP best effort; each failure says why."""
    with SockDiag(denied.server) as diag, NflogSource(0, netns=denied.server) as source:
        attributor = Attributor(diag)
        child = denied.thread.call(subprocess.Popen, _child_argv(DENIED4, 31000, 5, 0),
                                   stdin=subprocess.DEVNULL)
        try:
            pkts = _read(source, 1)
            assert [p.dport for p in pkts] == [31000]
            a = attributor.attribute(pkts[0])
            assert a.failure is None, a.failure
            assert a.pid == child.pid and a.exe == os.path.realpath(PYTHON)
            assert a.cmdline[:2] == (PYTHON, "-S") and a.cmdline[-3:] == (DENIED4, "31000",
                                                                          "5.000")
            assert (a.uid, a.user) == (0, "root")
            assert a.ppid == os.getpid() and a.parent_exe == os.path.realpath(sys.executable)
            with open(f"/proc/{child.pid}/cgroup") as fh:
                assert a.cgroup and a.cgroup in fh.read()
            # the SYN retried (1 s later) is the same socket: answered from the cache
            again = _read(source, 1, timeout=2.5)
            assert again and attributor.attribute(again[0]) == a
            assert attributor.stats["cached"] >= 1
        finally:
            child.kill()
            child.wait()

        # UDP, connected socket still open: attributed to this process
        def udp() -> socket.socket:
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.connect((DENIED6, 53))
            with pytest.raises(PermissionError):
                s.send(b"q")
            return s

        sock = _in_ns(denied, udp)
        try:
            (pkt,) = _read(source, 1)
            a = attributor.attribute(pkt)
            assert (pkt.proto, a.pid, a.failure) == ("udp", os.getpid(), None)
        finally:
            sock.close()

        # the process is gone before the monitor asks: the reason says so
        short = denied.thread.call(subprocess.Popen, _child_argv(DENIED4, 31001, 0, 0),
                                   stdin=subprocess.DEVNULL)
        short.wait()
        (pkt,) = _read(source, 1)
        a = attributor.attribute(pkt)
        assert a.pid is None and a.failure and "not found" in a.failure, a
        assert attributor.stats["failed:closed"] == 1  # NFLOG saw its uid: a socket that closed

        # ICMP has no socket to look up; forwarded packets no local process
        def echo() -> None:
            with (socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as raw,
                  pytest.raises(PermissionError)):  # dropped in the output hook
                raw.sendto(bytes([8, 0, 0xF7, 0xFF, 0, 0, 0, 0]), (DENIED4, 0))

        _in_ns(denied, echo)
        icmp = [p for p in _read(source, 1) if p.proto == "icmp"]
        assert icmp and "no socket lookup for icmp" in (attributor.attribute(icmp[0]).failure
                                                        or "")
        fwd = BlockedPacket(pkt.time, pkt.prefix, 4, "tcp", "192.0.2.9", DENIED4, 1, 2,
                            hook="forward")
        assert "not sent by a local process" in (attributor.attribute(fwd).failure or "")
