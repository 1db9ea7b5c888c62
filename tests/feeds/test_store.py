"""The feed store on disk: private folders and files (hostile finding: `feeds/` was 0755)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from outguard.errors import StateError
from outguard.feeds.merge import FeedSet
from outguard.feeds.store import FeedMeta, FeedStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_folders_are_0700_and_files_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = FeedStore(tmp_path / "state" / "feeds")
        store.write_copy("corp-bad", FeedSet(a4=[0xC6336401]))
        store.write_meta("corp-bad", FeedMeta(count=1))
        store.write_kernel_record("corp-bad", {})
    finally:
        os.umask(old)
    assert _mode(tmp_path / "state" / "feeds") == 0o700
    assert _mode(tmp_path / "state" / "feeds" / "corp-bad") == 0o700
    for name in ("good.bin", "meta.json", "kernel.json"):
        assert _mode(tmp_path / "state" / "feeds" / "corp-bad" / name) == 0o600, name


def test_an_open_folder_of_an_older_outguard_is_closed(tmp_path: Path) -> None:
    (tmp_path / "feeds" / "x").mkdir(parents=True)
    os.chmod(tmp_path / "feeds", 0o755)
    os.chmod(tmp_path / "feeds" / "x", 0o755)
    FeedStore(tmp_path / "feeds").write_meta("x", FeedMeta())
    assert _mode(tmp_path / "feeds") == 0o700 and _mode(tmp_path / "feeds" / "x") == 0o700


def test_a_write_that_fails_is_a_state_error(tmp_path: Path) -> None:
    """An OSError (full disk, read-only state dir) was a traceback in `feeds update` and ended
    the agent's feed task; it is a StateError, which both report."""
    store = FeedStore(tmp_path / "feeds")
    store.write_meta("x", FeedMeta())
    (tmp_path / "feeds" / "x" / "meta.json").unlink()
    (tmp_path / "feeds" / "x" / "meta.json").mkdir()  # os.replace onto a directory fails
    with pytest.raises(StateError, match=r"cannot write .*meta\.json"):
        store.write_meta("x", FeedMeta())
