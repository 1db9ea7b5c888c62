"""Vectorised IPv4 set work on numpy uint32 arrays: sort, strip never-block, merge, cover, diff.

Place in the data flow: parse → validate → merge → sync; validate.py and merge.py call these for
their IPv4 part. Why numpy: a feed list reaches a million entries, and every Python-level pass
over them costs about 0.1 s (sorting a million Python ints about 0.4 s); the same passes on
4-byte array elements run in C in milliseconds. IPv6 stays on the plain Python path: feeds hold
few IPv6 entries, and 128-bit values fit no numpy integer.

`Parsed` and `Delta` keep Python lists (`FeedSet` holds IPv4 as arrays and makes lists on
demand), so callers convert at the boundary: `to_u32` in (through `array`, about twice as fast
as `np.fromiter`; it raises OverflowError on anything that is not an IPv4 value, and callers
then take the Python path), `.tolist()` / `pairs` out. Ranges are (first, last) pairs of uint32
arrays; never-block blocks are disjoint, sorted (first, last, why) tuples (`NeverBlock.merged`).
Pure.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

U32 = NDArray[np.uint32]
U8 = NDArray[np.uint8]
Mask = NDArray[np.bool_]
Block = tuple[int, int, str]
K = TypeVar("K", np.uint32, np.uint64)

_CODE = next(code for code in "IL" if array(code).itemsize == 4)  # 'I' on every Linux


def to_u32(values: Iterable[int]) -> U32:
    """Python ints → uint32 array; OverflowError when one is negative or wider than 32 bits."""
    return np.frombuffer(array(_CODE, values), dtype=np.uint32)


def from_be(data: bytes, offset: int, count: int) -> U32:
    """`count` big-endian 4-byte values of `data` from `offset` (the stored forms) → uint32."""
    return np.frombuffer(data, dtype=">u4", count=count, offset=offset).astype(np.uint32)


def pairs(firsts: U32, lasts: U32) -> list[tuple[int, int]]:
    return list(zip(firsts.tolist(), lasts.tolist(), strict=True))


def is_sorted(values: NDArray[K], *, strict: bool = False) -> bool:
    if values.size < 2:
        return True
    if strict:
        return bool(np.all(values[1:] > values[:-1]))
    return bool(np.all(values[1:] >= values[:-1]))


def unique_sorted(values: NDArray[K]) -> NDArray[K]:
    """Sorted `values` without repeats. Not np.unique: it sorts again (and in numpy 2.3+ hashes
    first), ~50x slower on a sorted million."""
    if values.size < 2:
        return values
    keep = np.empty(values.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def sorted_unique(values: NDArray[K]) -> NDArray[K]:
    """`sorted(set(values))` as an array; no sort when already sorted (canonical lists are)."""
    return unique_sorted(values if is_sorted(values) else np.sort(values))


def sorted_diff(before: NDArray[K], after: NDArray[K]) -> tuple[NDArray[K], NDArray[K]]:
    """(added, deleted) between two sorted unique arrays: one stable sort of the two runs (a
    linear merge) and a look at the neighbours, ~6x faster than a binary search per element."""
    joined = np.concatenate((before, after))
    order = np.argsort(joined, kind="stable")
    ordered = joined[order]
    same = ordered[1:] == ordered[:-1]
    paired = np.zeros(ordered.size, dtype=np.bool_)
    paired[1:] |= same
    paired[:-1] |= same
    new = order >= before.size
    return ordered[~paired & new], ordered[~paired & ~new]


@dataclass
class V4Entries:
    """A feed's IPv4 entries as listed: singles (any order, repeats allowed) and networks as
    (value, prefix length) column arrays."""

    singles: U32
    net_values: U32
    net_lengths: U8

    @classmethod
    def of(cls, singles: list[int], nets: list[tuple[int, int]]) -> V4Entries:
        flat = to_u32(chain.from_iterable(nets))
        return cls(to_u32(singles), flat[0::2], flat[1::2].astype(np.uint8))

    def net_list(self) -> list[tuple[int, int]]:
        return list(zip(self.net_values.tolist(), self.net_lengths.tolist(), strict=True))


def sorted_unique_nets(values: U32, lengths: U8) -> tuple[U32, U8]:
    """`sorted(set(zip(values, lengths)))` as columns: one uint64 key per network."""
    keys = sorted_unique((values.astype(np.uint64) << np.uint64(6)) | lengths)
    return (keys >> np.uint64(6)).astype(np.uint32), (keys & np.uint64(63)).astype(np.uint8)


def net_spans(values: U32, lengths: U8) -> tuple[U32, U32]:
    """(first, last) of each network: `value | host mask`, as `merge.net_range` does."""
    host = np.uint64(32) - lengths.astype(np.uint64)
    lasts = values.astype(np.uint64) | ((np.uint64(1) << host) - np.uint64(1))
    return values, lasts.astype(np.uint32)


def merge_ranges(firsts: U32, lasts: U32) -> tuple[U32, U32]:
    """Union of closed ranges (first <= last) as sorted, disjoint, non-adjacent ranges: what
    `ruleset.intervals.merge` returns. A range starts a new one where its first lies beyond the
    running maximum of the lasts before it plus one (adjacent ranges join, as in `merge`)."""
    if firsts.size == 0:
        return firsts, lasts
    order = np.argsort(firsts, kind="stable")
    first = firsts[order]
    run = np.maximum.accumulate(lasts[order])
    start = np.empty(first.size, dtype=np.bool_)
    start[0] = True
    # int64: the last can be 255.255.255.255, and + 1 must not wrap
    np.greater(first[1:].astype(np.int64), run[:-1].astype(np.int64) + 1, out=start[1:])
    begins = np.flatnonzero(start)
    ends = np.append(begins[1:] - 1, first.size - 1)
    return first[begins], run[ends]


def uncovered(values: U32, firsts: U32, lasts: U32) -> U32:
    """Sorted unique `values` that no range covers (ranges sorted and disjoint): the range
    bounds are searched in the values (ranges are the few), and a running sum of +1 where a
    covered run starts and -1 where it ends marks them."""
    if values.size == 0 or firsts.size == 0:
        return values
    lo = np.searchsorted(values, firsts, "left")
    hi = np.searchsorted(values, lasts, "right")
    some = lo < hi  # then starts (and ends) are strictly increasing: no index twice
    edges = np.zeros(values.size + 1, dtype=np.int8)
    edges[lo[some]] = 1
    edges[hi[some]] -= 1  # an end on the next start cancels it: the run goes on
    clear: Mask = np.cumsum(edges[:-1], dtype=np.int8) == 0
    return values[clear]


def _bounds(blocks: Sequence[Block]) -> tuple[U32, U32]:
    return (np.array([b[0] for b in blocks], dtype=np.uint32),
            np.array([b[1] for b in blocks], dtype=np.uint32))


def strip_singles(values: U32, blocks: Sequence[Block]) -> tuple[U32, list[tuple[U32, str]]]:
    """Sorted `values` minus those inside a block, and the removed ones block by block (in
    order, repeats kept) with why."""
    if values.size == 0 or not blocks:
        return values, []
    firsts, lasts = _bounds(blocks)
    lo = np.searchsorted(values, firsts, "left").tolist()
    hi = np.searchsorted(values, lasts, "right").tolist()
    removed: list[tuple[U32, str]] = []
    keep: Mask | None = None
    for a, b, (_first, _last, why) in zip(lo, hi, blocks, strict=True):
        if a < b:
            removed.append((values[a:b], why))
            if keep is None:
                keep = np.ones(values.size, dtype=np.bool_)
            keep[a:b] = False
    return (values if keep is None else values[keep]), removed


def sweep(firsts: U32, lasts: U32, blocks: Sequence[Block]) -> tuple[Mask, NDArray[np.intp]]:
    """Which (first, last) items, in order of first, touch a block, and the index of the block
    each meets. The index only moves forward, as in a linear sweep: the first block ending at
    or after the item's first (the only one that can overlap it)."""
    if not blocks:
        return np.zeros(firsts.size, dtype=np.bool_), np.zeros(firsts.size, dtype=np.intp)
    block_firsts, block_lasts = _bounds(blocks)
    at = np.searchsorted(block_lasts, firsts, "left")
    np.maximum.accumulate(at, out=at)
    hit = at < len(blocks)
    hit[hit] = block_firsts[at[hit]] <= lasts[hit]
    return hit, at


def range_keys(ranges: Iterable[tuple[int, int]]) -> NDArray[np.uint64]:
    """(first, last) pairs → one uint64 each, `first << 32 | last`: sorts as the tuples do."""
    flat = to_u32(chain.from_iterable(ranges))
    return span_keys(flat[0::2], flat[1::2])


def span_keys(firsts: U32, lasts: U32) -> NDArray[np.uint64]:
    """`range_keys` of ranges held as two arrays."""
    keys: NDArray[np.uint64] = (firsts.astype(np.uint64) << np.uint64(32)) | lasts
    return keys


def key_pairs(keys: NDArray[np.uint64]) -> list[tuple[int, int]]:
    return pairs((keys >> np.uint64(32)).astype(np.uint32),
                 (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32))
