"""The freshness API for metrics: each feed's age, entries, failures and last refusal."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from outguard.feeds.freshness import REFUSAL_REASONS, freshness
from outguard.feeds.policy import FEEDS
from outguard.feeds.spec import FeedSpec
from outguard.feeds.store import FeedStore
from outguard.feeds.update import update_feeds
from outguard.feeds.validate import default_never_block
from outguard.policy import load
from outguard.service.feedwatch import FeedWatch

# a policy's `@feed:` lists load as the pipeline loads them
load_text = partial(load.load_text, feeds=FEEDS)


def _update(spec: FeedSpec, store: FeedStore, now: float) -> str:
    results = asyncio.run(update_feeds([spec], store, default_never_block(), clock=lambda: now,
                                       ignore_interval=True))
    return results[0].status


def test_age_and_last_refusal(tmp_path: Path) -> None:
    listing = tmp_path / "bad.txt"
    spec = FeedSpec(name="local-bad", file=str(listing), format="plain", category="custom")
    store = FeedStore(tmp_path / "state" / "feeds")
    [never] = freshness(tmp_path / "state", ["local-bad"], now=1000.0)
    assert (never.has_copy, never.age_seconds, never.last_refusal_at) == (False, None, None)

    listing.write_text("198.51.100.1\n198.51.100.2\n")
    assert _update(spec, store, 1000.0) == "updated"
    [good] = freshness(tmp_path / "state", ["local-bad"], now=1600.0)
    assert (good.has_copy, good.entries, good.last_good_at, good.age_seconds) == (
        True, 2, 1000.0, 600.0)
    assert good.failures == 0 and good.last_refusal is None

    listing.write_text("".join(f"{n}.0.0.0/8\n" for n in range(1, 100)))  # 99 /8s
    assert _update(spec, store, 2000.0) == "refused"
    [refused] = freshness(tmp_path / "state", ["local-bad"], now=2500.0)
    assert refused.age_seconds == 1500.0 and refused.entries == 2  # the last good copy stays
    assert (refused.last_refusal_at, refused.last_refusal) == (2000.0, "coverage")
    assert refused.last_refusal in REFUSAL_REASONS
    assert refused.failures == 1 and "IPv4 address space" in (refused.last_error or "")

    listing.write_text("198.51.100.3\n198.51.100.2\n")
    assert _update(spec, store, 3000.0) == "updated"
    [again] = freshness(tmp_path / "state", ["local-bad"], now=3000.0)
    assert again.age_seconds == 0.0 and again.failures == 0 and again.last_error is None
    assert again.last_refusal_at == 2000.0  # the last refusal is remembered


def test_a_damaged_record_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "feeds" / "x").mkdir(parents=True)
    (tmp_path / "feeds" / "x" / "meta.json").write_text("{not json")
    [got] = freshness(tmp_path, ["x"])
    assert got.unreadable and got.last_error


def test_the_agents_feed_watch_reports_the_policys_feeds(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("198.51.100.1\n")
    policy = load_text('version: 1\ndeny:\n  - name: t\n    to: ["@feed:local-bad", "@feed:feodo"]\n'
                       'feeds:\n  local-bad: {file: bad.txt}\n', str(tmp_path / "p.yaml"),
                       base_dir=tmp_path, feed_dir=tmp_path / "state" / "feeds")
    watch = FeedWatch(lambda: policy, tmp_path / "state", None, lambda _a: None)
    watch.load_index()
    assert sorted(f.feed for f in watch.freshness(now=0.0)) == ["feodo", "local-bad"]
