"""Passive DNS: answers read from copied packets, remembered for minutes, bounded."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import dns.message
import dns.rrset

from outguard.kernel.nflog_payload import Payload
from outguard.monitor.passivedns import NameCache, answer_of

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def response(name: str, *addrs: str, cname: str | None = None, ttl: int = 30) -> bytes:
    query = dns.message.make_query(name, "A")
    msg = dns.message.make_response(query)
    owner = name
    if cname is not None:
        msg.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "CNAME", cname + "."))
        owner = cname
    for addr in addrs:
        kind = "AAAA" if ":" in addr else "A"
        msg.answer.append(dns.rrset.from_text(owner + ".", ttl, "IN", kind, addr))
    return msg.to_wire()


def udp(data: bytes) -> Payload:
    return Payload(NOW, "udp", "198.51.100.53", "192.0.2.2", 53, 40000, data)


def tcp(data: bytes) -> Payload:
    return Payload(NOW, "tcp", "198.51.100.53", "192.0.2.2", 53, 40000, data)


def test_an_answer_gives_addresses_and_its_cname_chain() -> None:
    got = answer_of(udp(response("www.example.test", "203.0.113.5", "2001:db8::5",
                                 cname="edge.cdn.example")))
    assert got is not None
    assert set(got.v4) == {"203.0.113.5"} and set(got.v6) == {"2001:db8::5"}
    assert got.chain == ("www.example.test", "edge.cdn.example")


def test_tcp_answers_need_their_whole_message() -> None:
    wire = response("api.example.test", "198.51.100.7")
    framed = struct.pack(">H", len(wire)) + wire
    assert answer_of(tcp(framed)) is not None
    assert answer_of(tcp(framed[:-3])) is None  # split over segments: not read
    assert answer_of(tcp(b"")) is None  # a bare ACK


def test_queries_junk_and_empty_answers_are_not_answers() -> None:
    assert answer_of(udp(dns.message.make_query("x.example.test", "A").to_wire())) is None
    assert answer_of(udp(b"\x00\x01\x80" + b"\xff" * 20)) is None
    assert answer_of(udp(response("nx.example.test"))) is None
    assert answer_of(udp(b"")) is None


def test_the_cache_remembers_for_minutes_beyond_the_ttl() -> None:
    cache = NameCache(window=900)
    cache.take([udp(response("api.example.test", "198.51.100.7", ttl=5)),
                udp(b"junk")], now=1000.0)
    assert (cache.answers, cache.ignored) == (1, 1)
    assert cache.names_of("198.51.100.7", 1000.0 + 600) == ("api.example.test",)  # Java's cache
    assert cache.names_of("198.51.100.7", 1000.0 + 901) == ()
    long = NameCache(window=60)
    long.take([udp(response("slow.example.test", "198.51.100.8", ttl=3600))], now=0.0)
    assert long.names_of("198.51.100.8", 3000.0) == ("slow.example.test",)
    long.prune(4000.0)
    assert len(long) == 0


def test_the_cache_is_bounded() -> None:
    cache = NameCache(max_addresses=3, max_names=2)
    for i in range(5):
        cache.take([udp(response(f"n{i}.example.test", f"203.0.113.{i}"))], now=float(i))
    assert len(cache) == 3 and cache.names_of("203.0.113.0", 5.0) == ()
    for i in range(4):
        cache.take([udp(response(f"alias{i}.example.test", "203.0.113.4"))], now=10.0 + i)
    assert cache.names_of("203.0.113.4", 20.0) == ("alias2.example.test", "alias3.example.test")
