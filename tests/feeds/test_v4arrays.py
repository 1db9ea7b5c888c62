"""The numpy IPv4 path of validate/merge/diff against the pure-Python code it replaced.

The `ref_*` functions below are verbatim copies of the pure-Python functions as they were before
the IPv4 work moved to numpy (feeds/validate.py and feeds/merge.py); every public result
(kept entries, removed reports in order, alerts, canonical content, deltas) must be identical.
"""

from __future__ import annotations

import copy
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from outguard.events import FeedAlert
from outguard.feeds import v4arrays
from outguard.feeds.merge import (
    BITS,
    Delta,
    FeedSet,
    diff_ranges,
    diff_singles,
    net_range,
    range_text,
    uncovered,
)
from outguard.feeds.parse import Parsed, parse
from outguard.feeds.spec import FeedSpec
from outguard.feeds.validate import (
    NeverBlock,
    Verdict,
    bad_lines_alert,
    count_refusal,
    coverage_refusal,
    default_never_block,
    looks_like_error_page,
    strip_never_block,
    strip_parsed,
    too_wide,
    unreadable,
    validate,
)
from outguard.policy.targets import int_to_text
from outguard.ruleset.intervals import merge

TOP = (1 << 32) - 1


# --- the reference: today's pure-Python code, copied verbatim ----------------------------------

def ref_uncovered(singles: Iterable[int], ranges: list[tuple[int, int]]) -> list[int]:
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


def ref_of(parsed: Parsed) -> FeedSet:
    r4 = merge(net_range(v, n, 32) for v, n in parsed.n4)
    r6 = merge(net_range(v, n, 128) for v, n in parsed.n6)
    return FeedSet(ref_uncovered(parsed.a4, r4), r4, ref_uncovered(parsed.a6, r6), r6,
                   sorted(set(parsed.domains)))


def ref_diff_singles(old: list[int], new: list[int]) -> Delta:
    if not old:  # the first load: no sets to build
        return Delta(sorted(set(new)), [])
    before, after = set(old), set(new)
    return Delta(sorted(after - before), sorted(before - after))


def ref_diff_ranges(old: list[tuple[int, int]], new: list[tuple[int, int]]) -> Delta:
    if not old:
        return Delta(sorted(set(new)), [])
    before, after = set(old), set(new)
    return Delta(sorted(after - before), sorted(before - after))


def ref_sweep(items: list[tuple[int, int]], blocks: list[tuple[int, int, str]],
              version: int) -> tuple[list[tuple[int, int]], list[tuple[str, str]]]:
    kept: list[tuple[int, int]] = []
    removed: list[tuple[str, str]] = []
    j = 0
    for first, last in items:
        while j < len(blocks) and blocks[j][1] < first:
            j += 1
        if j < len(blocks) and blocks[j][0] <= last:
            removed.append((range_text(first, last, version), blocks[j][2]))
        else:
            kept.append((first, last))
    return kept, removed


def ref_strip_singles(values: list[int], blocks: list[tuple[int, int, str]],
                      version: int) -> tuple[list[int], list[tuple[str, str]]]:
    removed: list[tuple[str, str]] = []
    kept: list[int] = []
    start = 0
    for first, last, why in blocks:
        lo = bisect_left(values, first, start)
        hi = bisect_right(values, last, lo)
        if lo == hi:
            continue
        kept += values[start:lo]
        removed += [(int_to_text(v, version), why) for v in values[lo:hi]]
        start = hi
    if start == 0:
        return values, removed
    kept += values[start:]
    return kept, removed


def ref_strip_never_block(content: FeedSet,
                          nb: NeverBlock) -> tuple[FeedSet, list[tuple[str, str]]]:
    removed: list[tuple[str, str]] = []
    out = FeedSet(domains=content.domains)
    for version in (4, 6):
        blocks = nb.merged(version)
        singles, gone = ref_strip_singles(content.singles(version), blocks, version)
        removed += gone
        ranges, gone = ref_sweep(content.ranges(version), blocks, version)
        removed += gone
        if version == 4:
            out.a4, out.r4 = singles, ranges
        else:
            out.a6, out.r6 = singles, ranges
    return out, removed


def ref_strip_parsed(parsed: Parsed, nb: NeverBlock) -> tuple[Parsed, list[tuple[str, str]]]:
    removed: list[tuple[str, str]] = []
    out = Parsed(domains=parsed.domains, bad=parsed.bad, samples=parsed.samples)
    for version in (4, 6):
        blocks = nb.merged(version)
        bits = BITS[version]
        ordered = parsed.a4 if version == 4 else parsed.a6
        ordered.sort()
        singles, gone = ref_strip_singles(ordered, blocks, version)
        gone = list(dict.fromkeys(gone))
        removed += gone
        nets = sorted(set(parsed.n4 if version == 4 else parsed.n6))
        spans = [(v, v | ((1 << (bits - n)) - 1)) for v, n in nets]
        kept, gone = ref_sweep(spans, blocks, version)
        removed += gone
        keep = set(kept)
        kept_nets = [net for net, span in zip(nets, spans, strict=True) if span in keep]
        if version == 4:
            out.a4, out.n4 = singles, kept_nets
        else:
            out.a6, out.n6 = singles, kept_nets
    return out, removed


def ref_validate(spec: FeedSpec, data: bytes, parsed: Parsed, previous_count: int | None,
                 nb: NeverBlock, *, force: bool = False) -> Verdict:
    """The pure-Python pipeline, with the rules added since (they share the real functions):
    unreadable before the bad-lines alert, the coverage cap."""
    alerts: list[FeedAlert] = []

    def refuse(kind: str, message: str, **details: object) -> Verdict:
        alerts.append(FeedAlert("error", spec.name, "refused", f"update refused: {message}",
                                {"reason": kind, **details}))
        return Verdict(None, alerts, reason=kind)

    if (why := looks_like_error_page(data)) is not None:
        return refuse("error-page", why)
    if (message := unreadable(spec, parsed.bad, parsed.entries)) is not None:
        lines = [line for line, _t, _w in parsed.samples[:5]]
        shown = ", ".join(map(str, lines)) + (", ..." if parsed.bad > 5 else "")
        return refuse("unreadable", f"{message}; first bad lines: {shown}", bad=parsed.bad,
                      lines=lines)
    if parsed.bad:
        alerts.append(bad_lines_alert(spec, parsed))
    if wide := too_wide(spec, parsed, nb):
        return refuse("too-wide", wide[0], networks=wide[1])
    kept, removed = ref_strip_parsed(parsed, nb)
    if removed:
        shown = "; ".join(f"{entry} ({why})" for entry, why in removed[:5])
        shown += f"; and {len(removed) - 5} more" if len(removed) > 5 else ""
        alerts.append(FeedAlert("warning", spec.name, "removed",
                                f"{len(removed)} entr{'y' if len(removed) == 1 else 'ies'} touching"
                                f" the never-block list removed: {shown}",
                                {"removed": removed[:50]}))
    content = ref_of(kept)
    if (over := coverage_refusal(spec, content)) is not None:
        return refuse(over[0], over[1], **over[2])
    if (refusal := count_refusal(spec, content.count, previous_count, force)) is not None:
        return refuse(refusal[0], refusal[1], **refusal[2])
    return Verdict(content, alerts, removed)


# --- strategies: values that meet each other and the never-block borders -----------------------

# borders of the default never-block list, the ends of the space, and a documentation range
_ANCHORS = [0, 1, TOP, TOP - 255, 10 << 24, (11 << 24) - 1, 11 << 24, (169 << 24) | (254 << 16)
            | (169 << 8) | 254, (192 << 24) | (168 << 16), 0xC0000200, 0xC6336400, 0xE0000000 - 1,
            0xCB007100, 0x08080808]


@st.composite
def v4_values(draw: st.DrawFn) -> int:
    if draw(st.booleans()):
        return draw(st.integers(0, TOP))
    anchor = draw(st.sampled_from(_ANCHORS))
    return min(TOP, max(0, anchor + draw(st.integers(-300, 300))))


@st.composite
def v4_nets(draw: st.DrawFn) -> tuple[int, int]:
    length = draw(st.integers(0, 32) | st.integers(16, 30))
    value = draw(v4_values())
    host = (1 << (32 - length)) - 1
    if draw(st.integers(0, 9)) == 0:  # a Parsed built by hand may keep host bits
        return value, length
    return value & ~host & TOP, length


v6_values = st.sampled_from([0, 1, 0x20010DB8 << 96, (0x20010DB8 << 96) + 5, (1 << 128) - 1,
                             0xFE80 << 112, 0xFFFF << 32 | 0x0A000001])
v6_nets = st.sampled_from([(0x20010DB8 << 96, 32), (0x20010DB8 << 96, 48), (0xFC00 << 112, 7),
                           (0x20010DB8 << 96 | 1 << 80, 48), (0, 127)])


@st.composite
def parsed_feeds(draw: st.DrawFn) -> Parsed:
    a4 = draw(st.lists(v4_values(), max_size=60))
    a4 += draw(st.lists(st.sampled_from(a4), max_size=10)) if a4 else []  # repeats
    n4 = draw(st.lists(v4_nets(), max_size=25))
    n4 += draw(st.lists(st.sampled_from(n4), max_size=5)) if n4 else []
    # singles on the borders of the networks
    for value, length in draw(st.lists(st.sampled_from(n4), max_size=8)) if n4 else []:
        first, last = net_range(value, length, 32)
        a4 += [x for x in (first - 1, first, last, last + 1) if 0 <= x <= TOP]
    a4 = draw(st.permutations(a4))
    return Parsed(a4=list(a4), n4=n4, a6=draw(st.lists(v6_values, max_size=4)),
                  n6=draw(st.lists(v6_nets, max_size=3)),
                  domains=draw(st.lists(st.sampled_from(["a.example", "b.example"]), max_size=3)))


@st.composite
def never_blocks(draw: st.DrawFn) -> NeverBlock:
    extra = draw(st.lists(v4_nets(), max_size=4))
    texts = [f"{int_to_text(v & ~((1 << (32 - n)) - 1) & TOP, 4)}/{n}" for v, n in extra]
    if draw(st.integers(0, 15)) == 0:
        texts.append("0.0.0.0/0")  # everything removed
    resolvers = [int_to_text(v, 4) for v in draw(st.lists(v4_values(), max_size=2))]
    if draw(st.booleans()):
        return default_never_block(resolvers, texts)
    nb = NeverBlock()
    for text in texts + resolvers:
        nb.add(text, f"test {text}")
    return nb


def _same_parsed(a: Parsed, b: Parsed) -> None:
    assert (a.a4, a.n4, a.a6, a.n6, a.domains, a.bad, a.samples) == \
        (b.a4, b.n4, b.a6, b.n6, b.domains, b.bad, b.samples)
    assert all(type(x) is int for x in a.a4)
    assert all(type(x) is int and type(n) is int for x, n in a.n4)


def _same_feedset(a: FeedSet, b: FeedSet) -> None:
    assert a == b
    assert all(type(x) is int for x in a.a4)
    assert all(type(x) is int and type(y) is int for x, y in a.r4)


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EDGE = Parsed(a4=[0, TOP, TOP, 0x0A000001, 0xC0000201, 0xC00002FF, 0xC0000300, 0xC00001FF],
              n4=[(0xC0000200, 24), (0xC0000300, 24), (0xC0000200, 25), (0xFFFFFF00, 24),
                  (0xC0000200, 24), (0, 8), (0xCB007100, 24)])


# --- properties ----------------------------------------------------------------------------------

@FAST
@given(parsed_feeds(), never_blocks())
@example(Parsed(), default_never_block())
@example(EDGE, default_never_block())
@example(EDGE, default_never_block(allowed=["0.0.0.0/0"]))
def test_strip_parsed_matches_reference(parsed: Parsed, nb: NeverBlock) -> None:
    before = copy.deepcopy(parsed)
    got, removed = strip_parsed(parsed, nb)
    want, want_removed = ref_strip_parsed(copy.deepcopy(parsed), nb)
    _same_parsed(got, want)
    assert removed == want_removed
    assert parsed == before  # the caller's lists are left as they were


@FAST
@given(parsed_feeds())
@example(Parsed())
@example(EDGE)
def test_feedset_of_matches_reference(parsed: Parsed) -> None:
    _same_feedset(FeedSet.of(parsed), ref_of(copy.deepcopy(parsed)))


@FAST
@given(parsed_feeds(), never_blocks(), st.none() | st.integers(0, 200), st.booleans())
@example(EDGE, default_never_block(allowed=["0.0.0.0/0"]), None, False)
@example(Parsed(), default_never_block(), None, False)
def test_validate_matches_reference(parsed: Parsed, nb: NeverBlock, previous: int | None,
                                    force: bool) -> None:
    spec = FeedSpec(name="t", url="http://127.0.0.1/x", format="plain", category="test")
    got = validate(spec, b"1.2.3.4\n", copy.deepcopy(parsed), previous, nb, force=force)
    want = ref_validate(spec, b"1.2.3.4\n", copy.deepcopy(parsed), previous, nb, force=force)
    assert got == want
    if got.content is not None:
        _same_feedset(got.content, want.content)  # type: ignore[arg-type]


@FAST
@given(parsed_feeds(), never_blocks())
@example(EDGE, default_never_block(allowed=["0.0.0.0/0"]))
def test_strip_never_block_matches_reference(parsed: Parsed, nb: NeverBlock) -> None:
    content = ref_of(parsed)
    got, removed = strip_never_block(content, nb)
    want, want_removed = ref_strip_never_block(copy.deepcopy(content), nb)
    _same_feedset(got, want)
    assert removed == want_removed


@FAST
@given(st.lists(v4_values(), max_size=80), st.lists(v4_nets(), max_size=20))
@example([], [])
@example([0, TOP, TOP, 5], [(0, 32), (TOP, 32)])
@example([0xFFFFFEFF, 0xFFFFFF00, TOP], [(0xFFFFFF00, 24)])
def test_uncovered_matches_reference(singles: list[int], nets: list[tuple[int, int]]) -> None:
    ranges = merge(net_range(v, n, 32) for v, n in nets)
    assert uncovered(singles, ranges) == ref_uncovered(singles, ranges)
    assert uncovered(iter(singles), ranges) == ref_uncovered(singles, ranges)


@FAST
@given(st.lists(v4_nets(), max_size=40))
@example([])
@example([(0xC0000200, 25), (0xC0000280, 25)])  # adjacent: one range
@example([(0xC0000200, 24), (0xC0000280, 25), (0xC0000200, 26)])  # nested
@example([(0xFFFFFF00, 24), (0xFFFFFE00, 24), (0, 0)])  # to the top of the space
@example([(5, 32), (6, 32), (8, 32)])
def test_merge_ranges_matches_intervals_merge(nets: list[tuple[int, int]]) -> None:
    spans = [net_range(v, n, 32) for v, n in nets]
    firsts = np.array([a for a, _ in spans], dtype=np.uint32)
    lasts = np.array([b for _, b in spans], dtype=np.uint32)
    got = v4arrays.merge_ranges(firsts, lasts)
    assert got[0].dtype == np.uint32 and got[1].dtype == np.uint32
    assert v4arrays.pairs(*got) == merge(spans)


def _lists_v4() -> st.SearchStrategy[list[int]]:
    return st.lists(v4_values(), max_size=50)


def _ranges_v4() -> st.SearchStrategy[list[tuple[int, int]]]:
    return st.lists(v4_nets().map(lambda n: net_range(n[0], n[1], 32)), max_size=30)


ORDERS = ["as drawn", "sorted", "canonical"]  # canonical: sorted and unique, as sync calls it
T = TypeVar("T", int, tuple[int, int])


def _order(values: list[T], order: str) -> list[T]:
    if order == "sorted":
        return sorted(values + values[:3])  # sorted, with repeats
    return sorted(set(values)) if order == "canonical" else values


@FAST
@given(_lists_v4(), _lists_v4(), st.sampled_from(ORDERS))
@example([], [], "as drawn")
@example([0, TOP], [TOP, TOP, 0, 3], "as drawn")
@example([1, 2, 3], [], "as drawn")
@example([], [0, 0, 5, TOP, TOP], "as drawn")  # sorted with repeats: still deduplicated
def test_diff_singles_matches_reference(old: list[int], new: list[int], order: str) -> None:
    old, new = _order(old, order), _order(new, order)
    old_copy, new_copy = list(old), list(new)
    got, want = diff_singles(old, new), ref_diff_singles(old, new)
    assert (got.add, got.delete) == (want.add, want.delete)
    assert all(type(x) is int for x in got.add + got.delete)  # type: ignore[operator]
    assert (old, new) == (old_copy, new_copy)
    assert got.add is not new


@FAST
@given(_ranges_v4(), _ranges_v4(), st.sampled_from(ORDERS))
@example([], [], "as drawn")
@example([(0, 9), (20, 29)], [(0, 9), (20, 39)], "as drawn")
@example([(0, TOP)], [(0, TOP), (0, TOP), (5, 5)], "as drawn")
@example([(5, 9), (5, 7)], [(5, 8), (5, 9)], "as drawn")  # same first: ordered by last
@example([], [(5, 7), (5, 7), (5, 9)], "as drawn")
def test_diff_ranges_matches_reference(old: list[tuple[int, int]], new: list[tuple[int, int]],
                                       order: str) -> None:
    old, new = _order(old, order), _order(new, order)
    got, want = diff_ranges(old, new), ref_diff_ranges(old, new)
    assert (got.add, got.delete) == (want.add, want.delete)
    assert all(type(a) is int and type(b) is int
               for a, b in got.add + got.delete)  # type: ignore[operator, misc]


@pytest.mark.parametrize(("old", "new"), [
    ([1 << 100, 5], [5, 1 << 100, (1 << 128) - 1]),  # IPv6 values: the Python path
    ([], [(1 << 127), 3, 3]),
    ([5], [-1, 5]),  # not an address at all: still the Python path, same answer
])
def test_diff_singles_out_of_ipv4_range_falls_back(old: list[int], new: list[int]) -> None:
    got, want = diff_singles(old, new), ref_diff_singles(old, new)
    assert (got.add, got.delete) == (want.add, want.delete)


def test_diff_ranges_ipv6_falls_back() -> None:
    old = [(1 << 100, (1 << 100) + 255)]
    new = [(1 << 100, (1 << 100) + 511), (3, 4)]
    got, want = diff_ranges(old, new), ref_diff_ranges(old, new)
    assert (got.add, got.delete) == (want.add, want.delete)


def test_uncovered_ipv6_falls_back() -> None:
    ranges = [(0x20010DB8 << 96, (0x20010DB8 << 96) + 255)]
    singles = [0x20010DB8 << 96 | 7, 1, 1, (1 << 128) - 1]
    assert uncovered(singles, ranges) == ref_uncovered(singles, ranges)


def test_everything_removed_by_never_block() -> None:
    data = b"".join(b"198.51.100.%d\n203.0.113.0/%d\n" % (i, 24 + i % 5) for i in range(40))
    fast = parse(data + b"0.0.0.0\n255.255.255.255\n", "plain")
    v4 = fast.v4()  # the reference reads lists: the vector reader's arrays as lists
    parsed = Parsed(a4=v4.singles.tolist(), n4=v4.net_list(), bad=fast.bad)
    assert fast.entries == parsed.entries == 82
    nb = default_never_block(allowed=["0.0.0.0/0"])
    got, removed = strip_parsed(copy.deepcopy(parsed), nb)
    want, want_removed = ref_strip_parsed(copy.deepcopy(parsed), nb)
    assert got.a4 == got.n4 == [] and removed == want_removed
    _same_parsed(got, want)
    assert removed[0] == ("0.0.0.0", "special range 0.0.0.0/8")
    assert len(removed) == 40 + 2 + 5  # repeats reported once


@FAST
@given(st.lists(v4_nets().map(lambda n: net_range(n[0], n[1], 32)), max_size=30), never_blocks())
@example([(0xC0000200, 0xC00002FF), (0x0A000000, 0x0A0000FF), (0x0A000000, 0x0A0000FF)],
         default_never_block())  # out of order: the sweep never goes back, as the Python one
def test_sweep_matches_reference_in_any_order(items: list[tuple[int, int]],
                                              nb: NeverBlock) -> None:
    blocks = nb.merged(4)
    firsts = np.array([a for a, _ in items], dtype=np.uint32)
    lasts = np.array([b for _, b in items], dtype=np.uint32)
    hit, at = v4arrays.sweep(firsts, lasts, blocks)
    kept = [item for item, h in zip(items, hit.tolist(), strict=True) if not h]
    removed = [(range_text(a, b, 4), blocks[j][2])
               for (a, b), h, j in zip(items, hit.tolist(), at.tolist(), strict=True) if h]
    assert (kept, removed) == ref_sweep(items, blocks, 4)
