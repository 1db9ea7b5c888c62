"""How fresh each feed's last good copy is: the read-only view metrics and `feeds list` use.

Place in the data flow: update (fetch → validate → store) writes each feed's record
(`<state-dir>/feeds/NAME/meta.json`); this reads the records, nothing else (no copy, no policy,
no kernel), so a metrics scrape costs a few small file reads. The agent's `FeedWatch.freshness()`
calls it for the feeds of the applied policy.

    from outguard.feeds.freshness import freshness
    for f in freshness(state_dir, ["spamhaus-drop", "feodo"]):
        f.age_seconds          # since the copy was last confirmed current; None: no copy yet
        f.last_refusal_at      # when validation last refused an update (None: never)

Suggested metrics (per `feed` label): `outguard_feed_age_seconds`, `outguard_feed_entries`,
`outguard_feed_consecutive_failures`, `outguard_feed_last_refusal_timestamp_seconds` (with the
refusal's `reason` as a second label: a handful of fixed words, see `REFUSAL_REASONS`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from outguard.errors import StateError
from outguard.feeds.store import FeedStore

# the `reason` of a refused update (`validate.Verdict.reason`): a closed set, fit for a label
REFUSAL_REASONS = ("error-page", "unreadable", "too-wide", "coverage", "empty", "shrink", "growth")


@dataclass(frozen=True)
class FeedFreshness:
    """One feed's state for monitoring. Times are Unix seconds; None: it never happened."""

    feed: str
    has_copy: bool  # a last good copy exists (else the feed's sets are empty)
    entries: int  # entries of the last good copy
    last_good_at: float | None  # last download that confirmed the copy (200 accepted, or 304)
    age_seconds: float | None  # now - last_good_at; None without a copy
    last_attempt_at: float | None
    failures: int  # consecutive failed or refused attempts (0: the last one worked)
    last_error: str | None  # why the latest attempt failed or was refused, while failures > 0
    last_refusal_at: float | None  # the last update validation refused (kept after successes)
    last_refusal: str | None  # its reason, one of REFUSAL_REASONS
    unreadable: bool = False  # the record itself could not be read (a damaged state dir)


def freshness(state_dir: Path, feeds: Iterable[str], *,
              now: float | None = None) -> list[FeedFreshness]:
    """The freshness of each named feed, from its record in `state_dir`/feeds (never raises
    for a damaged record: that feed comes back with `unreadable` set)."""
    store = FeedStore(state_dir / "feeds")
    at = time.time() if now is None else now
    out: list[FeedFreshness] = []
    for name in feeds:
        try:
            meta = store.meta(name)
        except StateError:
            out.append(FeedFreshness(name, store.has_copy(name), 0, None, None, None, 0,
                                     "the feed's record is unreadable", None, None, True))
            continue
        has_copy = store.has_copy(name)
        good = meta.fetched_at if has_copy and meta.fetched_at > 0 else None
        out.append(FeedFreshness(
            feed=name, has_copy=has_copy, entries=meta.count if has_copy else 0,
            last_good_at=good, age_seconds=None if good is None else max(0.0, at - good),
            last_attempt_at=meta.attempted_at or None, failures=meta.failures,
            last_error=meta.last_error if meta.failures else None,
            last_refusal_at=meta.refused_at or None, last_refusal=meta.refusal))
    return out
