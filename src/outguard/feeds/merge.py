"""Canonical feed content: integer sort-and-merge, and the delta between two versions.

Place in the data flow: parse → validate → **merge** → sync. Networks of one IP version are merged
into sorted, disjoint ranges (an interval set); single addresses stay single (a hash set: one
lookup per packet, and the kernel loads a hash set far faster than an interval set), minus those
a range already covers. Never `ipaddress.collapse_addresses`: ~35 s for 1M addresses, against
~1.5 s for a sort-and-merge of Python ints (DESIGN, kernel facts); the IPv4 part runs on numpy
arrays (`v4arrays`), ~50 ms for a million entries. IPv6 (few entries per feed) stays in Python.
Pure.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from outguard.compile.intervals import merge, pack_ints, unpack_ints
from outguard.feeds import v4arrays
from outguard.feeds.parse import Parsed
from outguard.feeds.v4arrays import V4Entries, is_sorted, sorted_unique, to_u32
from outguard.policy.targets import int_to_text

BITS = {4: 32, 6: 128}
MAGIC = "outguard-feed-copy/1 "


def net_range(value: int, length: int, bits: int) -> tuple[int, int]:
    host = bits - length
    return value, value | ((1 << host) - 1)


def uncovered(singles: Iterable[int], ranges: list[tuple[int, int]]) -> list[int]:
    """Sorted unique singles that no range covers (ranges sorted and disjoint): on numpy arrays
    when all are 32-bit values, else one sort and one sweep in Python."""
    values = singles if isinstance(singles, list) else list(singles)
    try:
        arr, flat = to_u32(values), to_u32(chain.from_iterable(ranges))
    except OverflowError:  # IPv6
        return _uncovered_py(values, ranges)
    out: list[int] = v4arrays.uncovered(sorted_unique(arr), flat[0::2], flat[1::2]).tolist()
    return out


def _uncovered_py(singles: list[int], ranges: list[tuple[int, int]]) -> list[int]:
    ordered = sorted(singles)
    if not ranges:
        return [v for v, prev in zip(ordered, [-1, *ordered], strict=False) if v != prev]
    out: list[int] = []
    append = out.append
    it = iter(ranges)
    first, last = next(it)
    done, prev = False, -1
    for value in ordered:
        if value == prev:
            continue
        prev = value
        while not done and last < value:
            nxt = next(it, None)
            if nxt is None:
                done = True
            else:
                first, last = nxt
        if done or value < first:
            append(value)
    return out


@dataclass
class FeedSet:
    """A feed's content as the kernel holds it: per version, singles and merged ranges."""

    a4: list[int] = field(default_factory=list)
    r4: list[tuple[int, int]] = field(default_factory=list)
    a6: list[int] = field(default_factory=list)
    r6: list[tuple[int, int]] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, parsed: Parsed) -> FeedSet:
        return cls.of_arrays(parsed.v4(), parsed)

    @classmethod
    def of_arrays(cls, v4: V4Entries, parsed: Parsed) -> FeedSet:
        """IPv4 from the arrays of `v4`; IPv6 and the host names from `parsed` (its IPv4 lists
        are not read): validation hands over its arrays without a round trip through lists."""
        firsts, lasts = v4arrays.merge_ranges(*v4arrays.net_spans(v4.net_values, v4.net_lengths))
        a4 = v4arrays.uncovered(sorted_unique(v4.singles), firsts, lasts)
        r6 = merge(net_range(v, n, 128) for v, n in parsed.n6)
        return cls(a4.tolist(), v4arrays.pairs(firsts, lasts), uncovered(parsed.a6, r6), r6,
                   sorted(set(parsed.domains)))

    def singles(self, version: int) -> list[int]:
        return self.a4 if version == 4 else self.a6

    def ranges(self, version: int) -> list[tuple[int, int]]:
        return self.r4 if version == 4 else self.r6

    @property
    def kinds(self) -> dict[str, int]:
        """Elements per kernel set (IPv4/IPv6 addresses and ranges)."""
        return {"4a": len(self.a4), "4n": len(self.r4), "6a": len(self.a6), "6n": len(self.r6)}

    @property
    def count(self) -> int:
        return len(self.a4) + len(self.r4) + len(self.a6) + len(self.r6) + len(self.domains)

    def lines(self) -> Iterable[str]:
        """Canonical text, one entry per line: `A`, `A/LEN` or `FIRST-LAST`, then host names."""
        for version in (4, 6):
            for value in self.singles(version):
                yield int_to_text(value, version)
            for first, last in self.ranges(version):
                yield range_text(first, last, version)
        yield from self.domains

    def digest(self) -> str:
        """sha256 of the canonical content in binary form (`to_bytes`)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def to_bytes(self) -> bytes:
        """Compact canonical form (the stored last good copy): a header line with the counts,
        then big-endian integers (ranges as first,last pairs), then the host names."""
        head = f"{MAGIC}{len(self.a4)} {len(self.r4)} {len(self.a6)} {len(self.r6)}\n".encode()
        return b"".join([head, pack_ints(self.a4, 4), pack_ints([x for r in self.r4 for x in r], 4),
                         pack_ints(self.a6, 6), pack_ints([x for r in self.r6 for x in r], 6),
                         "\n".join(self.domains).encode()])

    @classmethod
    def from_bytes(cls, data: bytes) -> FeedSet:
        end = data.index(b"\n")
        head = data[:end].decode()
        if not head.startswith(MAGIC):
            raise ValueError("not a stored feed copy")
        n_a4, n_r4, n_a6, n_r6 = (int(x) for x in head[len(MAGIC):].split())
        pos = end + 1
        a4 = unpack_ints(data[pos:pos + 4 * n_a4], 4)
        pos += 4 * n_a4
        flat4 = unpack_ints(data[pos:pos + 8 * n_r4], 4)
        pos += 8 * n_r4
        a6 = unpack_ints(data[pos:pos + 16 * n_a6], 6)
        pos += 16 * n_a6
        flat6 = unpack_ints(data[pos:pos + 32 * n_r6], 6)
        pos += 32 * n_r6
        rest = data[pos:].decode()
        return cls(a4, list(zip(flat4[0::2], flat4[1::2], strict=True)), a6,
                   list(zip(flat6[0::2], flat6[1::2], strict=True)),
                   rest.split("\n") if rest else [])

    def contains(self, value: int, version: int) -> bool:
        singles = self.singles(version)
        i = bisect_right(singles, value) - 1
        if i >= 0 and singles[i] == value:
            return True
        ranges = self.ranges(version)
        j = bisect_right(ranges, (value, 1 << 129)) - 1
        return j >= 0 and ranges[j][0] <= value <= ranges[j][1]


def range_text(first: int, last: int, version: int) -> str:
    size = last - first + 1
    if size == 1:
        return int_to_text(first, version)
    if size & (size - 1) == 0 and first % size == 0:
        return f"{int_to_text(first, version)}/{BITS[version] - (size.bit_length() - 1)}"
    return f"{int_to_text(first, version)}-{int_to_text(last, version)}"


def prefixes(first: int, last: int, version: int) -> list[str]:
    """The CIDR prefixes that exactly cover [first, last] (for consumers that need CIDR)."""
    out = []
    bits = BITS[version]
    while first <= last:
        size = (first & -first) if first else 1 << bits
        while size > last - first + 1:
            size >>= 1
        out.append(f"{int_to_text(first, version)}/{bits - (size.bit_length() - 1)}")
        first += size
    return out


@dataclass
class Delta:
    """What changes in one kernel set: elements to delete and to add."""

    add: list[int] | list[tuple[int, int]]
    delete: list[int] | list[tuple[int, int]]

    def __bool__(self) -> bool:
        return bool(self.add or self.delete)


def diff_singles(old: list[int], new: list[int]) -> Delta:
    """Sorted additions and deletions; on numpy arrays when all are 32-bit values."""
    try:
        before, after = to_u32(old), to_u32(new)
    except OverflowError:  # IPv6
        return _diff_sets(old, new)
    if not old:  # the first load: a canonical list is already the answer
        return Delta(list(new) if is_sorted(after, strict=True) else sorted_unique(after).tolist(),
                     [])
    added, deleted = v4arrays.sorted_diff(sorted_unique(before), sorted_unique(after))
    return Delta(added.tolist(), deleted.tolist())


def diff_ranges(old: list[tuple[int, int]], new: list[tuple[int, int]]) -> Delta:
    """Interval elements are deleted and added whole: a changed range is one delete, one add.
    IPv4 ranges are compared as one uint64 key each (`first << 32 | last`)."""
    try:
        before, after = v4arrays.range_keys(old), v4arrays.range_keys(new)
    except OverflowError:  # IPv6
        return _diff_sets(old, new)
    if not old:
        return Delta(list(new) if is_sorted(after, strict=True)
                     else v4arrays.key_pairs(sorted_unique(after)), [])
    added, deleted = v4arrays.sorted_diff(sorted_unique(before), sorted_unique(after))
    return Delta(v4arrays.key_pairs(added), v4arrays.key_pairs(deleted))


def _diff_sets(old: list[Any], new: list[Any]) -> Delta:
    if not old:  # the first load: no sets to build
        return Delta(sorted(set(new)), [])
    before, after = set(old), set(new)
    return Delta(sorted(after - before), sorted(before - after))
