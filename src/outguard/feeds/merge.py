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
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import NDArray

from outguard.feeds import v4arrays
from outguard.feeds.parse import Parsed
from outguard.feeds.v4arrays import U32, V4Entries, is_sorted, sorted_unique, to_u32
from outguard.policy.targets import int_to_text
from outguard.ruleset.intervals import merge, pack_ints, unpack_ints

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


class FeedSet:
    """A feed's content as the kernel holds it: per version, singles and merged ranges.

    IPv4 is held as uint32 arrays (singles; range firsts and lasts), the lists `a4`/`r4` are
    made from them only when asked for: a million-entry feed goes from validation through the
    stored copy and the kernel diff without a round trip through Python ints (~0.05 s). The
    lists are views of that content: change it by assigning `a4`/`r4`, never in place."""

    def __init__(self, a4: list[int] | None = None, r4: list[tuple[int, int]] | None = None,
                 a6: list[int] | None = None, r6: list[tuple[int, int]] | None = None,
                 domains: list[str] | None = None, *,
                 v4: tuple[U32, U32, U32] | None = None) -> None:
        """`v4`: (singles, range firsts, range lasts) arrays, in place of `a4` and `r4`."""
        self._a4: list[int] | None = None
        self._r4: list[tuple[int, int]] | None = None
        self._v4: tuple[U32, U32, U32] | None = v4
        if v4 is None:
            self._a4 = a4 if a4 is not None else []
            self._r4 = r4 if r4 is not None else []
        elif a4 is not None or r4 is not None:
            raise TypeError("IPv4 content comes as lists or as arrays, not both")
        self.a6: list[int] = a6 if a6 is not None else []
        self.r6: list[tuple[int, int]] = r6 if r6 is not None else []
        self.domains: list[str] = domains if domains is not None else []

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
        return cls(None, None, uncovered(parsed.a6, r6), r6, sorted(set(parsed.domains)),
                   v4=(a4, firsts, lasts))

    # IPv4: arrays inside, lists on demand ------------------------------------------------------

    def v4_arrays(self) -> tuple[U32, U32, U32]:
        """(singles, range firsts, range lasts) as uint32 arrays."""
        if self._v4 is None:
            flat = to_u32(chain.from_iterable(self.r4))
            self._v4 = (to_u32(self.a4), flat[0::2], flat[1::2])
        return self._v4

    @property
    def a4(self) -> list[int]:
        if self._a4 is None:
            self._a4 = self.v4_arrays()[0].tolist()
        return self._a4

    @a4.setter
    def a4(self, values: list[int]) -> None:
        self._r4 = self.r4  # the arrays go: keep the ranges as a list
        self._a4, self._v4 = values, None

    @property
    def r4(self) -> list[tuple[int, int]]:
        if self._r4 is None:
            _a, firsts, lasts = self.v4_arrays()
            self._r4 = v4arrays.pairs(firsts, lasts)
        return self._r4

    @r4.setter
    def r4(self, values: list[tuple[int, int]]) -> None:
        self._a4 = self.a4
        self._r4, self._v4 = values, None

    def packed(self, version: int, interval: bool) -> bytes:
        """One kernel set's elements as big-endian bytes (ranges as first,last pairs): the
        stored copy's and the set store's form."""
        if version == 6:
            return pack_ints([x for r in self.r6 for x in r] if interval else self.a6, 6)
        singles, firsts, lasts = self.v4_arrays()
        if not interval:
            return singles.astype(">u4").tobytes()
        flat = np.empty(2 * firsts.size, dtype=">u4")
        flat[0::2], flat[1::2] = firsts, lasts
        return flat.tobytes()

    # ---------------------------------------------------------------------------------------------

    def singles(self, version: int) -> list[int]:
        return self.a4 if version == 4 else self.a6

    def ranges(self, version: int) -> list[tuple[int, int]]:
        return self.r4 if version == 4 else self.r6

    @property
    def kinds(self) -> dict[str, int]:
        """Elements per kernel set (IPv4/IPv6 addresses and ranges)."""
        singles, firsts, _lasts = self.v4_arrays()
        return {"4a": int(singles.size), "4n": int(firsts.size), "6a": len(self.a6),
                "6n": len(self.r6)}

    def covered(self, version: int) -> int:
        """Addresses of this IP version the content blocks (singles are never inside a range)."""
        if version == 4:
            singles, firsts, lasts = self.v4_arrays()
            spans = lasts.astype(np.uint64) - firsts.astype(np.uint64) + np.uint64(1)
            return int(singles.size) + int(spans.sum(dtype=np.uint64))
        return len(self.a6) + sum(last - first + 1 for first, last in self.r6)

    @property
    def count(self) -> int:
        return sum(self.kinds.values()) + len(self.domains)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeedSet):
            return NotImplemented
        if (self.a6, self.r6, self.domains) != (other.a6, other.r6, other.domains):
            return False
        if self._v4 is None or other._v4 is None:  # no arrays made just to compare
            return (self.a4, self.r4) == (other.a4, other.r4)
        return all(np.array_equal(x, y) for x, y in zip(self._v4, other._v4, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"FeedSet({self.kinds}, {len(self.domains)} host names)"

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
        k = self.kinds
        head = f"{MAGIC}{k['4a']} {k['4n']} {k['6a']} {k['6n']}\n".encode()
        return b"".join([head, self.packed(4, False), self.packed(4, True), self.packed(6, False),
                         self.packed(6, True), "\n".join(self.domains).encode()])

    @classmethod
    def from_bytes(cls, data: bytes) -> FeedSet:
        end = data.index(b"\n")
        head = data[:end].decode()
        if not head.startswith(MAGIC):
            raise ValueError("not a stored feed copy")
        n_a4, n_r4, n_a6, n_r6 = (int(x) for x in head[len(MAGIC):].split())
        if min(n_a4, n_r4, n_a6, n_r6) < 0:
            raise ValueError("negative count")
        pos = end + 1
        if len(data) < pos + 4 * n_a4 + 8 * n_r4 + 16 * n_a6 + 32 * n_r6:
            raise ValueError("shorter than its counts say")
        a4 = v4arrays.from_be(data, pos, n_a4)
        pos += 4 * n_a4
        flat4 = v4arrays.from_be(data, pos, 2 * n_r4)
        pos += 8 * n_r4
        a6 = unpack_ints(data[pos:pos + 16 * n_a6], 6)
        pos += 16 * n_a6
        flat6 = unpack_ints(data[pos:pos + 32 * n_r6], 6)
        pos += 32 * n_r6
        rest = data[pos:].decode()
        return cls(None, None, a6, list(zip(flat6[0::2], flat6[1::2], strict=True)),
                   rest.split("\n") if rest else [], v4=(a4, flat4[0::2], flat4[1::2]))

    def contains(self, value: int, version: int) -> bool:
        if version == 4:
            singles, firsts, lasts = self.v4_arrays()
            if not 0 <= value < 1 << 32:
                return False
            i = int(np.searchsorted(singles, value, side="right")) - 1
            if i >= 0 and int(singles[i]) == value:
                return True
            j = int(np.searchsorted(firsts, value, side="right")) - 1
            return j >= 0 and int(lasts[j]) >= value
        singles6 = self.a6
        i = bisect_right(singles6, value) - 1
        if i >= 0 and singles6[i] == value:
            return True
        j = bisect_right(self.r6, (value, 1 << 129)) - 1
        return j >= 0 and self.r6[j][0] <= value <= self.r6[j][1]


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
    return diff_v4(before, after)


def diff_v4(before: U32, after: U32) -> Delta:
    """`diff_singles` of IPv4 addresses held as arrays."""
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
    return diff_v4_keys(before, after)


def diff_v4_keys(before: NDArray[np.uint64], after: NDArray[np.uint64]) -> Delta:
    """`diff_ranges` of IPv4 ranges held as `v4arrays.span_keys`."""
    added, deleted = v4arrays.sorted_diff(sorted_unique(before), sorted_unique(after))
    return Delta(v4arrays.key_pairs(added), v4arrays.key_pairs(deleted))


def _diff_sets(old: list[Any], new: list[Any]) -> Delta:
    if not old:  # the first load: no sets to build
        return Delta(sorted(set(new)), [])
    before, after = set(old), set(new)
    return Delta(sorted(after - before), sorted(before - after))
