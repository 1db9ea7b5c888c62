"""What `outguard feeds list` and `feeds show` print: a feed's spec and record, for people
(ISO times, ages, sizes) and for machines (`--json`: the same facts, ISO times, bytes).

Place in the data flow: registry/spec + store (the fetch record) → **report** → the CLI. Reads
the record and the copy's size from the store; otherwise pure.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from outguard.feeds.schedule import MAX_ROUND_GAP, next_due
from outguard.feeds.spec import FeedSpec
from outguard.feeds.store import FeedMeta, FeedStore


def iso(t: float | None, *, utc: bool = False) -> str | None:
    """ISO 8601 to the second, with the offset (local time, or UTC); None for 'never' (0)."""
    if not t:
        return None
    moment = datetime.fromtimestamp(t, UTC)
    return (moment if utc else moment.astimezone()).isoformat(timespec="seconds")


def ago(seconds: float) -> str:
    """An age for people: 45 s, 12 min, 3 h, 4 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(0.0, seconds):.0f} s"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def every(seconds: int) -> str:
    """A feed's minimum interval, compact: 1h, 15m, 90s."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _copy_bytes(store: FeedStore, name: str) -> int | None:
    if not store.has_copy(name):
        return None
    try:
        return store.copy_path(name).stat().st_size
    except OSError:
        return None


def show_json(spec: FeedSpec, store: FeedStore, used: bool) -> dict[str, Any]:
    """Everything `feeds show --json` says about one feed (times: ISO 8601 in UTC)."""
    meta = store.meta(spec.name)
    has_copy = store.has_copy(spec.name)
    return {
        "name": spec.name, "source": spec.source, "format": spec.format,
        "category": spec.category, "outbound": spec.outbound, "used_by_applied_policy": used,
        "terms": spec.terms, "licence": spec.licence, "description": spec.description,
        # None for a `file:` feed: it is read at every update
        "min_interval_s": spec.min_interval if spec.file is None else None,
        "max_bytes": spec.max_bytes, "limits": spec.limits.model_dump(),
        "last_good_copy": {
            "path": str(store.copy_path(spec.name)), "bytes": _copy_bytes(store, spec.name),
            "entries": meta.count, "per_set": meta.kinds,
            "confirmed_at": iso(meta.fetched_at, utc=True),
            "bad_lines": meta.bad_lines, "never_block_removed": meta.removed,
            "etag": meta.etag, "last_modified": meta.last_modified,
        } if has_copy else None,
        "last_attempt_at": iso(meta.attempted_at, utc=True),
        "consecutive_failures": meta.failures, "last_error": meta.last_error,
        "last_refusal": {"at": iso(meta.refused_at, utc=True), "reason": meta.refusal}
        if meta.refused_at else None,
        "next_due": iso(next_due(spec, meta), utc=True) or "now",
    }


def _how_often(spec: FeedSpec) -> str:
    if spec.file is not None:  # `schedule.next_due`: a local file is due at every update
        return (f"read at every update (each `feeds update`, and every round of the agent: at"
                f" least every {every(int(MAX_ROUND_GAP))})")
    return f"fetched at most every {every(spec.min_interval)}"


def show_lines(spec: FeedSpec, store: FeedStore, used: bool,
               now: float | None = None) -> list[str]:
    """`feeds show NAME` for people: one fact a line, times local with their offset."""
    at = time.time() if now is None else now
    meta = store.meta(spec.name)
    lim = spec.limits
    rows = [
        ("feed", spec.name + ("" if used else "  (not used by the applied policy)")),
        ("source", spec.source),
        ("format", spec.format),
        ("category", f"{spec.category}; matters for outbound traffic: "
                     f"{'yes' if spec.outbound else 'no'}"),
        ("description", spec.description),
        ("terms", spec.licence or spec.terms or "-"),
        ("interval", f"{_how_often(spec)}; size limit {size(spec.max_bytes)}"),
        ("limits", f"{'may' if lim.may_be_empty else 'may not'} be empty; shrink up to"
                   f" {lim.max_shrink:.0%}, growth up to {lim.max_growth:g}x; networks up to"
                   f" /{lim.min_prefix4} (IPv4), /{lim.min_prefix6} (IPv6)"),
        ("coverage", f"up to {lim.max_coverage4:.3g} of IPv4 ({lim.max_coverage4 * 256:,.3g}"
                     f" /8s), {lim.max_coverage6:.3g} of IPv6 ({lim.max_coverage6 * 2**32:,.0f}"
                     " /32s)"),
    ]
    rows += _record_rows(spec, store, meta, at)
    width = max(len(k) for k, _v in rows)
    return [f"{k:<{width}}  {v}" for k, v in rows if v]


def _record_rows(spec: FeedSpec, store: FeedStore, meta: FeedMeta,
                 at: float) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    copy_bytes = _copy_bytes(store, spec.name)
    if copy_bytes is None:
        rows.append(("last good", "none yet: the feed's sets are empty until"
                                  f" `outguard feeds update {spec.name}`"))
    else:
        confirmed = (f"confirmed {iso(meta.fetched_at)} ({ago(at - meta.fetched_at)} ago), "
                     if meta.fetched_at else "")
        rows.append(("last good", f"{confirmed}{meta.count:,} entries, {size(copy_bytes)}"
                                  f" at {store.copy_path(spec.name)}"))
        if meta.bad_lines or meta.removed:
            rows.append(("skipped", f"{meta.bad_lines:,} bad lines, {meta.removed:,} never-block"
                                    " entries removed"))
    if meta.attempted_at:
        state = "ok" if not meta.failures else \
            f"failing, {meta.failures} in a row: {meta.last_error}"
        rows.append(("last try", f"{iso(meta.attempted_at)} ({ago(at - meta.attempted_at)}"
                                 f" ago): {state}"))
    if meta.refused_at:
        rows.append(("last refusal", f"{iso(meta.refused_at)} ({meta.refusal})"))
    due = next_due(spec, meta)
    rows.append(("next fetch", "now" if due <= at else f"{iso(due)} (in {ago(due - at)})"))
    return rows


def list_row(spec: FeedSpec, store: FeedStore, used: bool) -> dict[str, Any]:
    """One row of `feeds list` (also its `--json`)."""
    meta = store.meta(spec.name)
    has_copy = store.has_copy(spec.name)
    return {"name": spec.name, "used": used, "format": spec.format, "category": spec.category,
            "outbound": spec.outbound,
            "min_interval_s": spec.min_interval if spec.file is None else None,
            "entries": meta.count if has_copy else None,
            "last_good": iso(meta.fetched_at, utc=True) if has_copy else None,
            "failures": meta.failures, "terms": spec.terms or "-"}


def list_lines(specs: list[FeedSpec], store: FeedStore, used: set[str]) -> list[str]:
    """`feeds list` for people: a header, then a line per feed (times local)."""
    out = [f"{'feed':22} {'used':4} {'format':13} {'category':20} {'out':3} {'every':>6}"
           f" {'entries':>8}  {'last good':16}  terms"]
    for spec in specs:
        meta = store.meta(spec.name)
        has_copy = store.has_copy(spec.name)
        when = (iso(meta.fetched_at) or "-")[:16].replace("T", " ") if has_copy else "-"
        if meta.failures:
            when += f" ({meta.failures} failed)"
        entries = f"{meta.count:,}" if has_copy else "-"
        out.append(f"{spec.name:22} {'yes' if spec.name in used else '':4} {spec.format:13}"
                   f" {spec.category:20} {'yes' if spec.outbound else 'no':3}"
                   f" {'update' if spec.file else every(spec.min_interval):>6} {entries:>8}"
                   f"  {when:16}  {spec.terms or '-'}")
    return out
