"""The learner on its own: packets in, aggregated flows with names, decisions and signatures
into a real SQLite store, the books kept."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import dns.message
import dns.rrset

from outguard.events import Attribution, BlockedPacket, LearnedFlow
from outguard.kernel.nflog_payload import Payload
from outguard.monitor.agent import MemorySource
from outguard.monitor.classify import load_classifier
from outguard.monitor.learn import Learner
from outguard.store import StoreError
from outguard.store.base import LateStore, Store
from outguard.store.sqlite import SQLiteStore
from tests.monitor.events import T0, attribution, packet

JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"


def learn_pkt(dst: str = "203.0.113.7", dport: int | None = 443, **kw: object) -> BlockedPacket:
    return packet(dst, dport, rule="learn", **kw)  # type: ignore[arg-type]


class ByPort:
    """An attributor: the process is chosen by destination port (8080 has none: gone)."""

    def attribute(self, pkt: BlockedPacket) -> Attribution:
        if pkt.dport == 8080:
            return Attribution(uid=pkt.uid, failure="closed", failure_kind="closed")
        if pkt.dport == 1389:
            return attribution(JAVA, user="app")
        return attribution("/usr/bin/curl", user="app")


def answer(name: str, addr: str) -> Payload:
    msg = dns.message.make_response(dns.message.make_query(name, "A"))
    msg.answer.append(dns.rrset.from_text(name + ".", 30, "IN", "A", addr))
    return Payload(T0, "udp", "198.51.100.53", "192.0.2.2", 53, 40000, msg.to_wire())


def learner(store: Store, **kw: object) -> Learner:
    return Learner(MemorySource(), ByPort(), store, clock=T0.timestamp,
                   **kw)  # type: ignore[arg-type]


def test_packets_aggregate_by_key_with_names_read_after_the_flow(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    lrn = learner(store)

    async def go() -> None:
        await lrn.handle([learn_pkt(at=0), learn_pkt(at=1), learn_pkt(at=2),
                          learn_pkt("2001:db8::7", 443, proto="udp"),
                          learn_pkt(dport=8080, uid=33),
                          packet(rule="default")])  # not the learn rule's: not a new flow
        lrn.take_answers([answer("api.example.test", "203.0.113.7")])  # after the connect
        await lrn.flush()
    asyncio.run(go())
    got = {(f.dst, f.port, f.proto): f for f in store.flows()}
    curl = got[("203.0.113.7", 443, "tcp")]
    assert (curl.exe, curl.user, curl.count, curl.names) == \
        ("/usr/bin/curl", "app", 3, ("api.example.test",))
    assert (curl.first_seen, (curl.last_seen - T0).total_seconds()) == (T0, 2.0)
    assert got[("2001:db8::7", 443, "udp")].count == 1
    gone = got[("203.0.113.7", 8080, "tcp")]
    assert (gone.exe, gone.uid) == ("uid:33", 33)
    books = lrn.report()
    assert (books.received, books.recorded, books.pending, books.unattributed) == (5, 5, 0, 1)


def test_decisions_and_signatures_as_the_policy_in_force_sees_them(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")

    def decide(flows: list[LearnedFlow]) -> list[str]:
        return ["allow:api" if f.port == 443 else "default" for f in flows]

    lrn = learner(store, classifier=load_classifier(), decide=decide)

    async def go() -> None:
        await lrn.handle([learn_pkt("198.51.100.9", 1389),  # the JNDI callback
                          learn_pkt("198.51.100.10", 443)])
        await lrn.flush()
    asyncio.run(go())
    got = {f.port: f for f in store.flows()}
    assert (got[1389].decision, got[1389].signature, got[1389].severity) == \
        ("default", "jndi-callback", "critical")
    # a raw IP without a name is suggest's to review, not a flow never to allow
    assert (got[443].decision, got[443].signature, got[443].severity) == ("allow:api", None, None)


def test_a_decide_that_fails_records_the_flows_undecided(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")

    def decide(flows: list[LearnedFlow]) -> list[str]:
        raise OSError("the policy's list file went away")

    lrn = learner(store, decide=decide)

    async def go() -> None:
        await lrn.handle([learn_pkt()])
        await lrn.flush()
    asyncio.run(go())
    assert [f.decision for f in store.flows()] == [""]


def test_a_store_that_fails_keeps_the_flows_for_the_next_flush(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    late = LateStore(lambda: SQLiteStore(blocker / "e.db"), StoreError("not yet"))
    lrn = learner(late)

    async def go() -> None:
        await lrn.handle([learn_pkt(), learn_pkt()])
        await lrn.flush()
        assert lrn.report().store_errors == 1 and lrn.report().pending == 2
        blocker.unlink()
        await lrn.handle([learn_pkt(at=5)])
        await lrn.flush()
    asyncio.run(go())
    (flow,) = late.flows()
    assert flow.count == 3
    books = lrn.report()
    assert (books.recorded, books.pending, books.dropped) == (3, 0, 0)


def test_run_drains_and_flushes_when_stopped(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    source = MemorySource()
    lrn = Learner(source, ByPort(), store, flush_every=3600)

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(lrn.run(stop))
        source.push(learn_pkt(), dataclasses.replace(learn_pkt(), dst="203.0.113.8"))
        await asyncio.sleep(0.05)
        stop.set()
        await task
    asyncio.run(go())
    assert {f.dst for f in store.flows()} == {"203.0.113.7", "203.0.113.8"}


def test_a_flush_cancelled_before_its_write_puts_the_flows_back(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    release = threading.Event()

    def slow_decide(flows: list[LearnedFlow]) -> list[str]:
        release.wait(5)
        return [""] * len(flows)

    lrn = learner(store, decide=slow_decide)

    async def go() -> None:
        await lrn.handle([learn_pkt(), learn_pkt()])
        flush = asyncio.create_task(lrn.flush())
        await asyncio.sleep(0.05)
        flush.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flush
        release.set()
        assert lrn.report().pending == 2  # not lost with the cancelled flush
        await lrn.flush()
    asyncio.run(go())
    assert [f.count for f in store.flows()] == [2]


class Flood:
    """A source that always has the next batch ready (a socket that never runs dry)."""

    def __init__(self, learner_of: list[Learner], batches: int) -> None:
        self.learner_of, self.batches = learner_of, batches
        self.flushed_meanwhile = False

    async def __aiter__(self) -> AsyncIterator[list[BlockedPacket]]:
        for i in range(self.batches):
            if self.learner_of and self.learner_of[0].books.recorded:
                self.flushed_meanwhile = True
            yield [learn_pkt(at=i)]


def test_a_flood_does_not_starve_the_flush(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    holder: list[Learner] = []
    flood = Flood(holder, 3000)
    lrn = Learner(flood, ByPort(), store, flush_every=0.001)
    holder.append(lrn)
    asyncio.run(lrn.run(asyncio.Event()))
    assert flood.flushed_meanwhile
    assert store.flows()[0].count == 3000


def test_names_from_outguards_resolver_join_the_passive_ones(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "e.db")
    lrn = learner(store, resolver_names=lambda dst: ("b.example.test",)
                  if dst == "203.0.113.7" else ())

    async def go() -> None:
        await lrn.handle([learn_pkt(), learn_pkt("203.0.113.9")])
        lrn.take_answers([answer("a.example.test", "203.0.113.7")])
        await lrn.flush()
    asyncio.run(go())
    got = {f.dst: f.names for f in store.flows()}
    assert got == {"203.0.113.7": ("a.example.test", "b.example.test"), "203.0.113.9": ()}
