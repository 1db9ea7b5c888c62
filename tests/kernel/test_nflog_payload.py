"""The DNS tap's decoder on hand-built NFLOG messages: payloads out, losses and junk named."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from outguard.kernel.nflog_decode import NFULA_SEQ, NLMSG_OVERRUN
from outguard.kernel.nflog_payload import decode_payloads
from tests.kernel.test_nflog_decode import ipv4, ipv6, nla, nlmsg, packet

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def udp_with(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data


def tcp_with(sport: int, dport: int, data: bytes, options: bytes = b"") -> bytes:
    offset = (20 + len(options)) // 4
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, offset << 4, 0x18, 64240, 0, 0) \
        + options + data


def test_udp4_tcp6_payloads_and_sequence_numbers() -> None:
    a = packet(ipv4("198.51.100.53", "192.0.2.2", 17, udp_with(53, 40000, b"answer")),
               prefix="og:learn-dns", seq=0, hook=1)
    b = packet(ipv6("2001:db8::53", "2001:db8::2", 6,
                    tcp_with(53, 40001, b"\x00\x02hi", options=b"\x01" * 12)),
               prefix="og:learn-dns", seq=1, hook=1)
    got = decode_payloads(a + b, None, NOW)
    assert got.seqs == [0, 1] and not got.malformed
    first, second = got.packets
    assert (first.proto, first.src, first.dst, first.sport, first.dport, first.data) == \
        ("udp", "198.51.100.53", "192.0.2.2", 53, 40000, b"answer")
    assert (second.proto, second.src, second.sport, second.data) == \
        ("tcp", "2001:db8::53", 53, b"\x00\x02hi")
    assert first.time == NOW


def test_junk_is_named_losses_are_kept() -> None:
    frag = packet(ipv4("198.51.100.53", "192.0.2.2", 17, udp_with(53, 1, b"x"), frag=0x0010),
                  seq=5)
    icmp = packet(ipv4("198.51.100.53", "192.0.2.2", 1, b"\x00" * 8), seq=6)
    no_payload = packet(None, seq=7)
    short = packet(b"\x45\x00", seq=8)
    got = decode_payloads(frag + icmp + no_payload + short + nlmsg(NLMSG_OVERRUN, b""), None,
                          NOW)
    assert got.packets == [] and got.seqs == [5, 6, 7, 8] and got.overrun
    assert got.malformed == ["IPv4 fragment", "not TCP or UDP (protocol 1; IPv6 extension"
                             " headers are not followed)", "NFLOG packet without payload",
                             "IPv4 header truncated"]


def test_length_in_the_ip_header_bounds_the_payload() -> None:
    raw = bytearray(ipv4("198.51.100.53", "192.0.2.2", 17, udp_with(53, 1, b"abc")))
    got = decode_payloads(packet(bytes(raw) + b"padding"), None, NOW)
    assert got.packets[0].data == b"abc"


@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    decode_payloads(data, None, NOW)
    decode_payloads(packet(data, seq=1) + nla(NFULA_SEQ, b"\x00"), None, NOW)
