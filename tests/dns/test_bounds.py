"""What a flood of distinct names leaves behind: bounded memory, a bounded, rotated event log."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from outguard.dns.answers import Resolved
from outguard.dns.cache import AnswerCache, RecentNames, entry_of
from outguard.dns.events import FILE_NAME, DnsEvent, JsonlEvents, from_json, read_events
from tests.dns.helpers import answer, query
from tests.dns.test_resolver import World

N = 5_000


def _event(i: int) -> DnsEvent:
    return DnsEvent(time=1700000000.0 + i, client="127.0.0.1:40000", qname=f"n{i}.example.test",
                    qtype="A", action="resolved", rule="allow:api", reason="allow rule 'api'",
                    rcode="NOERROR", addresses=["198.51.100.7"])


def test_distinct_names_keep_the_resolver_bounded() -> None:
    """Every name under the wildcard resolves to the same address (a tunnel's endpoint, or a
    CDN): the names remembered for it, the cache and the verdicts stay bounded."""
    w = World()

    async def one_address(q: object) -> bytes:
        name = q.qname
        return answer(query(name), [(name + ".", 300, "A", "203.0.113.10")])
    w.resolver.ask = one_address  # type: ignore[assignment]
    w.resolver.cache.max_entries = 1000

    async def flood() -> None:
        for i in range(N):
            await w.resolver.handle(query(f"q{i}.cdn.example.test"), ("127.0.0.1", 5353))
    asyncio.run(flood())
    assert len(w.resolver.recent.by_addr["203.0.113.10"]) <= 32
    assert w.resolver.recent.names_of("203.0.113.10", w.now)[-1] == f"q{N - 1}.cdn.example.test"
    assert len(w.resolver.cache.entries) <= 1000
    assert len(w.resolver._verdicts) <= 50_001
    assert len(w.resolver.tracker.expiry) == 1


def test_answer_cache_is_bounded_in_bytes() -> None:
    cache = AnswerCache(max_entries=1000, max_bytes=10_000)
    for i in range(100):
        q = query(f"n{i}.example.test")
        wire = answer(q, [(f"n{i}.example.test.", 300, "TXT", '"' + "x" * 200 + '"')])
        cache.put((f"n{i}.example.test", 16, 1, False), entry_of(wire, f"n{i}.example.test", 0))
    assert cache.bytes <= 10_000
    assert cache.bytes == sum(len(e.wire) for e in cache.entries.values())
    assert ("n99.example.test", 16, 1, False) in cache.entries


def test_recent_names_keeps_the_latest_names_of_an_address() -> None:
    r = RecentNames(max_names=3)
    for i in range(10):
        r.record(Resolved({"203.0.113.10": 60}, {}, (f"n{i}.example.test",)), float(i))
    assert r.names_of("203.0.113.10", 10.0) == ("n7.example.test", "n8.example.test",
                                                 "n9.example.test")


def test_event_log_rotates_and_stays_bounded(tmp_path: Path) -> None:
    sink = JsonlEvents(tmp_path, max_bytes=20_000, keep=2)
    for i in range(1000):  # ~230 bytes a line: ~230 kB in all
        sink.append(_event(i))
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [FILE_NAME, f"{FILE_NAME}.1", f"{FILE_NAME}.2"]
    assert all(os.path.getsize(tmp_path / f) <= 20_000 for f in files)
    got = [e.qname for e in read_events(tmp_path)]
    assert got == [f"n{i}.example.test" for i in range(1000 - len(got), 1000)]  # oldest first
    assert len(got) > 150
    # a restart appends to the current file and keeps counting its size
    again = JsonlEvents(tmp_path, max_bytes=20_000, keep=2)
    assert again.size == os.path.getsize(tmp_path / FILE_NAME)
    again.close()


def test_events_from_elsewhere_are_checked_and_cut(tmp_path: Path) -> None:
    good = json.loads(json.dumps(_event(1).__dict__))
    assert from_json(good) == _event(1)
    long = from_json({**good, "reason": "x" * 100_000, "cmdline": ["a"] * 1000})
    assert len(long.reason) == 2048 and len(long.cmdline) == 64
    for bad in ({**good, "pid": "1"}, {**good, "action": "rm -rf"}, {**good, "time": True},
                {**good, "extra": 1}, [1, 2], {**good, "qname": 5}):
        try:
            from_json(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
