"""One update round: a body refused again unchanged is marked a repeat (the agent alerts once)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from outguard.feeds.spec import FeedSpec
from outguard.feeds.store import FeedStore
from outguard.feeds.update import FeedResult, update_feeds
from outguard.feeds.validate import default_never_block


def _round(spec: FeedSpec, store: FeedStore) -> FeedResult:
    return asyncio.run(update_feeds([spec], store, default_never_block(),
                                    ignore_interval=True))[0]


def test_the_same_refused_body_is_a_repeat(tmp_path: Path) -> None:
    listing = tmp_path / "bad.txt"
    spec = FeedSpec(name="local-bad", file=str(listing), format="plain", category="custom")
    store = FeedStore(tmp_path / "feeds")
    listing.write_text("<html><title>oops</title></html>\n")
    first, again = _round(spec, store), _round(spec, store)
    assert (first.status, first.repeat) == ("refused", False)
    assert (again.status, again.repeat) == ("refused", True) and again.alerts  # still shown
    listing.write_text("0.0.0.0/0\n")  # another refused body: news
    assert _round(spec, store).repeat is False
    listing.write_text("198.51.100.1\n")
    assert _round(spec, store).status == "updated"
    listing.write_text("0.0.0.0/0\n")  # refused again after a success: news again
    assert _round(spec, store).repeat is False
