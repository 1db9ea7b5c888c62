"""The resolver's decisions, without sockets: what is asked upstream, what reaches the sets, in
which order, and what the client gets. Upstream answers are real messages built by dnspython."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.rcode
from hypothesis import given, settings
from hypothesis import strategies as st

from outguard.dns import cache as dcache
from outguard.dns.events import MemoryEvents
from outguard.dns.resolver import Resolver
from outguard.dns.wire import Query, build_query
from outguard.policy.load import load_text
from outguard.ruleset.lower import lower
from outguard.ruleset.names import NamePolicy
from tests.dns.helpers import answer, parse, query

POLICY = """
version: 1
mode: {mode}
dns: {{upstreams: ["192.0.2.53"], min_ttl: 300, grace: 60, unlisted: {unlisted}}}
allow:
  - name: api
    to: [api.example.test, "*.cdn.example.test"]
"""


class World:
    def __init__(self, mode: str = "enforce", unlisted: str = "refused",
                 records: dict[str, list[tuple[str, int, str, str]]] | None = None) -> None:
        self.rs = lower(load_text(POLICY.format(mode=mode, unlisted=unlisted)))
        self.asked: list[str] = []
        self.log: list[str] = []
        self.writes: list[list[tuple[str, str, int]]] = []
        self.now = 1000.0
        self.records = records or {
            "api.example.test": [("api.example.test.", 1, "A", "198.51.100.7"),
                                 ("api.example.test.", 1, "AAAA", "2001:db8::7")]}
        self.events = MemoryEvents()
        assert self.rs.dns is not None
        self.resolver = Resolver(self.rs.dns, NamePolicy.of(self.rs), ask=self.ask,
                                 write=self.write, events=self.events, clock=lambda: self.now)

    async def ask(self, q: Query) -> bytes:
        self.asked.append(q.qname)
        self.log.append("ask")
        wire = build_query(q, 1)
        want = {1: "A", 28: "AAAA"}.get(q.qtype)
        return answer(wire, [r for r in self.records.get(q.qname, []) if r[2] in (want, "CNAME")])

    async def write(self, items: list[tuple[str, str, int]]) -> None:
        self.log.append("write")
        self.writes.append(items)

    def run(self, data: bytes) -> bytes | None:
        async def go() -> bytes | None:
            reply = await self.resolver.handle(data, ("127.0.0.1", 5353))
            self.log.append("reply")
            return reply
        return asyncio.run(go())

    @property
    def base(self) -> str:
        base = self.rs.allow[0].fqdn_set
        assert base is not None
        return base


def test_allowed_name_is_in_the_set_before_the_answer() -> None:
    w = World()
    r = parse(w.run(query("api.example.test")) or b"")
    assert [str(rd) for rr in r.answer for rd in rr] == ["198.51.100.7"]
    assert w.log == ["ask", "write", "reply"]
    assert w.writes == [[(w.base + "_4", "198.51.100.7", 360)]]
    aaaa = w.run(query("api.example.test", "AAAA"))
    assert aaaa is not None
    assert w.writes[-1] == [(w.base + "_6", "2001:db8::7", 360)]


def test_cache_hit_needs_no_write_while_the_set_entry_is_long_enough() -> None:
    w = World(records={"api.example.test": [("api.example.test.", 100, "A", "198.51.100.7")]})
    w.run(query("api.example.test"))
    w.now += 50
    assert w.resolver.fast(query("api.example.test", txid=9)) is not None
    assert len(w.asked) == 1 and len(w.writes) == 1
    w.now += 9  # the entry was written for 300 + 60 s: 301 s left, more than min_ttl
    assert w.resolver.fast(query("api.example.test")) is not None
    w.now += 2  # 299 s left: less than a client may now keep the address, so rewrite it
    assert w.resolver.fast(query("api.example.test")) is None


def test_cache_hit_refreshes_a_set_entry_about_to_expire() -> None:
    w = World(records={"api.example.test": [("api.example.test.", 3600, "A", "198.51.100.7")]})
    w.run(query("api.example.test"))
    assert w.writes[0][0][2] == 3660
    w.now += 3400  # 260 s left in the set, the client would get TTL 200 and min_ttl is 300
    assert w.resolver.fast(query("api.example.test")) is None  # needs the slow path
    reply = parse(w.run(query("api.example.test")) or b"")
    assert reply.answer[0].ttl == 200
    assert len(w.asked) == 1 and w.writes[-1] == [(w.base + "_4", "198.51.100.7", 360)]


def test_unlisted_name_is_never_asked_upstream() -> None:
    w = World()
    r = parse(w.run(query("exfil-data.evil.test")) or b"")
    assert r.rcode() == dns.rcode.REFUSED
    assert w.asked == [] and w.writes == []
    (event,) = w.events.events
    assert (event.action, event.qname, event.rule, event.client) == (
        "blocked", "exfil-data.evil.test", "default", "127.0.0.1:5353")


def test_unlisted_nxdomain() -> None:
    w = World(unlisted="nxdomain")
    assert parse(w.run(query("x.evil.test")) or b"").rcode() == dns.rcode.NXDOMAIN


def test_audit_resolves_and_records() -> None:
    w = World(mode="audit", records={"x.evil.test": [("x.evil.test.", 60, "A", "203.0.113.9")]})
    r = parse(w.run(query("x.evil.test")) or b"")
    assert r.rcode() == dns.rcode.NOERROR and w.asked == ["x.evil.test"]
    assert w.writes == []  # no rule names it: no set to fill
    assert [e.action for e in w.events.events] == ["audit"]


def test_concurrent_queries_share_one_upstream_query() -> None:
    w = World()

    async def go() -> list[bytes | None]:
        return await asyncio.gather(*(w.resolver.handle(query("api.example.test", txid=i),
                                                        ("127.0.0.1", i)) for i in range(20)))
    replies = asyncio.run(go())
    assert len(w.asked) == 1
    assert sorted(parse(r or b"").id for r in replies) == list(range(20))


def test_failed_set_write_means_servfail_not_an_answer() -> None:
    w = World()

    async def broken(items: list[tuple[str, str, int]]) -> None:
        from outguard.errors import KernelError
        raise KernelError("no such set")
    w.resolver.write = broken
    r = parse(w.run(query("api.example.test")) or b"")
    assert r.rcode() == dns.rcode.SERVFAIL and not r.answer


def test_persisted_cache_survives_a_restart(tmp_path: Path) -> None:
    w = World(records={"api.example.test": [("api.example.test.", 100, "A", "198.51.100.7")]})
    w.run(query("api.example.test"))
    path = tmp_path / "cache.json"
    dcache.save(path, dcache.snapshot(w.resolver.cache, w.resolver.tracker, w.now))
    cache, tracker = dcache.load(path, w.now + 10)
    w2 = World()
    w2.now = w.now + 10
    w2.resolver.cache, w2.resolver.tracker = cache, tracker
    reply = w2.resolver.fast(query("api.example.test"))
    assert reply is not None and parse(reply).answer[0].ttl == 90
    assert w2.asked == [] and w2.writes == []
    (path.parent / "junk.json").write_text("{not json")
    assert not dcache.load(path.parent / "junk.json", 0)[0].entries


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_client_messages_never_crash(data: bytes) -> None:
    w = World()
    w.run(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_upstream_answers_never_crash(data: bytes) -> None:
    w = World()

    async def garbage(q: Query) -> bytes:
        return data
    w.resolver.ask = garbage
    reply = w.run(query("api.example.test"))
    assert reply is not None
    parse(reply)  # whatever came from upstream, the client gets a well-formed message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 40), st.integers(0, 0xFFFF), st.booleans()),
                min_size=1, max_size=30))
def test_hot_cache_replies_are_the_replies_built_from_the_cache(
        steps: list[tuple[float, int, bool]]) -> None:
    """The bytes-keyed fast path gives exactly what parsing + building would, at every moment
    (TTLs counting down, the set entry needing a rewrite), with the client's id patched in."""
    w = World(records={"api.example.test": [("api.example.test.", 100, "A", "198.51.100.7"),
                                            ("api.example.test.", 100, "AAAA", "2001:db8::7")]})
    w.run(query("api.example.test", edns=1232))
    for advance, txid, edns in steps:
        w.now += advance
        q = query("api.example.test", edns=1232 if edns else None, txid=txid)
        expected, _until = w.resolver._fast_reply(q, w.now)
        assert w.resolver.fast(q) == expected
        if expected is None:
            w.run(q)  # what the listener does: the slow path (a write, or a new upstream query)


def test_hot_cache_is_dropped_with_a_new_policy() -> None:
    w = World(records={"api.example.test": [("api.example.test.", 100, "A", "198.51.100.7")]})
    w.run(query("api.example.test"))
    assert w.resolver.fast(query("api.example.test")) is not None
    blocked = lower(load_text(POLICY.format(mode="enforce", unlisted="refused").replace(
        "api.example.test", "other.example.test")))
    assert blocked.dns is not None
    w.resolver.update(blocked.dns, NamePolicy.of(blocked))
    assert w.resolver.fast(query("api.example.test")) is None
    assert parse(w.run(query("api.example.test")) or b"").rcode() == dns.rcode.REFUSED


def test_hot_cache_ends_when_the_set_entry_needs_a_rewrite_within_a_second() -> None:
    # TTL 400, min_ttl 300, grace 60: from age 100 on, an entry written at t needs a rewrite
    # after t + 60
    w = World(records={"api.example.test": [("api.example.test.", 400, "A", "198.51.100.7")]})
    w.run(query("api.example.test"))  # stored and written at 1000.0, kept until 1460
    w.now = 1160.5
    assert w.resolver.fast(query("api.example.test")) is None
    w.run(query("api.example.test"))  # rewritten at 1160.5 for 360 s: enough until 1220.5
    w.now = 1220.2  # age 220 until 1221.0, but the set entry suffices only until 1220.5
    assert w.resolver.fast(query("api.example.test")) is not None
    w.now = 1220.7
    assert w.resolver.fast(query("api.example.test")) is None
    assert len(w.writes) == 2 and len(w.asked) == 1
