"""When a feed may be fetched again: its minimum interval, and exponential backoff after failures.

Pure: a feed's record and the clock in, a time out. The agent's scheduler and `outguard feeds
update` (without --force) both ask `next_due`.
"""

from __future__ import annotations

from outguard.feeds.spec import FeedSpec
from outguard.feeds.store import FeedMeta

MAX_BACKOFF = 24 * 3600.0
# the agent's rounds are at most this far apart: a `file:` feed (due at every round) is read
# at least this often
MAX_ROUND_GAP = 300.0


def backoff(spec: FeedSpec, failures: int) -> float:
    """Seconds to wait after `failures` consecutive failures: the interval, doubled each time,
    at least 60 s, at most a day."""
    if failures <= 0:
        return float(spec.min_interval)
    return min(MAX_BACKOFF, max(60.0, spec.min_interval * 2.0 ** min(failures, 16)))


def next_due(spec: FeedSpec, meta: FeedMeta) -> float:
    """Unix time from which the feed may be fetched again (0: now)."""
    if spec.file is not None:
        return 0.0  # a local file costs nobody anything
    if meta.attempted_at <= 0:
        return 0.0
    if meta.failures:
        return meta.attempted_at + backoff(spec, meta.failures)
    return meta.attempted_at + spec.min_interval


def is_due(spec: FeedSpec, meta: FeedMeta, now: float) -> bool:
    return now >= next_due(spec, meta)
