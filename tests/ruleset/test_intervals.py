"""intervals (merge, partition, net_to_range) and nftables.model.range_elem, by example and by property."""

from __future__ import annotations

import ipaddress
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outguard.nftables.model import range_elem
from outguard.ruleset.intervals import merge, net_to_range, partition

Range = tuple[int, int]


def _ranges(max_value: int = 200) -> st.SearchStrategy[list[Range]]:
    pair = st.tuples(st.integers(0, max_value), st.integers(0, max_value))
    return st.lists(pair.map(lambda p: (min(p), max(p))), max_size=12)


def _points(ranges: list[Range]) -> set[int]:
    return {x for lo, hi in ranges for x in range(lo, hi + 1)}


# --- merge ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("given_ranges", "expected"), [
    ([], []),
    ([(5, 5)], [(5, 5)]),
    ([(1, 3), (2, 6)], [(1, 6)]),                 # overlapping
    ([(1, 3), (4, 6)], [(1, 6)]),                 # adjacent: joined
    ([(1, 3), (5, 6)], [(1, 3), (5, 6)]),         # a gap of one stays
    ([(1, 10), (2, 3)], [(1, 10)]),               # nested
    ([(8, 9), (1, 2), (4, 5)], [(1, 2), (4, 5), (8, 9)]),  # unsorted input
    ([(3, 3), (3, 3)], [(3, 3)]),                 # duplicates
    ([(0, 2**32 - 1), (7, 8)], [(0, 2**32 - 1)]),
])
def test_merge_examples(given_ranges: list[Range], expected: list[Range]) -> None:
    assert merge(given_ranges) == expected


def test_merge_takes_any_iterable() -> None:
    assert merge(iter([(2, 2), (1, 1)])) == [(1, 2)]


@settings(max_examples=300, deadline=None)
@given(_ranges())
def test_merge_property(ranges: list[Range]) -> None:
    out = merge(ranges)
    assert _points(out) == _points(ranges)
    for (_lo1, hi1), (lo2, _hi2) in pairwise(out):
        assert hi1 + 1 < lo2, "sorted, disjoint and not adjacent"
    assert all(lo <= hi for lo, hi in out)


# --- partition --------------------------------------------------------------------------------

def test_partition_empty() -> None:
    assert partition([]) == []


def test_partition_overlapping_prefixes() -> None:
    # 203.0.113.0/24 (owner 3), /25 (owner 2), .32/27 (owner 1): as in the golden `overlap`
    base = 0xCB007100
    ranges = [(base, base + 255, 3), (base, base + 127, 2), (base + 32, base + 63, 1)]
    assert partition(ranges) == [
        (base, base + 31, (2, 3)),
        (base + 32, base + 63, (1, 2, 3)),
        (base + 64, base + 127, (2, 3)),
        (base + 128, base + 255, (3,)),
    ]


def test_partition_joins_adjacent_segments_with_the_same_owners() -> None:
    assert partition([(0, 9, 1), (10, 19, 1)]) == [(0, 19, (1,))]
    assert partition([(0, 9, 1), (10, 19, 2)]) == [(0, 9, (1,)), (10, 19, (2,))]


def test_partition_leaves_gaps_out() -> None:
    assert partition([(0, 1, 0), (5, 6, 0)]) == [(0, 1, (0,)), (5, 6, (0,))]


def test_partition_same_range_two_owners() -> None:
    assert partition([(4, 8, 7), (4, 8, 2)]) == [(4, 8, (2, 7))]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 4)),
                max_size=8))
def test_partition_property(raw: list[tuple[int, int, int]]) -> None:
    ranges = [(min(a, b), max(a, b), o) for a, b, o in raw]
    segments = partition(ranges)
    for (_lo1, hi1, _o1), (lo2, _hi2, _o2) in pairwise(segments):
        assert hi1 < lo2, "sorted and disjoint"
    for (_lo1, hi1, o1), (lo2, _hi2, o2) in pairwise(segments):
        assert not (hi1 + 1 == lo2 and o1 == o2), "adjacent equal segments are joined"
    covered = {}
    for lo, hi, owners in segments:
        assert owners == tuple(sorted(set(owners))) and owners
        for x in range(lo, hi + 1):
            covered[x] = owners
    for x in range(0, 62):
        expected = tuple(sorted({o for lo, hi, o in ranges if lo <= x <= hi}))
        assert covered.get(x, ()) == expected, x


# --- range_elem and net_to_range --------------------------------------------------------------

def _v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _v6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


@pytest.mark.parametrize(("first", "last", "version", "expected"), [
    (_v4("203.0.113.7"), _v4("203.0.113.7"), 4, "203.0.113.7"),
    (_v4("203.0.113.0"), _v4("203.0.113.255"), 4, {"prefix": {"addr": "203.0.113.0", "len": 24}}),
    (_v4("203.0.113.64"), _v4("203.0.113.191"), 4,
     {"range": ["203.0.113.64", "203.0.113.191"]}),   # as many addresses as a /25, not aligned
    (_v4("203.0.113.1"), _v4("203.0.113.2"), 4, {"range": ["203.0.113.1", "203.0.113.2"]}),
    (0, 2**32 - 1, 4, {"prefix": {"addr": "0.0.0.0", "len": 0}}),
    (_v6("2001:db8::1"), _v6("2001:db8::1"), 6, "2001:db8::1"),
    (_v6("2001:db8:bad::"), _v6("2001:db8:bad:ffff:ffff:ffff:ffff:ffff"), 6,
     {"prefix": {"addr": "2001:db8:bad::", "len": 48}}),
    (_v6("2001:db8:1:3::"), _v6("2001:db8:1:ffff:ffff:ffff:ffff:ffff"), 6,
     {"range": ["2001:db8:1:3::", "2001:db8:1:ffff:ffff:ffff:ffff:ffff"]}),
    (0, 2**128 - 1, 6, {"prefix": {"addr": "::", "len": 0}}),
])
def test_range_elem(first: int, last: int, version: int, expected: object) -> None:
    assert range_elem(first, last, version) == expected


@pytest.mark.parametrize(("text", "version"), [
    ("203.0.113.0/24", 4), ("0.0.0.0/0", 4), ("192.0.2.1/32", 4),
    ("2001:db8::/32", 6), ("::/0", 6), ("2001:db8::1/128", 6),
])
def test_net_to_range(text: str, version: int) -> None:
    net = ipaddress.ip_network(text)
    assert net_to_range(text, version) == (int(net.network_address), int(net.broadcast_address))


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=4), st.integers(0, 32))
def test_range_elem_of_a_prefix_is_that_prefix(address: ipaddress.IPv4Address, length: int) -> None:
    net = ipaddress.ip_network(f"{address}/{length}", strict=False)
    elem = range_elem(int(net.network_address), int(net.broadcast_address), 4)
    if length == 32:
        assert elem == str(net.network_address)
    else:
        assert elem == {"prefix": {"addr": str(net.network_address), "len": length}}


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_range_elem_covers_exactly_the_range(a: int, b: int) -> None:
    first, last = min(a, b), max(a, b)
    elem = range_elem(first, last, 4)
    if isinstance(elem, str):
        assert first == last == _v4(elem)
    elif "prefix" in elem:
        net = ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}")
        assert (int(net.network_address), int(net.broadcast_address)) == (first, last)
    else:
        assert [_v4(t) for t in elem["range"]] == [first, last]
