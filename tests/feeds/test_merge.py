"""Sort-and-merge against ipaddress on random data; canonical text round trip; deltas."""

from __future__ import annotations

import ipaddress
import random

import pytest

from outguard.feeds.merge import MAGIC, FeedSet, diff_ranges, diff_singles, diff_v4, diff_v4_keys, prefixes
from outguard.feeds.parse import parse
from outguard.feeds.store import read_canonical
from outguard.feeds.v4arrays import range_keys, to_u32
from outguard.ruleset.intervals import pack_ints


def _random_feed(seed: int) -> str:
    rnd = random.Random(seed)
    lines = []
    for _ in range(400):
        base = rnd.randrange(0, 1 << 16) << 16
        if rnd.random() < 0.5:
            lines.append(str(ipaddress.ip_address(base | rnd.randrange(1 << 16))))
        else:
            n = rnd.randrange(12, 30)
            lines.append(str(ipaddress.ip_network((base, n), strict=False)))
    lines += ["2001:db8::1", "2001:db8:1::/48", "2001:db8:1:2::/64"]
    return "\n".join(lines)


def test_merge_matches_collapse_addresses() -> None:
    for seed in range(5):
        text = _random_feed(seed)
        content = FeedSet.of(parse(text.encode(), "plain"))
        nets = [ipaddress.ip_network(line, strict=False) for line in text.splitlines()]
        expected = {4: list(ipaddress.collapse_addresses(n for n in nets if n.version == 4)),
                    6: list(ipaddress.collapse_addresses(n for n in nets if n.version == 6))}
        for version in (4, 6):
            got = [ipaddress.ip_network(p) for a in content.singles(version)
                   for p in prefixes(a, a, version)]
            got += [ipaddress.ip_network(p) for a, b in content.ranges(version)
                    for p in prefixes(a, b, version)]
            assert list(ipaddress.collapse_addresses(got)) == expected[version]
            # singles never overlap a range: they are the hash set, the ranges the interval set
            for a in content.singles(version):
                assert not any(lo <= a <= hi for lo, hi in content.ranges(version))


def test_canonical_round_trip_and_contains() -> None:
    content = FeedSet.of(parse(_random_feed(7).encode() + b"\n", "plain"))
    content.domains = ["bad-1.example", "x.example"]
    back = read_canonical("\n".join(content.lines()))
    assert back == content and back.digest() == content.digest()
    addr = content.a4[3]
    assert content.contains(addr, 4) and content.contains(content.r4[0][1], 4)
    outside = content.r4[0][0] - 1  # ranges are merged: the address before one is in none
    assert not content.contains(outside, 4) or outside in content.a4


def test_prefixes_cover_a_range_exactly() -> None:
    assert prefixes(1, 6, 4) == ["0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/31", "0.0.0.6/32"]
    assert prefixes(0, (1 << 32) - 1, 4) == ["0.0.0.0/0"]


def test_deltas() -> None:
    d = diff_singles([1, 2, 3], [2, 3, 4])
    assert (d.add, d.delete) == ([4], [1])
    r = diff_ranges([(0, 9), (20, 29)], [(0, 9), (20, 39)])
    assert (r.add, r.delete) == ([(20, 39)], [(20, 29)])
    assert not diff_singles([5], [5])


def _lists_of(content: FeedSet) -> FeedSet:
    """The same content, built from Python lists (no arrays yet)."""
    return FeedSet(list(content.a4), list(content.r4), list(content.a6), list(content.r6),
                   list(content.domains))


def test_array_backed_content_equals_the_list_built_one() -> None:
    arrays = FeedSet.of(parse(_random_feed(3).encode(), "plain"))  # IPv4 held as arrays
    lists = _lists_of(arrays)
    assert arrays == lists and arrays.kinds == lists.kinds and arrays.count == lists.count
    assert arrays.to_bytes() == lists.to_bytes() and arrays.digest() == lists.digest()
    back = FeedSet.from_bytes(lists.to_bytes())
    assert back == lists and back.a4 == lists.a4 and back.r4 == lists.r4
    assert all(type(x) is int for x in back.a4) and all(type(a) is int for a, _b in back.r4)
    for version in (4, 6):
        for interval in (False, True):
            items = lists.ranges(version) if interval else lists.singles(version)
            flat = [x for r in items for x in r] if interval else items
            assert arrays.packed(version, interval) == pack_ints(flat, version)
    first, last = lists.r4[0]
    for value in (lists.a4[0], first, last, last + 1, first - 1, -1, 1 << 32):
        assert arrays.contains(value, 4) == (value in lists.a4 or any(
            a <= value <= b for a, b in lists.r4))


def test_setting_one_ipv4_list_keeps_the_other() -> None:
    content = FeedSet.of(parse(b"192.0.2.1\n198.51.100.0/24\n", "plain"))
    content.a4 = [0xC0000202]
    assert content.r4 == [(0xC6336400, 0xC63364FF)] and content.kinds["4a"] == 1
    content = FeedSet.of(parse(b"192.0.2.1\n198.51.100.0/24\n", "plain"))
    content.r4 = []
    assert content.a4 == [0xC0000201] and content.kinds == {"4a": 1, "4n": 0, "6a": 0, "6n": 0}
    assert content.packed(4, True) == b"" and content.packed(4, False) == bytes([192, 0, 2, 1])


def test_a_copy_shorter_than_its_counts_is_refused() -> None:
    data = FeedSet.of(parse(b"192.0.2.1\n192.0.2.9\n", "plain")).to_bytes()
    with pytest.raises(ValueError, match="shorter"):
        FeedSet.from_bytes(data[:-3])


def test_array_deltas_match_the_list_deltas() -> None:
    rnd = random.Random(5)
    old = sorted(rnd.sample(range(1 << 20), 500))
    new = sorted(set(old[50:]) | set(rnd.sample(range(1 << 20), 60)))
    want = diff_singles(old, new)
    got = diff_v4(to_u32(old), to_u32(new))
    assert (got.add, got.delete) == (want.add, want.delete)
    r_old, r_new = [(0, 9), (20, 29), (40, 49)], [(0, 9), (20, 39)]
    want_r = diff_ranges(r_old, r_new)
    got_r = diff_v4_keys(range_keys(r_old), range_keys(r_new))
    assert (got_r.add, got_r.delete) == (want_r.add, want_r.delete) == ([(20, 39)], [(20, 29), (40, 49)])


def test_a_copy_with_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        FeedSet.from_bytes(f"{MAGIC}-1 0 0 0\n".encode() + bytes(range(1, 9)))


def test_content_given_twice_is_refused_and_empty_lists_are_kept() -> None:
    with pytest.raises(TypeError):
        FeedSet([1], v4=(to_u32([]), to_u32([]), to_u32([])))
    given: list[int] = []
    assert FeedSet(given).a4 is given
    assert FeedSet([1 << 32]) != FeedSet()  # compared as lists: no OverflowError
