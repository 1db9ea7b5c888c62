"""The hand-written wire layer against dnspython: queries, answers rebuilt per client, errors."""

from __future__ import annotations

import contextlib

import dns.flags
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outguard.dns.answers import addresses
from outguard.dns.wire import (
    Answer,
    WireError,
    build_query,
    error_reply,
    formerr_for,
    parse_query,
    response_matches,
)
from tests.dns.helpers import answer, parse, query


def test_parse_query() -> None:
    q = parse_query(query("Api.Example.TEST", "AAAA", edns=4096, do=True))
    assert (q.qname, q.qtype, q.qclass, q.edns, q.do, q.txid) == (
        "api.example.test", 28, 1, 4096, True, 0x1234)
    plain = parse_query(query("a.test"))
    assert plain.edns is None and plain.udp_limit() == 512


@pytest.mark.parametrize("data", [b"", b"\x00" * 11, query("a.test")[:-2],
                                  answer(query("a.test"), [])])
def test_parse_query_rejects(data: bytes) -> None:
    with pytest.raises(WireError):
        parse_query(data)


def test_reply_keeps_client_id_case_and_counts_ttl_down() -> None:
    upstream = answer(query("api.example.test"), [
        ("api.example.test.", 60, "CNAME", "edge.cdn.test."),
        ("edge.cdn.test.", 30, "A", "198.51.100.7"),
    ])
    cached = Answer.parse(upstream)
    assert cached.ttl == 30
    client = parse_query(query("API.example.test", edns=1232, txid=7))
    reply = parse(cached.reply(client, age=10, limit=client.udp_limit()))
    assert reply.id == 7
    assert str(reply.question[0].name) == "API.example.test."
    assert [rr.ttl for rr in reply.answer] == [50, 20]
    assert reply.edns == 0 and reply.payload == 1232


def test_reply_without_edns_drops_opt_and_truncates() -> None:
    big = [("big.test.", 60, "A", f"198.51.100.{i}") for i in range(1, 60)]
    upstream = answer(query("big.test", edns=1232), big)
    cached = Answer.parse(upstream)
    plain = parse_query(query("big.test"))
    reply = parse(cached.reply(plain, 0, plain.udp_limit()))
    assert reply.flags & dns.flags.TC and not reply.answer and reply.edns < 0
    full = parse(cached.reply(plain, 0, 65535))  # over TCP
    assert len(full.answer[0]) == 59 and full.edns < 0


def test_error_and_formerr() -> None:
    q = parse_query(query("x.test", edns=1232))
    r = parse(error_reply(q, 5))
    assert r.rcode() == dns.rcode.REFUSED and r.edns == 0 and r.id == 0x1234
    bad = formerr_for(b"\x12\x34\x01\x00" + b"\x00" * 8 + b"\xff")
    assert bad is not None and parse(bad).rcode() == dns.rcode.FORMERR
    assert formerr_for(answer(query("x.test"), [])) is None  # never answer an answer


def test_upstream_query_and_match() -> None:
    q = parse_query(query("x.test", edns=512, do=True))
    out = parse(build_query(q, 99))
    assert out.id == 99 and out.payload == 1232 and out.flags & dns.flags.RD
    resp = answer(build_query(q, 99), [])
    assert response_matches(resp, 99, q.question)
    assert not response_matches(resp, 98, q.question)


def test_addresses_follow_cname_chain_only() -> None:
    wire = answer(query("api.example.test"), [
        ("api.example.test.", 300, "CNAME", "b.test."),
        ("b.test.", 20, "CNAME", "c.test."),
        ("c.test.", 600, "A", "198.51.100.1"),
        ("c.test.", 600, "AAAA", "2001:db8::1"),
        ("unrelated.test.", 600, "A", "203.0.113.66"),
    ])
    got = addresses(wire, "api.example.test")
    assert got.v4 == {"198.51.100.1": 20} and got.v6 == {"2001:db8::1": 20}
    assert got.chain == ("api.example.test", "b.test", "c.test")


def test_cname_loop_ends() -> None:
    wire = answer(query("a.test"), [("a.test.", 60, "CNAME", "b.test."),
                                    ("b.test.", 60, "CNAME", "a.test.")])
    assert addresses(wire, "a.test").v4 == {}


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_parsers_raise_only_their_errors(data: bytes) -> None:
    for fn in (parse_query, Answer.parse):
        with contextlib.suppress(WireError):
            fn(data)
    with contextlib.suppress(ValueError):
        addresses(data, "a.test")
    formerr_for(data)


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=1, max_size=80), st.integers(0, 200))
def test_fuzz_mutated_queries(noise: bytes, at: int) -> None:
    base = bytearray(query("api.example.test", edns=1232))
    at = at % len(base)
    data = bytes(base[:at] + noise + base[at + len(noise):])
    try:
        q = parse_query(data)
    except WireError:
        return
    Answer.parse(answer(query("api.example.test"), [("api.example.test.", 5, "A", "192.0.2.9")]))
    error_reply(q, 5)
