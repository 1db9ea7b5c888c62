"""The state directory's reading of snapshots (no kernel)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from outguard.errors import StateError
from outguard.state import Snapshot, StateDir


def _snap() -> Snapshot:
    return Snapshot(policy_hash="h", applied_at="2026-11-21T00:00:00+00:00", mode="enforce",
                    source="/p.yaml", inventory={"chains": ["output"], "sets": [],
                                                 "counters": ["default"]},
                    counters={"default": "default"}, snapshot_id="s1", generation=["id", 7])


def test_a_written_snapshot_reads_back_equal(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.write(_snap(), "version: 1\n", b"[]")
    got = state.read("applied")
    assert got is not None and got[0] == _snap() and got[1] == []
    assert state.snapshot("applied") == _snap()


def test_keys_a_newer_outguard_added_are_ignored(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.write(_snap(), "version: 1\n", b"[]")
    path = tmp_path / "applied" / "state.json"
    meta = json.loads(path.read_text())
    meta["something_new"] = {"x": 1}
    path.write_text(json.dumps(meta))
    assert state.snapshot("applied") == _snap()
    got = state.read("applied")
    assert got is not None and got[0] == _snap()


@pytest.mark.parametrize("meta", [{"policy_hash": "h"}, ["not", "an", "object"], "text"])
def test_a_broken_state_file_is_a_state_error_naming_the_folder(tmp_path: Path,
                                                                 meta: object) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.write(_snap(), "version: 1\n", b"[]")
    (tmp_path / "applied" / "state.json").write_bytes(orjson.dumps(meta))
    for read in (state.snapshot, state.read):
        with pytest.raises(StateError, match=f"state in {tmp_path / 'applied'} is unreadable"):
            read("applied")


def test_set_inventory_records_leftovers_and_forgets_the_generation(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.write(_snap(), "version: 1\n", b"[]")
    inventory = {"chains": ["output", "g_old"], "sets": ["m_old"], "counters": ["default"],
                 "rules": {}}
    state.set_inventory(inventory)
    got = state.snapshot("applied")
    assert got is not None
    assert got.inventory == inventory and got.generation is None
    assert (tmp_path / "applied" / "state.json").stat().st_mode & 0o777 == 0o600


def test_a_pending_file_with_keys_a_newer_outguard_added_is_read(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    (tmp_path / "pending.json").write_text(json.dumps({
        "token": "t", "deadline": 1.0, "watchdog_pid": 5, "policy_hash": "h", "base": "s1",
        "something_new": True}))
    got = state.pending()
    assert got is not None and (got.token, got.watchdog_pid, got.base) == ("t", 5, "s1")


def _with_sets(sets: list[str], snapshot_id: str) -> Snapshot:
    snap = _snap()
    snap.snapshot_id, snap.inventory = snapshot_id, {"chains": [], "sets": sets, "counters": []}
    return snap


@pytest.mark.parametrize("record", [True, False])
def test_a_rollback_that_left_a_set_over_keeps_its_elements(tmp_path: Path,
                                                            record: bool) -> None:
    """A applied, then B with a set of its own; a rollback whose cleanup the kernel refused
    leaves B's set in the kernel: its stored elements must stay too (a later rollback to a
    policy using it loads them), which they do only if the leftover is recorded as the
    rollback restores A."""
    state = StateDir(tmp_path)
    state.ensure()
    state.write(_with_sets(["l_a"], "A"), "version: 1\n", b"[]")
    state.store_set("l_a", ["203.0.113.1"])
    state.write(_with_sets(["l_a", "l_b"], "B"), "version: 1\n", b"[]")
    state.store_set("l_b", ["203.0.113.2"])
    leftover = {"chains": [], "sets": ["l_a", "l_b"], "counters": [], "rules": {}}
    state.restore_previous(leftover if record else None)
    got = state.snapshot("applied")
    assert got is not None and got.snapshot_id == "A"
    assert state.has_set("l_a")
    assert state.has_set("l_b") == record
    if record:
        assert state.load_set("l_b") == ["203.0.113.2"]
        assert got.inventory == leftover and got.generation is None


def test_rollback_record_and_commit_record(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert state.last_rollback() is None
    state.record_rollback({"at": "t", "by": "watchdog", "why": "w", "from": "a", "to": "b",
                           "snapshot_id": "s"})
    assert state.last_rollback() == {"at": "t", "by": "watchdog", "why": "w", "from": "a",
                                     "to": "b", "snapshot_id": "s"}
    (tmp_path / "rollback.json").write_text("[")
    assert state.last_rollback() is None  # a damaged record shows nothing, breaks nothing


def test_a_damaged_pending_file_is_moved_aside(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    (tmp_path / "pending.json").write_text("{")
    moved = state.quarantine_pending()
    assert moved.name.startswith("pending.json.damaged-") and moved.read_text() == "{"
    assert state.pending() is None
