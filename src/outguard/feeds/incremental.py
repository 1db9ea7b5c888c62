"""Incremental feed updates: the new body against the last accepted one, line by line.

Place in the data flow: fetch → **incremental** (instead of parse → validate → merge) → sync. The
agent keeps a `Baseline` per feed in memory: the raw lines of the last accepted body, the listed
entries after never-block stripping (with reference counts for entries several lines list), and
the canonical content split so that a delta can be applied in place: per IP version the singles
no range covers (`a`, the hash set), the listed singles a range covers (`c`), the listed networks
(counted) and their merged ranges (`r`, the interval set). `step` parses only the added and
removed lines, applies the whole-list rules on counts (error page, unreadable, too wide, empty,
shrink, growth), and returns the new content, the element deltas for the kernel and the next
baseline; it never changes the baseline it was given (a refused update keeps the last good one).
Ranges are re-merged from the listed networks when a network came or went (networks are the few
entries; addresses are applied exactly). Pure. Only line-independent formats qualify: in
`feodo-csv` a header row decides how the other rows read.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field

from outguard.compile.intervals import merge
from outguard.feeds.alert import FeedAlert
from outguard.feeds.merge import Delta, FeedSet, net_range
from outguard.feeds.parse import Parsed, parse
from outguard.feeds.spec import FeedSpec
from outguard.feeds.validate import (
    NeverBlock,
    Verdict,
    count_refusal,
    looks_like_error_page,
    strip_parsed,
    too_wide,
    unreadable,
)

LINE_FORMATS = frozenset({"plain", "spamhaus-json", "dshield", "domains", "hosts"})
BITS = {4: 32, 6: 128}


def _covered(ranges: list[tuple[int, int]], value: int) -> bool:
    i = bisect_right(ranges, (value, 1 << 129)) - 1
    return i >= 0 and ranges[i][0] <= value <= ranges[i][1]


def _has(values: list[int], value: int) -> bool:
    i = bisect_left(values, value)
    return i < len(values) and values[i] == value


def _rebuild(values: list[int], drop: set[int], add: set[int]) -> list[int]:
    """Sorted `values` minus `drop` plus `add`: slices copied in C, one sort of a nearly sorted
    list (timsort merges the long run with the short one)."""
    if not drop and not add:
        return values
    out: list[int] = []
    prev = 0
    for i in sorted(bisect_left(values, v) for v in drop):
        out += values[prev:i]
        prev = i + 1
    out += values[prev:]
    if add:
        out += sorted(add)
        out.sort()
    return out


@dataclass
class Listed:
    """One IP version of a feed's listed content."""

    a: list[int] = field(default_factory=list)  # sorted singles no range covers (kernel hash set)
    c: list[int] = field(default_factory=list)  # sorted listed singles a range covers
    nets: Counter[tuple[int, int]] = field(default_factory=Counter)  # (value, length) → lines
    r: list[tuple[int, int]] = field(default_factory=list)  # merged ranges (kernel interval set)


@dataclass
class Baseline:
    fmt: str
    nb_digest: str
    copy_digest: str  # the stored last good copy this baseline is (FeedMeta.digest)
    lines: set[bytes]
    v: dict[int, Listed]
    refs: dict[tuple[int, int], int]  # extra lines listing a single: (version, value) → count
    domains: Counter[str]
    bad: int
    entries: int

    def content(self) -> FeedSet:
        return FeedSet(self.v[4].a, self.v[4].r, self.v[6].a, self.v[6].r, sorted(self.domains))


def _singles(p: Parsed, version: int) -> list[int]:
    return p.a4 if version == 4 else p.a6


def _nets(p: Parsed, version: int) -> list[tuple[int, int]]:
    return p.n4 if version == 4 else p.n6


def build(body: bytes, fmt: str, nb: NeverBlock, copy_digest: str,
          parsed: Parsed | None = None) -> Baseline:
    """The baseline of an accepted body (`parsed`: its full parse, to spare a second one)."""
    raw = body.split(b"\n")
    lines = set(raw)
    if parsed is None or len(lines) != len(raw):  # a repeated line counts once: parse each once
        parsed = parse(b"\n".join(lines), fmt)
    kept, _gone = strip_parsed(parsed, nb)  # singles come back sorted, repeats kept
    base = Baseline(fmt, nb.digest(), copy_digest, lines, {4: Listed(), 6: Listed()}, {},
                    Counter(kept.domains), parsed.bad, parsed.entries)
    for version in (4, 6):
        listed = base.v[version]
        listed.nets = Counter(_nets(kept, version))
        bits = BITS[version]
        listed.r = merge(net_range(v, n, bits) for v, n in listed.nets)
        distinct: list[int] = []
        for value in _singles(kept, version):
            if distinct and distinct[-1] == value:
                key = (version, value)
                base.refs[key] = base.refs.get(key, 0) + 1
            else:
                distinct.append(value)
        for value in distinct:
            (listed.c if _covered(listed.r, value) else listed.a).append(value)
    return base


@dataclass
class Step:
    verdict: Verdict
    baseline: Baseline | None = None  # the next baseline (None: refused)
    deltas: dict[str, Delta] = field(default_factory=dict)  # kind ("4a", "4n", ...) → delta
    parsed_lines: int = 0  # lines parsed (added + removed)


def step(base: Baseline, spec: FeedSpec, body: bytes, previous_count: int | None, nb: NeverBlock,
         *, force: bool = False) -> Step | None:
    """The update from `base` to `body`; None when the baseline does not apply (format or
    never-block list changed): the caller takes the full path."""
    if base.fmt != spec.format or spec.format not in LINE_FORMATS or base.nb_digest != nb.digest():
        return None
    alerts: list[FeedAlert] = []

    def refuse(kind: str, message: str, **details: object) -> Step:
        alerts.append(FeedAlert("error", spec.name, "refused", f"update refused: {message}",
                                {"reason": kind, **details}))
        return Step(Verdict(None, alerts))

    if (why := looks_like_error_page(body)) is not None:
        return refuse("error-page", why)
    raw = body.split(b"\n")
    old = base.lines
    fresh = set(raw)
    added, removed = fresh - old, old - fresh  # in C: a Python-level loop costs 0.2 s a million
    del fresh
    p_add = parse(b"\n".join(added), spec.format)
    p_rem = parse(b"\n".join(removed), spec.format)
    bad = base.bad + p_add.bad - p_rem.bad
    entries = base.entries + p_add.entries - p_rem.entries
    if bad:
        alerts.append(FeedAlert("warning", spec.name, "bad-lines",
                                f"{bad} line(s) could not be read and were skipped",
                                {"bad": bad, "samples": p_add.samples[:5]}))
    if (message := unreadable(spec, bad, entries)) is not None:
        return refuse("unreadable", message)
    if wide := too_wide(spec, p_add, nb):
        return refuse("too-wide", wide[0], networks=wide[1])
    k_add, gone_add = strip_parsed(p_add, nb)
    k_rem, _gone_rem = strip_parsed(p_rem, nb)
    if gone_add:
        alerts.append(FeedAlert("warning", spec.name, "removed",
                                f"{len(gone_add)} new entr{'y' if len(gone_add) == 1 else 'ies'}"
                                f" touching the never-block list removed, e.g. {gone_add[0][0]}"
                                f" ({gone_add[0][1]})", {"removed": gone_add[:50]}))
    refs = dict(base.refs)
    nxt = Baseline(base.fmt, base.nb_digest, "", set(), {}, refs, base.domains.copy(), bad, entries)
    deltas: dict[str, Delta] = {}
    for version in (4, 6):
        nxt.v[version], deltas[f"{version}a"], deltas[f"{version}n"] = _step_version(
            base.v[version], refs, version, _singles(k_add, version), _singles(k_rem, version),
            _nets(k_add, version), _nets(k_rem, version))
    nxt.domains.update(k_add.domains)
    nxt.domains.subtract(k_rem.domains)
    nxt.domains = +nxt.domains  # drop the names no line lists any more
    content = nxt.content()
    if (refusal := count_refusal(spec, content.count, previous_count, force)) is not None:
        return refuse(refusal[0], refusal[1], **refusal[2])
    # the line set changes in place only now, on acceptance: a copy of a million lines costs more
    nxt.lines = old
    old -= removed
    old.update(added)
    return Step(Verdict(content, alerts, gone_add), nxt,
                {k: d for k, d in deltas.items() if d}, len(added) + len(removed))


def _step_version(old: Listed, refs: dict[tuple[int, int], int], version: int,
                  add_singles: list[int], rem_singles: list[int],
                  add_nets: list[tuple[int, int]], rem_nets: list[tuple[int, int]],
                  ) -> tuple[Listed, Delta, Delta]:
    change: Counter[int] = Counter(add_singles)
    change.subtract(rem_singles)
    gone: set[int] = set()
    new: set[int] = set()
    for value, d in change.items():
        if d == 0:
            continue
        key = (version, value)
        before = (1 + refs.get(key, 0)) if _has(old.a, value) or _has(old.c, value) else 0
        after = before + d
        if after < 0:
            raise ValueError(f"line bookkeeping broke for {value}: {before} {d:+}")
        if before and not after:
            gone.add(value)
        elif after and not before:
            new.add(value)
        if after > 1:
            refs[key] = after - 1
        else:
            refs.pop(key, None)
    nets = old.nets
    r = old.r
    if add_nets or rem_nets:
        nets = old.nets.copy()
        nets.update(add_nets)
        nets.subtract(rem_nets)
        moved = any(nets[n] <= 0 for n in rem_nets) or any(n not in old.nets for n in add_nets)
        nets = +nets
        if moved:
            # all networks re-merged (0.2 s at 100,000): a windowed re-merge is still to do
            r = merge(net_range(v, n, BITS[version]) for v, n in nets)
    a_drop = {v for v in gone if _has(old.a, v)}
    c_drop = gone - a_drop
    a_add = {v for v in new if not _covered(r, v)}
    c_add = new - a_add
    r_add: list[tuple[int, int]] = []
    r_del: list[tuple[int, int]] = []
    if r is not old.r:
        before_r, after_r = set(old.r), set(r)
        r_add, r_del = sorted(after_r - before_r), sorted(before_r - after_r)
        for lo, hi in r_del:  # covered singles there may be bare now
            for v in old.c[bisect_left(old.c, lo):bisect_right(old.c, hi)]:
                if v not in gone and not _covered(r, v):
                    c_drop.add(v)
                    a_add.add(v)
        for lo, hi in r_add:  # bare singles there are covered now
            for v in old.a[bisect_left(old.a, lo):bisect_right(old.a, hi)]:
                if v not in gone:
                    a_drop.add(v)
                    c_add.add(v)
    listed = Listed(_rebuild(old.a, a_drop, a_add), _rebuild(old.c, c_drop, c_add), nets, r)
    return listed, Delta(sorted(a_add), sorted(a_drop)), Delta(r_add, r_del)

