"""The incremental update equals the full recompute, for random old and new lists.

Lines are drawn from a small pool of documentation addresses and prefixes (nested, adjacent and
overlapping ones, repeats, the same entry in two spellings, comments, bad lines, never-block
entries), so that prefixes come and go over listed singles and merged ranges split and join.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from outguard.feeds.incremental import Baseline, build, step
from outguard.feeds.merge import FeedSet, diff_ranges, diff_singles
from outguard.feeds.parse import parse
from outguard.feeds.spec import FeedSpec, Limits
from outguard.feeds.validate import NeverBlock, default_never_block, validate

SPEC = FeedSpec(name="t", url="http://127.0.0.1/x", format="plain", category="test",
                limits=Limits(max_shrink=1.0, max_growth=1000.0, may_be_empty=True))
POOL = ([f"198.51.100.{i}" for i in range(0, 256, 7)]
        + [f"198.51.100.{i}/{n}" for n in (24, 25, 26, 27, 28, 30) for i in range(0, 256, 1 << (32 - n))]
        + ["198.51.100.14 # again", "198.51.100.21/32", "203.0.113.5", "203.0.113.0/25",
           "203.0.113.128/25", "2001:db8::1", "2001:db8::/64", "2001:db8:0:1::/64",
           "2001:db8::2", "10.1.2.3", "# a comment", "", "not an address", "198.51.100.77",
           "198.51.100.64/26"])
NB: NeverBlock = default_never_block(allowed=["198.51.100.77"])

lists = st.lists(st.sampled_from(POOL), max_size=40)


def body(lines: list[str]) -> bytes:
    return "\n".join(lines).encode()


def full(data: bytes) -> FeedSet | None:
    return validate(SPEC, data, parse(data, "plain"), None, NB).content


def check(base: Baseline, data: bytes) -> Baseline:
    old = base.content()
    got = step(base, SPEC, data, None, NB)
    assert got is not None
    want = full(data)
    assert (got.verdict.content is None) == (want is None)
    if want is None or got.baseline is None:
        return base
    assert got.verdict.content == want
    # the deltas take the kernel sets from the old content to the new, exactly
    for version in (4, 6):
        for kind, delta in ((f"{version}a", diff_singles(old.singles(version),
                                                         want.singles(version))),
                            (f"{version}n", diff_ranges(old.ranges(version),
                                                        want.ranges(version)))):
            d = got.deltas.get(kind)
            got_pair = (list(d.add), list(d.delete)) if d is not None else ([], [])
            assert got_pair == (list(delta.add), list(delta.delete)), kind
    # the next baseline is what a fresh build of the new body gives
    fresh = build(data, "plain", NB, "")
    assert got.baseline.content() == fresh.content()
    assert got.baseline.refs == fresh.refs and got.baseline.lines == fresh.lines
    return got.baseline


@settings(max_examples=300, deadline=None)
@given(lists, lists, lists)
def test_incremental_equals_full(first: list[str], second: list[str], third: list[str]) -> None:
    data = body(first)
    base = build(data, "plain", NB, "", parse(data, "plain"))
    assert full(data) is None or base.content() == full(data)
    base = check(base, body(second))
    check(base, body(third))


def test_refused_step_keeps_the_baseline() -> None:
    data = body([f"198.51.100.{i}" for i in range(1, 50)])
    base = build(data, "plain", NB, "")
    strict = SPEC.model_copy(update={"limits": Limits()})
    got = step(base, strict, body(["198.51.100.1"]), 49, NB)
    assert got is not None and got.verdict.content is None and got.baseline is None
    assert got.verdict.alerts[-1].details["reason"] == "shrink"
    assert base.lines == set(data.split(b"\n"))
    got = step(base, SPEC, body(["198.51.100.1", "11.0.0.0/7"]), 49, NB)
    assert got is not None and got.verdict.alerts[-1].details["reason"] == "too-wide"
    got = step(base, SPEC, b"<html><title>503</title></html>", 49, NB)
    assert got is not None and got.verdict.alerts[-1].details["reason"] == "error-page"


def test_other_never_block_list_takes_the_full_path() -> None:
    base = build(b"198.51.100.1\n", "plain", NB, "")
    assert step(base, SPEC, b"198.51.100.2\n", 1, default_never_block()) is None
