"""The NFLOG source against the real kernel: what the log rules send, batching, and the books.

Each test applies a policy in the server namespace of tests/kernel/topology.py and binds the
policy's NFLOG group there with `NflogSource`. The books test floods the deny rule far beyond
what a deliberately slow reader takes and checks that every packet the rule counted is either
received or counted as lost, with memory bounded.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from outguard.errors import KernelError
from outguard.events import BlockedPacket
from outguard.kernel.nflog import NflogSource
from tests.kernel.topology import LINK, NOBODY, Probe, Topology

pytestmark = pytest.mark.kernel

DENIED4, DENIED6, OTHER4 = "198.51.100.7", "2001:db8:bad::7", "203.0.113.99"
POLICY = """\
version: 1
mode: enforce
allow:
  - name: web
    to: [203.0.113.10]
    ports: [80]
    proto: tcp
deny:
  - name: attacker
    to: [198.51.100.0/24, "2001:db8:bad::/48"]
options:
  nflog_group: 7
  log_rate: 1000000/second
"""


@pytest.fixture
def applied(topology: Topology) -> Iterator[Topology]:
    topology.add_addresses(DENIED4, DENIED6, OTHER4, "203.0.113.10")
    topology.apply(POLICY)
    yield topology


def _read(source: NflogSource, want: int, timeout: float = 3.0) -> list[BlockedPacket]:
    got: list[BlockedPacket] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += source.read_nowait()
        time.sleep(0.005)
    return got


def test_fields_prefix_uid_and_families(applied: Topology) -> None:
    with NflogSource(7, netns=applied.server) as source:
        results = applied.probe([Probe(DENIED4, 80), Probe(DENIED6, 443, "udp"),
                                 Probe(OTHER4, 22, uid=NOBODY), Probe("203.0.113.10", 80)])
        assert results[:3] == ["timeout", "eperm", "timeout"]
        pkts = sorted(_read(source, 3), key=lambda p: (p.dst, p.proto))
    ifindex = applied.thread.call(socket.if_nametoindex, LINK)
    seen = [(p.prefix, p.family, p.proto, p.dst, p.dport, p.uid, p.gid, p.hook, p.ifindex_out)
            for p in pkts]
    assert seen == [
        ("og:deny:attacker", 4, "tcp", DENIED4, 80, 0, 0, "output", ifindex),
        ("og:deny:attacker", 6, "udp", DENIED6, 443, 0, 0, "output", ifindex),
        # the uid/gid of the socket's owner come with every packet: no flag needed
        ("og:default", 4, "tcp", OTHER4, 22, NOBODY, NOBODY, "output", ifindex),
    ]
    tcp = [p for p in pkts if p.proto == "tcp"]
    assert all(p.tcp_flags == 0x02 for p in tcp)  # SYN
    assert {p.src for p in pkts} == {"192.0.2.2", "2001:db8::2"}
    assert all(p.sport and p.sport >= 1024 for p in pkts)
    assert source.stats.received == 3 and source.stats.lost == 0


def test_batching_threshold_and_timeout(applied: Topology) -> None:
    def send(n: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(n):
                with pytest.raises(PermissionError):
                    s.sendto(b"x", (DENIED4, 1000 + i))

    # a threshold of 20: 20 packets come at once, in one datagram
    with NflogSource(7, netns=applied.server, qthreshold=20, timeout=5) as source:
        applied.thread.call(send, 20)
        got = _read(source, 20, timeout=1)
        assert len(got) == 20 and source.stats.datagrams == 1
    # under the threshold, the kernel waits for the timeout (0.3 s), then sends what it has
    with NflogSource(7, netns=applied.server, qthreshold=1000, timeout=0.3) as source:
        t0 = time.monotonic()
        applied.thread.call(send, 5)
        time.sleep(0.15)
        assert source.read_nowait() == []
        got = _read(source, 5, timeout=2)
        waited = time.monotonic() - t0
        assert len(got) == 5 and source.stats.datagrams == 1
        assert 0.25 <= waited <= 1.5, waited


def test_group_already_bound_is_a_clear_error(applied: Topology) -> None:
    with (NflogSource(7, netns=applied.server),
          pytest.raises(KernelError, match=r"cannot bind NFLOG group 7.*busy.*ulogd")):
        NflogSource(7, netns=applied.server).open()
    with NflogSource(7, netns=applied.server) as again:  # released by close
        assert again.stats.received == 0


FLOOD = """
import socket, sys, time
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    try:
        s.sendto(b"x", ("198.51.100.7", 1 + i % 60000))
    except PermissionError:
        pass
"""


def test_flood_books_balance_with_bounded_memory(applied: Topology) -> None:
    """A slow reader under a flood: counter == received + lost; ENOBUFS seen; memory bounded."""
    flood = 150_000
    before = applied.counters().get("deny.attacker", 0)

    async def slow_reader(source: NflogSource, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 120
        quiet_since = None
        while time.monotonic() < deadline:
            got = source.read_nowait()
            await asyncio.sleep(0.004)  # far slower than the flood
            if got or proc.poll() is None:
                quiet_since = None
                continue
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.5:  # the flood is over and the socket empty
                return

    tracemalloc.start()
    try:
        with NflogSource(7, netns=applied.server, rcvbuf=256 << 10, max_batch=128,
                         timeout=0.01) as source:
            proc = applied.thread.call(subprocess.Popen,
                                       ["/usr/bin/python3", "-S", "-c", FLOOD, str(flood)])
            try:
                asyncio.run(slow_reader(source, proc))
            finally:
                proc.kill()
                proc.wait()
            # packets lost at the very end of a burst show as a gap when the next one arrives
            tail = source.stats.received

            def sentinel() -> None:
                with (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u,
                      pytest.raises(PermissionError)):
                    u.sendto(b"x", (DENIED4, 9))

            applied.thread.call(sentinel)
            assert len(_read(source, 1)) == 1 and source.stats.received == tail + 1
            _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    counted = applied.counters()["deny.attacker"] - before
    s = source.stats
    print(f"\nkernel counted {counted}; received {s.received} + lost {s.lost} "
          f"(+ malformed {s.malformed}); ENOBUFS {s.enobufs}, gaps {s.seq_gaps}; "
          f"peak traced memory {peak / 1e6:.1f} MB")
    assert counted == flood + 1
    assert s.lost > 0 and s.enobufs > 0 and s.seq_gaps > 0, "the reader was not overrun"
    assert counted == s.received + s.lost + s.malformed
    # 150,000 decoded packets would take ~100 MB; the source holds one batch at a time
    assert peak < 8e6, peak
