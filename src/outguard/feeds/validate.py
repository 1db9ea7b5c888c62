"""Validation before anything reaches the kernel: refuse bad downloads, strip never-block entries.

Place in the data flow: fetch → parse → **validate** → merge → sync. Refused (the last good copy
stays, an alert is raised): an HTML or binary body (an error page); a body with more bad lines
than entries (not a list: its lines are never echoed, only their numbers); any network wider
than /8 (IPv4) or /24 (IPv6); a list that blocks more than its share of an IP version's address
space (`max_coverage4`/`max_coverage6`, counted after never-block removal); an empty list
(unless the feed may be empty, as Feodo often is); a shrink or growth beyond the feed's limits
against the last good copy (unless forced). Removed and reported: entries touching the
never-block list (`NeverBlock`, built by `feeds.policy.never_block_of`) — special ranges, the
metadata address, the resolvers and the policy's DNS upstreams, and what the policy allows by
address (FireHOL level1 contains 10.0.0.0/8). Pure.

Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are not
never-block: nothing routes them, so blocking them harms nothing, and the tests use them.

The IPv4 entries (up to millions) are stripped on numpy arrays (`v4arrays`) and handed to
`FeedSet.of_arrays` as arrays; IPv6 (few entries) stays on the Python sweep.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from outguard.events import FeedAlert
from outguard.feeds import v4arrays
from outguard.feeds.merge import BITS, FeedSet, range_text
from outguard.feeds.parse import Parsed
from outguard.feeds.spec import FeedSpec
from outguard.feeds.v4arrays import V4Entries
from outguard.policy.targets import int_to_text, text_to_int

SPECIAL = {
    4: ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
        "240.0.0.0/4"],
    6: ["::/127", "::ffff:0:0/96", "64:ff9b::/96", "fc00::/7", "fe80::/10", "ff00::/8"],
}
METADATA = ["169.254.169.254", "fd00:ec2::254"]


@dataclass
class NeverBlock:
    """Ranges no feed may block, with why, per IP version (merged lazily)."""

    ranges: dict[int, list[tuple[int, int, str]]] = field(default_factory=lambda: {4: [], 6: []})

    def add(self, text: str, why: str) -> None:
        addr, _, length = text.partition("/")
        version = 6 if ":" in addr else 4
        value = text_to_int(addr, version)
        bits = BITS[version]
        size = 1 << (bits - int(length)) if length else 1
        first = value & ~(size - 1)
        self.ranges[version].append((first, first + size - 1, why))

    def digest(self) -> str:
        items = sorted((v, a, b) for v, rs in self.ranges.items() for a, b, _ in rs)
        return hashlib.sha256(repr(items).encode()).hexdigest()

    def merged(self, version: int) -> list[tuple[int, int, str]]:
        """Disjoint, sorted ranges (an overlap keeps the first reason)."""
        out: list[tuple[int, int, str]] = []
        for first, last, why in sorted(self.ranges[version]):
            if out and first <= out[-1][1] + 1:  # adjacent too: 224/4 + 240/4 cover 224/3
                out[-1] = (out[-1][0], max(last, out[-1][1]), out[-1][2])
            else:
                out.append((first, last, why))
        return out


def default_never_block(resolvers: Sequence[str] = (),
                        allowed: Sequence[str | tuple[str, str]] = (),
                        upstreams: Sequence[str] = ()) -> NeverBlock:
    """Special ranges and the metadata address, plus the system's resolvers, addresses the
    policy allows (`allowed`: texts, or (text, why) pairs) and the `dns:` upstreams."""
    out = NeverBlock()
    for nets in SPECIAL.values():
        for net in nets:
            out.add(net, f"special range {net}")
    for addr in METADATA:
        out.add(addr, "cloud metadata address")
    for addr in resolvers:
        out.add(addr, f"resolver {addr}")
    for addr in upstreams:
        out.add(addr, f"DNS upstream {addr} of the policy")
    for item in allowed:
        text, why = (item, f"allowed by the policy ({item})") if isinstance(item, str) else item
        out.add(text, why)
    return out


def _sweep(items: list[tuple[int, int]], blocks: list[tuple[int, int, str]],
           version: int) -> tuple[list[tuple[int, int]], list[tuple[str, str]]]:
    """Split sorted (first, last) items into those clear of the disjoint sorted blocks and the
    removed ones (with why): one linear sweep. Also for canonical IPv4 ranges (tens of
    thousands): on arrays, the round trip through lists costs what the loop saves."""
    kept: list[tuple[int, int]] = []
    removed: list[tuple[str, str]] = []
    j = 0
    for first, last in items:
        while j < len(blocks) and blocks[j][1] < first:
            j += 1
        # blocks[j] is the first block ending at or after `first`: the only one that can overlap
        if j < len(blocks) and blocks[j][0] <= last:
            removed.append((range_text(first, last, version), blocks[j][2]))
        else:
            kept.append((first, last))
    return kept, removed


def _strip_singles(values: list[int], blocks: list[tuple[int, int, str]],
                   version: int) -> tuple[list[int], list[tuple[str, str]]]:
    """Sorted unique singles minus those inside a block: a bisect per block (blocks are few),
    list slices in C, nothing per entry (so canonical IPv4 lists stay lists here too)."""
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


def strip_never_block(content: FeedSet, nb: NeverBlock) -> tuple[FeedSet, list[tuple[str, str]]]:
    """Remove every entry of canonical content that touches a never-block range."""
    removed: list[tuple[str, str]] = []
    out = FeedSet(domains=content.domains)
    for version in (4, 6):
        blocks = nb.merged(version)
        singles, gone = _strip_singles(content.singles(version), blocks, version)
        removed += gone
        ranges, gone = _sweep(content.ranges(version), blocks, version)
        removed += gone
        if version == 4:
            out.a4, out.r4 = singles, ranges
        else:
            out.a6, out.r6 = singles, ranges
    return out, removed


def _removed_spans(firsts: v4arrays.U32, lasts: v4arrays.U32, at: NDArray[np.intp],
                   blocks: list[tuple[int, int, str]]) -> list[tuple[str, str]]:
    return [(range_text(first, last, 4), blocks[j][2])
            for first, last, j in zip(firsts.tolist(), lasts.tolist(), at.tolist(), strict=True)]


def strip_parsed(parsed: Parsed, nb: NeverBlock) -> tuple[Parsed, list[tuple[str, str]]]:
    """The same on entries as published, before merging, so that a removed prefix never takes
    a neighbouring one with it. Singles come back sorted, duplicates kept (merging drops them);
    networks sorted and unique. `parsed` is left as it is."""
    v4, rest, removed = _strip(parsed, nb)
    rest.a4, rest.n4 = v4.singles.tolist(), v4.net_list()
    return rest, removed


def _strip(parsed: Parsed, nb: NeverBlock, v4: V4Entries | None = None,
           ) -> tuple[V4Entries, Parsed, list[tuple[str, str]]]:
    """`strip_parsed` with the kept IPv4 entries as arrays (the rest in a Parsed without IPv4);
    `v4`: parsed's IPv4 entries as arrays, when the caller has them. Removed: IPv4 singles
    (each once), IPv4 networks, then the same for IPv6."""
    if v4 is None:
        v4 = parsed.v4()
    blocks = nb.merged(4)
    singles, gone4 = v4arrays.strip_singles(np.sort(v4.singles), blocks)
    removed = [(int_to_text(v, 4), why)
               for values, why in gone4 for v in v4arrays.unique_sorted(values).tolist()]
    values, lengths = v4arrays.sorted_unique_nets(v4.net_values, v4.net_lengths)
    firsts, lasts = v4arrays.net_spans(values, lengths)
    hit, at = v4arrays.sweep(firsts, lasts, blocks)
    removed += _removed_spans(firsts[hit], lasts[hit], at[hit], blocks)
    clear = ~hit
    v4 = V4Entries(singles, values[clear], lengths[clear])

    out = Parsed(domains=parsed.domains, bad=parsed.bad, samples=parsed.samples)
    blocks = nb.merged(6)
    out.a6, gone = _strip_singles(sorted(parsed.a6), blocks, 6)
    removed += dict.fromkeys(gone)
    nets6 = sorted(set(parsed.n6))
    spans = [(v, v | ((1 << (128 - n)) - 1)) for v, n in nets6]
    kept, gone = _sweep(spans, blocks, 6)
    removed += gone
    keep = set(kept)
    out.n6 = [net for net, span in zip(nets6, spans, strict=True) if span in keep]
    return v4, out, removed


def _inside(blocks: list[tuple[int, int, str]], first: int, last: int) -> bool:
    return any(lo <= first and last <= hi for lo, hi, _why in blocks)


def looks_like_error_page(data: bytes) -> str | None:
    head = data[:4096]
    if b"\0" in head:
        return "the body is binary, not a text list"
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")) \
            or b"<html" in low[:512] or b"<title>" in low[:1024]:
        return "the body is an HTML/XML page (an error or login page?), not a list"
    return None


@dataclass
class Verdict:
    content: FeedSet | None  # None: refused, keep the last good copy
    alerts: list[FeedAlert]
    removed: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None  # why it was refused (the `reason` of the refusal alert)


def validate(spec: FeedSpec, data: bytes, parsed: Parsed, previous_count: int | None,
             nb: NeverBlock, *, force: bool = False) -> Verdict:
    """Refuse, or return the canonical content to load (never-block entries removed)."""
    alerts: list[FeedAlert] = []

    def refuse(kind: str, message: str, **details: object) -> Verdict:
        alerts.append(FeedAlert("error", spec.name, "refused", f"update refused: {message}",
                                {"reason": kind, **details}))
        return Verdict(None, alerts, reason=kind)

    if (why := looks_like_error_page(data)) is not None:
        return refuse("error-page", why)
    if (message := unreadable(spec, parsed.bad, parsed.entries)) is not None:
        # not a list: its lines (a wrong path, /etc/shadow) are never echoed, only their numbers
        return refuse("unreadable", f"{message}; first bad lines: {_numbers(parsed)}",
                      bad=parsed.bad, lines=[line for line, _t, _w in parsed.samples[:5]])
    if parsed.bad:
        alerts.append(bad_lines_alert(spec, parsed))
    v4 = parsed.v4()
    if wide := too_wide(spec, parsed, nb, v4):
        return refuse("too-wide", wide[0], networks=wide[1])
    v4, kept, removed = _strip(parsed, nb, v4)
    if removed:
        alerts.append(FeedAlert("warning", spec.name, "removed",
                                f"{len(removed)} entr{'y' if len(removed) == 1 else 'ies'} touching"
                                f" the never-block list removed: {_removed_text(removed)}",
                                {"removed": removed[:50]}))
    content = FeedSet.of_arrays(v4, kept)
    if (over := coverage_refusal(spec, content)) is not None:
        return refuse(over[0], over[1], **over[2])
    if (refusal := count_refusal(spec, content.count, previous_count, force)) is not None:
        return refuse(refusal[0], refusal[1], **refusal[2])
    return Verdict(content, alerts, removed)


def _numbers(parsed: Parsed) -> str:
    shown = ", ".join(str(line) for line, _t, _w in parsed.samples[:5])
    return shown + (", ..." if parsed.bad > 5 else "")


def _removed_text(removed: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{entry} ({why})" for entry, why in removed[:5])
    return shown + (f"; and {len(removed) - 5} more" if len(removed) > 5 else "")


def bad_lines_alert(spec: FeedSpec, parsed: Parsed) -> FeedAlert:
    """The skipped lines of a list that did parse: numbers and reasons in the message, the
    lines' text only in the details (`feeds check`, `--json`)."""
    shown = "; ".join(f"line {line}: {why}" for line, _text, why in parsed.samples[:3])
    more = ", ..." if parsed.bad > 3 else ""
    return FeedAlert("warning", spec.name, "bad-lines",
                     f"{parsed.bad} line(s) could not be read and were skipped ({shown}{more})",
                     {"bad": parsed.bad, "samples": parsed.samples[:5]})


def unreadable(spec: FeedSpec, bad: int, entries: int) -> str | None:
    """More bad lines than entries: not a list in this format (a wrong path or format)."""
    if bad > entries:
        return (f"{bad} of {bad + entries} lines are not {spec.format} entries (wrong format, or"
                " not a list)")
    return None


def too_wide(spec: FeedSpec, parsed: Parsed, nb: NeverBlock,
             v4: V4Entries | None = None) -> tuple[str, list[str]] | None:
    """A too-wide network refuses the update, unless it lies wholly in never-block space
    (FireHOL's fullbogons 224.0.0.0/3): then it is only removed. 0.0.0.0/0 never is.
    `v4`: parsed's IPv4 entries as arrays, when the caller has them already."""
    limits = spec.limits
    if v4 is None:
        v4 = parsed.v4()
    at = np.flatnonzero(v4.net_lengths < limits.min_prefix4)
    wide4 = list(zip(v4.net_values[at].tolist(), v4.net_lengths[at].tolist(), strict=True))
    wide = [(4, v, n) for v, n in wide4] + \
           [(6, v, n) for v, n in parsed.n6 if n < limits.min_prefix6]
    texts = [f"{int_to_text(v, ver)}/{n}" for ver, v, n in wide
             if not _inside(nb.merged(ver), v, v | ((1 << (BITS[ver] - n)) - 1))]
    if not texts:
        return None
    return (f"{len(texts)} network(s) wider than /{limits.min_prefix4} (IPv4) or"
            f" /{limits.min_prefix6} (IPv6): {', '.join(texts[:5])}", texts[:20])


def coverage_refusal(spec: FeedSpec, content: FeedSet) -> tuple[str, str, dict[str, object]] | None:
    """A list that blocks more of an IP version's address space than the feed's limit (after
    never-block removal): 223 separate /8s pass the widest-prefix rule, not this one."""
    limits = spec.limits
    for version, cap, unit in ((4, limits.max_coverage4, 8), (6, limits.max_coverage6, 32)):
        covered = content.covered(version)
        share = covered / (1 << BITS[version])
        if share > cap:
            units = covered / (1 << (BITS[version] - unit))
            return ("coverage",
                    f"blocks {share:.3%} of the IPv{version} address space ({covered:,} addresses,"
                    f" as many as {units:,.1f} /{unit} networks); the limit is {cap:.3%}"
                    f" (max_coverage{version})",
                    {"version": version, "covered": covered, "share": share, "limit": cap})
    return None


# Ratios of small numbers are noise (Feodo swings between none and a few hundred), so: growth is
# judged against at least GROWTH_BASE entries (a smaller list may grow to 3x that; below 10
# entries it used to be skipped, so 5 entries could become a million); a shrink only from
# SHRINK_MIN entries (losing a few entries of a tiny list costs little, and an empty result is
# refused anyway unless the feed may be empty).
GROWTH_BASE = 100
SHRINK_MIN = 10


def count_refusal(spec: FeedSpec, count: int, previous_count: int | None,
                  force: bool) -> tuple[str, str, dict[str, object]] | None:
    """The whole-list rules on counts: (reason, message, details) when they refuse."""
    limits = spec.limits
    if count == 0 and not limits.may_be_empty:
        return "empty", "the list is empty (this feed is not allowed to be)", {}
    if force or previous_count is None:
        return None
    accept = f"accept it with `outguard feeds update --force {spec.name}`"
    if previous_count >= SHRINK_MIN and count < previous_count * (1 - limits.max_shrink):
        return ("shrink", f"{count} entries against {previous_count} in the last good copy:"
                f" shrinks by more than {limits.max_shrink:.0%} ({accept})",
                {"previous": previous_count, "now": count})
    if count > (most := max(previous_count, GROWTH_BASE) * limits.max_growth):
        how = f"grows by more than {limits.max_growth:g}x" if previous_count >= GROWTH_BASE \
            else f"a list of under {GROWTH_BASE} entries may grow to {most:.0f}"
        return ("growth", f"{count} entries against {previous_count} in the last good copy:"
                f" {how} ({accept})", {"previous": previous_count, "now": count})
    return None
