"""The learner with the kernel's counting sets: a key's first message names its owner and
counts nothing; the counts read at each flush go to the owner; counts without an owner wait,
then are recorded with the uid alone; none is lost or counted twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

from outguard.kernel.learnsets import Count
from outguard.monitor.agent import MemorySource
from outguard.monitor.learn import Learner
from outguard.monitor.learnkeys import Owners
from outguard.store.sqlite import SQLiteStore
from tests.monitor.events import T0, attribution, packet
from tests.monitor.test_learn import ByPort


class Kernel:
    """The counting sets: what `read` returns, then nothing (a read resets); `fail` once."""

    def __init__(self) -> None:
        self.counts: list[Count] = []
        self.fail = False

    def add(self, dst: str, port: int, flows: int, uid: int = 1000, proto: str = "tcp") -> None:
        self.counts.append(Count(dst, proto, port, uid, flows))

    def read(self) -> list[Count]:
        if self.fail:
            self.fail = False
            raise OSError("netlink went away")
        got, self.counts = self.counts, []
        return got


def learner(store: SQLiteStore, kernel: Kernel) -> Learner:
    return Learner(MemorySource(), ByPort(), store, clock=T0.timestamp, counts=kernel.read)


def test_counts_go_to_the_owner_of_their_key_and_the_first_message_counts_nothing(
        tmp_path: Path) -> None:
    store, kernel = SQLiteStore(tmp_path / "e.db"), Kernel()
    lrn = learner(store, kernel)

    async def go() -> None:
        # two CPUs logged the same new key at once: still one owner, no count of their own
        await lrn.handle([packet(rule="learn-key"), packet(rule="learn-key", at=0.001)])
        kernel.add("203.0.113.7", 443, 5000)
        await lrn.flush()
        kernel.add("203.0.113.7", 443, 7)
        await lrn.flush()
    asyncio.run(go())
    [flow] = store.flows()
    assert (flow.exe, flow.user, flow.count, flow.first_seen) == \
        ("/usr/bin/curl", "app", 5007, T0)
    books = lrn.report()
    assert (books.keys, books.counted, books.received, books.recorded, books.pending) == \
        (2, 5007, 0, 5007, 0)


def test_counts_without_an_owner_wait_then_are_recorded_with_the_uid(tmp_path: Path) -> None:
    store, kernel = SQLiteStore(tmp_path / "e.db"), Kernel()
    lrn = learner(store, kernel)

    async def go() -> None:
        kernel.add("198.51.100.9", 80, 3, uid=0)  # read before its key's message
        await lrn.flush()
        assert lrn.report().pending == 3 and store.flows() == []
        await lrn.handle([packet("198.51.100.9", 80, rule="learn-key", uid=0)])
        await lrn.flush()  # the owner came: its process
        kernel.add("198.51.100.10", 80, 2, uid=0, proto="udp")  # its message never comes
        for _ in range(3):
            await lrn.flush()
    asyncio.run(go())
    got = {(f.dst, f.port, f.proto): f for f in store.flows()}
    assert (got[("198.51.100.9", 80, "tcp")].exe, got[("198.51.100.9", 80, "tcp")].count) == \
        ("/usr/bin/curl", 3)
    orphan = got[("198.51.100.10", 80, "udp")]
    assert (orphan.exe, orphan.uid, orphan.user, orphan.count) == ("uid:0", 0, "root", 2)
    books = lrn.report()
    assert (books.counted, books.recorded, books.pending, books.unattributed) == (5, 5, 0, 2)


def test_a_failed_read_loses_nothing_and_the_flows_logged_one_by_one_still_count(
        tmp_path: Path) -> None:
    store, kernel = SQLiteStore(tmp_path / "e.db"), Kernel()
    lrn = learner(store, kernel)
    stop = asyncio.Event()

    async def go() -> None:
        await lrn.handle([packet(rule="learn-key"), packet(dport=22, rule="learn")])
        kernel.add("203.0.113.7", 443, 4)
        kernel.fail = True  # the kernel keeps its counts: the next read has them
        await lrn.flush()
        stop.set()
        await lrn.run(stop)  # its last flush reads again
    asyncio.run(go())
    got = {f.port: f.count for f in store.flows()}
    assert got == {443: 4, 22: 1}
    assert (lrn.report().counted, lrn.report().received) == (4, 1)


def test_owners_and_waiting_counts_are_bounded_and_no_count_is_dropped() -> None:
    owners = Owners(limit=2, wait=5)
    for port in (1, 2, 3):
        owners.own(("203.0.113.7", "tcp", port, 0), packet(dport=port), attribution())
    taken = owners.take([Count("203.0.113.7", "tcp", 1, 0, 1)])
    assert taken == [] and owners.waiting() == 1  # key 1 lost its owner (the oldest): it waits
    taken = owners.take([Count("203.0.113.7", "tcp", p, 0, 1) for p in (3, 10, 11)])
    owned = [(k[2], n) for k, pkt, _a, n in taken if pkt is not None]
    assert owned == [(3, 1)]
    # three keys wait, the room holds two: the oldest is given at once, without an owner
    assert [(k[2], pkt) for k, pkt, _a, _n in taken if pkt is None] == [(1, None)]
    assert owners.waiting() == 2
    assert sum(n for *_k, n in owners.give_up()) == 2 and owners.waiting() == 0


def test_a_first_message_without_a_process_keeps_a_running_owner() -> None:
    import os
    key = ("203.0.113.7", "tcp", 443, 1000)
    me = attribution(os.readlink("/proc/self/exe"), pid=os.getpid())
    gone = attribution(None, pid=None)
    owners = Owners()
    owners.own(key, packet(), me)
    owners.own(key, packet(at=30), gone)  # the socket closed before the lookup
    [(_k, _p, att, _n)] = owners.take([Count(*key, 5)])
    assert att is me
    owners.own(key, packet(), attribution("/usr/bin/exited", pid=2**22 + 1))
    owners.own(key, packet(at=30), gone)  # the known owner no longer runs: no guess
    [(_k, _p, att, _n)] = owners.take([Count(*key, 5)])
    assert att is gone
