"""pipeline: a policy's feeds load through it (and not without a loader), and the applied policy
loads as it was applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard import pipeline
from outguard.errors import PolicyError
from outguard.feeds.policy import FeedList
from outguard.policy.load import load_text
from outguard.state import Snapshot, StateDir

POLICY = """version: 1
deny:
  - name: intel
    to: ["@feed:local-bad"]
allow:
  - name: web
    to: [203.0.113.7]
feeds:
  local-bad: {file: bad.txt, format: plain}
"""


def test_feeds_load_through_the_pipeline_only(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("198.51.100.0/24\n")
    (tmp_path / "p.yaml").write_text(POLICY)
    policy = pipeline.load_policy(tmp_path / "p.yaml", feed_dir=tmp_path / "feeds")
    assert isinstance(policy.lists["feed:local-bad"], FeedList)
    ruleset, compiled = pipeline.compile_policy(policy)
    assert "list:feed:local-bad" in ruleset.sources
    assert any(name.startswith("l_feed_local_bad_") for name in compiled.sets)
    with pytest.raises(PolicyError, match=r"deny\[0\]\.to\[0\]: @feed:local-bad: feeds are not"
                                          r" loaded here"):
        load_text(POLICY, str(tmp_path / "p.yaml"), base_dir=tmp_path)


def test_the_applied_policy_loads_from_its_stored_text(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    assert pipeline.load_applied(state) is None
    (tmp_path / "bad.txt").write_text("198.51.100.0/24\n")
    source = tmp_path / "p.yaml"
    source.write_text("version: 1\n")  # the file changed since: the stored text counts
    state.ensure()
    snap = Snapshot(policy_hash="h", applied_at="2026-01-01T00:00:00+00:00", mode="enforce",
                    source=str(source), inventory={}, counters={})
    state.write(snap, POLICY, b"[]")
    policy = pipeline.load_applied(state)
    assert policy is not None and policy.text == POLICY
    assert "feed:local-bad" in policy.lists

