"""Shared data for the feed tests: the real feed files in the project's shared/feeds folder.

CI runs on a fresh clone with shared/ beside it (../shared/feeds from the repository root, or
further up for a git worktree), so
the tests read them there rather than copying them in: some providers' terms (Spamhaus) forbid
redistributing their data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
# beside the clone, or beside a folder of git worktrees (../../shared/feeds)
SHARED = next((p / "shared" / "feeds" for p in _ROOT.parents
               if (p / "shared" / "feeds" / "SOURCES.md").exists()),
              _ROOT.parent / "shared" / "feeds")


@pytest.fixture(scope="session")
def shared_feeds() -> Path:
    assert (SHARED / "SOURCES.md").exists(), f"the real feed files are expected in {SHARED}"
    return SHARED
