"""addresses: AddrSet membership and coverage (used by decide and lint)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outguard.policy.addresses import AddrSet, net_bounds, parse_ip
from outguard.policy.targets import parse_target


def _set(*texts: str) -> AddrSet:
    return AddrSet.of(parse_target(t) for t in texts)


def _has(s: AddrSet, text: str) -> bool:
    parsed = parse_ip(text)
    assert parsed is not None
    return s.contains(*parsed)


def test_parse_ip() -> None:
    assert parse_ip("192.0.2.1") == (0xC0000201, 4)
    assert parse_ip("::1") == (1, 6)
    assert parse_ip("example.test") is None
    assert parse_ip("192.0.2.0/24") is None


def test_contains() -> None:
    s = _set("203.0.113.7", "198.51.100.0/25", "2001:db8:bad::/48", "0.0.0.0/32")
    assert _has(s, "203.0.113.7") and not _has(s, "203.0.113.8")
    assert _has(s, "198.51.100.0") and _has(s, "198.51.100.127")
    assert not _has(s, "198.51.100.128")
    assert _has(s, "2001:db8:bad:ffff::1") and not _has(s, "2001:db8:bae::")
    assert _has(s, "0.0.0.0")
    assert not _has(s, "::ffff:203.0.113.7"), "IPv4-mapped IPv6 is another address"


def test_everything() -> None:
    s = _set("0.0.0.0/0")
    assert _has(s, "255.255.255.255") and not _has(s, "::1")
    assert _has(_set("::/0"), "2001:db8::1")


def test_hosts_and_lists_are_not_addresses() -> None:
    assert not _set("example.test", "@x", "*.example.test")


def test_covers() -> None:
    outer = _set("203.0.113.0/24", "2001:db8::/32", "192.0.2.1")
    assert outer.covers(_set("203.0.113.0/25", "203.0.113.9", "2001:db8:1::/48", "192.0.2.1"))
    assert not outer.covers(_set("203.0.112.0/23"))
    assert not outer.covers(_set("192.0.2.0/31")), "one address does not cover a prefix of two"
    assert outer.covers(AddrSet())
    assert _set("0.0.0.0/0").covers(_set("10.0.0.0/8", "192.0.2.1"))


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=4), st.integers(0, 32), st.ip_addresses(v=4))
def test_contains_agrees_with_ipaddress(base: ipaddress.IPv4Address, length: int,
                                        probe: ipaddress.IPv4Address) -> None:
    net = ipaddress.ip_network(f"{base}/{length}", strict=False)
    s = _set(str(net) if length < 32 else str(net.network_address))
    assert s.contains(int(probe), 4) == (probe in net)
    first, last = net_bounds(int(base), length, 4)
    assert (first, last) == (int(net.network_address), int(net.broadcast_address))


@pytest.mark.parametrize(("text", "version"), [("203.0.113.5", 4), ("2001:db8::5", 6)])
def test_add_text(text: str, version: int) -> None:
    s = AddrSet()
    s.add_text(text)
    s.add_text("not an address")
    assert bool(s) and s.contains(int(ipaddress.ip_address(text)), version)
