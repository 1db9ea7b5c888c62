"""The pure NFLOG decoder: captured kernel datagrams, hand-built edge cases, and fuzzing.

The fixtures (fixtures/*.bin) are real datagrams captured by fixtures/capture.py; their .json
says what was sent (addresses, ports, uid), known without the decoder.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outguard.kernel.nflog_decode import (
    NFULA_GID,
    NFULA_IFINDEX_OUTDEV,
    NFULA_PACKET_HDR,
    NFULA_PAYLOAD,
    NFULA_PREFIX,
    NFULA_SEQ,
    NFULA_TIMESTAMP,
    NFULA_UID,
    PACKET_MSG,
    decode,
)

FIXTURES = Path(__file__).parent / "fixtures"
CASES = sorted(p.stem for p in FIXTURES.glob("*.bin"))
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


# --- a tiny encoder, the mirror of the decoder, for hand-built messages -----------------------

def nla(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def nlmsg(kind: int, body: bytes, seq: int = 0) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def ipv4(src: str, dst: str, proto: int, l4: bytes, frag: int = 0) -> bytes:
    return (struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0,
                        socket.inet_aton(src), socket.inet_aton(dst)) + l4)


def ipv6(src: str, dst: str, nexthdr: int, rest: bytes) -> bytes:
    return (struct.pack(">IHBB16s16s", 6 << 28, len(rest), nexthdr, 64,
                        socket.inet_pton(socket.AF_INET6, src),
                        socket.inet_pton(socket.AF_INET6, dst)) + rest)


def tcp(sport: int, dport: int, flags: int = 0x02) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 64240, 0, 0)


def udp(sport: int, dport: int) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8, 0)


def packet(payload: bytes | None, *, prefix: str | None = "og:deny:x", uid: int | None = 0,
           gid: int | None = 0, seq: int | None = None, hook: int = 3, family: int = 2,
           ifout: int | None = None, stamp: tuple[int, int] | None = None,
           mark: int | None = None) -> bytes:
    attrs = nla(NFULA_PACKET_HDR, struct.pack(">HBx", 0x0800, hook))
    if prefix is not None:
        attrs += nla(NFULA_PREFIX, prefix.encode() + b"\0")
    if mark is not None:
        attrs += nla(2, struct.pack(">I", mark))  # NFULA_MARK: the decoder ignores it
    if ifout is not None:
        attrs += nla(NFULA_IFINDEX_OUTDEV, struct.pack(">I", ifout))
    if uid is not None:
        attrs += nla(NFULA_UID, struct.pack(">I", uid))
    if gid is not None:
        attrs += nla(NFULA_GID, struct.pack(">I", gid))
    if seq is not None:
        attrs += nla(NFULA_SEQ, struct.pack(">I", seq))
    if stamp is not None:
        attrs += nla(NFULA_TIMESTAMP, struct.pack(">QQ", *stamp))
    if payload is not None:
        attrs += nla(NFULA_PAYLOAD, payload)
    return nlmsg(PACKET_MSG, struct.pack("=BBH", family, 0, socket.htons(0)) + attrs)


# --- captured kernel datagrams ----------------------------------------------------------------

def test_fixtures_exist() -> None:
    assert {"tcp4-syn", "tcp6-syn", "udp4", "udp6-dstopts", "tcp4-nobody-default"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_captured_datagram(case: str) -> None:
    want = json.loads((FIXTURES / f"{case}.json").read_text())
    batch = decode((FIXTURES / f"{case}.bin").read_bytes(), now=NOW)
    assert batch.malformed == [] and batch.errors == [] and batch.seqs == [0]
    (pkt,) = batch.packets
    got = {k: getattr(pkt, k) for k in want}
    assert got == want
    assert pkt.time == NOW  # locally sent packets carry no kernel timestamp
    assert pkt.hook == "output" and pkt.ifindex_out and pkt.ifindex_out > 0
    assert (pkt.tcp_flags == 0x02) == (pkt.proto == "tcp")


def test_one_datagram_many_messages() -> None:
    data = b"".join((FIXTURES / f"{c}.bin").read_bytes() for c in CASES)
    batch = decode(bytearray(data) + bytearray(100), nbytes=len(data), now=NOW)
    assert [p.dport for p in batch.packets] == [
        json.loads((FIXTURES / f"{c}.json").read_text())["dport"] for c in CASES]
    assert batch.malformed == []


# --- hand-built edge cases ----------------------------------------------------------------------

def test_kernel_timestamp_wins_over_receive_time() -> None:
    pkt = decode(packet(ipv4("192.0.2.2", "198.51.100.1", 6, tcp(1, 2)),
                        stamp=(1_700_000_000, 250_000)), now=NOW).packets[0]
    assert pkt.time == datetime.fromtimestamp(1_700_000_000.25, UTC)


@pytest.mark.parametrize(("payload", "proto", "ports"), [
    (ipv4("192.0.2.2", "198.51.100.1", 1, bytes([8, 0, 0, 0])), "icmp", (None, None)),
    (ipv4("192.0.2.2", "198.51.100.1", 47, b"gre!"), "other:47", (None, None)),
    (ipv4("192.0.2.2", "198.51.100.1", 17, udp(5, 6), frag=0x00B9), "udp", (None, None)),
    (ipv4("192.0.2.2", "198.51.100.1", 17, udp(5, 6), frag=0x2000), "udp", (5, 6)),  # MF, first
    (ipv4("192.0.2.2", "198.51.100.1", 6, b"\x00\x07"), "tcp", (None, None)),  # truncated L4
    (ipv6("2001:db8::2", "2001:db8::1", 58, bytes([128, 0, 0, 0])), "icmpv6", (None, None)),
    (ipv6("2001:db8::2", "2001:db8::1", 0, bytes([6, 0, 1, 4, 0, 0, 0, 0]) + tcp(7, 8)),
     "tcp", (7, 8)),
    (ipv6("2001:db8::2", "2001:db8::1", 44, bytes([17, 0, 0, 0x08, 0, 0, 0, 1]) + udp(7, 8)),
     "udp", (None, None)),  # a non-first fragment: no ports
    (ipv6("2001:db8::2", "2001:db8::1", 44, bytes([17, 0, 0, 0x01, 0, 0, 0, 1]) + udp(7, 8)),
     "udp", (7, 8)),  # the first fragment carries them
    (ipv6("2001:db8::2", "2001:db8::1", 51, bytes([132, 1, 0, 0] + [0] * 8) + udp(9, 10)),
     "sctp", (9, 10)),
])
def test_transport_edge_cases(payload: bytes, proto: str, ports: tuple[int | None, ...]) -> None:
    batch = decode(packet(payload), now=NOW)
    assert batch.malformed == []
    (pkt,) = batch.packets
    assert (pkt.proto, (pkt.sport, pkt.dport)) == (proto, ports)
    # the kernel's own layout takes the fast path; one more attribute forces the general loop:
    # both must agree on every field
    fast = decode(packet(payload, ifout=2, seq=5), now=NOW)
    slow = decode(packet(payload, ifout=2, seq=5, mark=1), now=NOW)
    assert fast.packets == slow.packets and fast.seqs == slow.seqs == [5]
    assert fast.packets[0].proto == proto and (fast.packets[0].sport, fast.packets[0].dport) == ports


@pytest.mark.parametrize(("data", "reason"), [
    (packet(None), "without payload"),
    (packet(b"\x50" + bytes(30)), "not IPv4 or IPv6"),
    (packet(b""), "not IPv4 or IPv6"),
    (packet(ipv4("192.0.2.2", "198.51.100.1", 6, tcp(1, 2))[:15]), "IPv4 header truncated"),
    (packet(b"\x44" + ipv4("192.0.2.2", "198.51.100.1", 6, b"")[1:]), "IPv4 header length 16"),
    (packet(ipv6("2001:db8::2", "2001:db8::1", 6, b"")[:39]), "IPv6 header truncated"),
    (struct.pack("=IHHII", 8, PACKET_MSG, 0, 0, 0) + bytes(8), "netlink message length 8"),
    (struct.pack("=IHHII", 400, PACKET_MSG, 0, 0, 0) + bytes(8), "netlink message length 400"),
    (nlmsg(PACKET_MSG, b"\x02"), "without its nfgenmsg"),
    (nlmsg(0x0999, b"1234"), "unexpected netlink message type 0x999"),
])
def test_malformed_is_named_not_raised(data: bytes, reason: str) -> None:
    batch = decode(data, now=NOW)
    assert batch.packets == []
    assert len(batch.malformed) == 1 and reason in batch.malformed[0], batch.malformed


def test_errors_overrun_and_seq_of_an_unreadable_packet() -> None:
    data = (nlmsg(2, struct.pack("=i", -1) + bytes(16)) + nlmsg(2, struct.pack("=i", 0))
            + nlmsg(4, b"") + packet(b"junk", seq=41)
            + packet(ipv4("192.0.2.2", "198.51.100.1", 17, udp(1, 2)), seq=42))
    batch = decode(data, now=NOW)
    assert batch.errors == [1, 0] and batch.overrun
    assert batch.seqs == [41, 42] and len(batch.packets) == 1 and len(batch.malformed) == 1


def test_prefix_uid_hook_variants() -> None:
    payload = ipv4("192.0.2.2", "198.51.100.1", 17, udp(1, 2))
    (a,) = decode(packet(payload, prefix=None, uid=None, gid=None, hook=2)).packets
    assert (a.prefix, a.uid, a.gid, a.hook, a.rule) == ("", None, None, "forward", "")
    (b,) = decode(packet(payload, prefix="og:deny:r\xe9\0garbage", hook=9)).packets
    assert (b.prefix, b.rule, b.hook) == ("og:deny:r\xe9", "deny:r\xe9", "hook:9")


# --- fuzzing --------------------------------------------------------------------------------------

def _check(batch_data: bytes) -> None:
    batch = decode(batch_data, now=NOW)
    for pkt in batch.packets:
        assert pkt.family in (4, 6)
        ipaddress.ip_address(pkt.src)
        ipaddress.ip_address(pkt.dst)
        assert pkt.sport is None or 0 <= pkt.sport <= 0xFFFF
    assert all(isinstance(r, str) and r for r in batch.malformed)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_never_raise(data: bytes) -> None:
    _check(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CASES), st.data())
def test_fuzz_mutated_captures_never_raise(case: str, data: st.DataObject) -> None:
    raw = bytearray((FIXTURES / f"{case}.bin").read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    _check(bytes(raw[:cut]))
    _check(bytes(raw))


@settings(max_examples=300, deadline=None)
@given(v6=st.booleans(), a=st.integers(0, 2**32 - 1), b=st.integers(0, 2**128 - 1),
       sport=st.integers(0, 65535), dport=st.integers(0, 65535), is_tcp=st.booleans(),
       uid=st.integers(0, 2**32 - 1), seq=st.integers(0, 2**32 - 1),
       prefix=st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
                      max_size=60))
def test_fuzz_roundtrip(v6: bool, a: int, b: int, sport: int, dport: int, is_tcp: bool,
                        uid: int, seq: int, prefix: str) -> None:
    l4 = tcp(sport, dport) if is_tcp else udp(sport, dport)
    if v6:
        src, dst = str(ipaddress.IPv6Address(b)), str(ipaddress.IPv6Address(b ^ a))
        payload = ipv6(src, dst, 6 if is_tcp else 17, l4)
    else:
        src, dst = str(ipaddress.IPv4Address(a)), str(ipaddress.IPv4Address(b & 0xFFFFFFFF))
        payload = ipv4(src, dst, 6 if is_tcp else 17, l4)
    batch = decode(packet(payload, prefix=prefix, uid=uid, gid=uid ^ 1, seq=seq, ifout=3),
                   now=NOW)
    (pkt,) = batch.packets
    assert batch.seqs == [seq]
    assert (pkt.family, pkt.src, pkt.dst, pkt.sport, pkt.dport) == (6 if v6 else 4, src, dst,
                                                                     sport, dport)
    assert (pkt.proto, pkt.uid, pkt.gid, pkt.prefix, pkt.ifindex_out) == (
        "tcp" if is_tcp else "udp", uid, uid ^ 1, prefix, 3)


@pytest.mark.parametrize("addr", ["::", "::1", "::1:0", "::0.1.0.0", "::ffff:192.0.2.1",
                                  "::ffff:0:192.0.2.1", "1:0:0:2:0:0:0:3", "1:0:0:2::3",
                                  "2001:db8::1", "fe80::1", "64:ff9b::192.0.2.1"])
def test_ipv6_spelling_is_ipaddress_spelling(addr: str) -> None:
    """One spelling per address (the fuzzer found glibc's "::0.1.0.0" for "::1:0")."""
    (pkt,) = decode(packet(ipv6(addr, addr, 17, udp(1, 2)))).packets
    assert pkt.src == pkt.dst == str(ipaddress.IPv6Address(addr))
