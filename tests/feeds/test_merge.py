"""Sort-and-merge against ipaddress on random data; canonical text round trip; deltas."""

from __future__ import annotations

import ipaddress
import random

from outguard.feeds.merge import FeedSet, diff_ranges, diff_singles, prefixes
from outguard.feeds.parse import parse
from outguard.feeds.store import read_canonical


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
