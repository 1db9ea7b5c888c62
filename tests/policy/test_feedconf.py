"""policy.feedconf: a policy's own feed names a url or a file, never both."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from outguard.policy.feedconf import FeedDef


def test_a_feed_has_a_url_or_a_file() -> None:
    assert FeedDef(url="https://example.org/drop.txt").format == "plain"
    assert FeedDef(file="bad.txt", max_shrink=0.9).max_shrink == 0.9
    for bad in ({}, {"url": "https://example.org/x", "file": "x"}, {"url": "ftp://example.org/x"}):
        with pytest.raises(ValidationError):
            FeedDef(**bad)
