"""status: drift from what was applied, problems for `status --check` (pure: the kernel's answers
are given)."""

from __future__ import annotations

from pathlib import Path

from outguard.apply.status import drift, status
from outguard.state import Pending, Snapshot, StateDir


def _snap(**kw: object) -> Snapshot:
    base: dict[str, object] = dict(
        policy_hash="h" * 64, applied_at="2026-12-03T10:00:00+00:00", mode="enforce",
        source="/p.yaml", inventory={"chains": ["output", "allow"], "sets": ["m_x"],
                                     "counters": ["default"]},
        counters={"default": "default"}, snapshot_id="s1",
        rule_digests={"output": "a", "allow": "b"})
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


OBJECTS = (["output", "allow"], ["m_x"], ["default"])


def test_drift_compares_objects_and_rules() -> None:
    snap = _snap()
    assert drift(snap, OBJECTS, {"output": "a", "allow": "b"}) == []
    assert drift(snap, OBJECTS, {"output": "x", "allow": "b"}) == [
        "the rules of chain output differ from what outguard applied"]
    assert drift(snap, (["output", "allow", "evil"], ["m_x"], []), {"output": "a",
                                                                  "allow": "b"}) == [
        "chain evil is in outguard's table, but outguard did not make it",
        "counter default is missing from outguard's table"]
    # a chain emptied by hand has no rules left to list
    assert drift(snap, OBJECTS, {"output": "a"}) == [
        "the rules of chain allow differ from what outguard applied"]


def test_without_recorded_rules_only_objects_are_compared() -> None:
    snap = _snap(rule_digests=None)
    assert drift(snap, OBJECTS, {"output": "anything"}) is None
    assert drift(snap, (["output"], ["m_x"], ["default"]), {}) == [
        "chain allow is missing from outguard's table"]


def test_problems_for_check(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.ensure()
    state.write(_snap(), "version: 1\n", b"[]")
    ok = status(state, {}, True, objects=OBJECTS, rules={"output": "a", "allow": "b"})
    assert ok["problems"] == [] and ok["drift"] == []
    gone = status(state, {}, False)
    assert gone["problems"] == ["no outguard table in the kernel, but a policy was applied:"
                                " egress is open (`outguard restore` puts it back)"]
    state.set_pending(Pending("tok", 100.0, 0, "p" * 64, "s0"))
    late = status(state, {}, True, objects=OBJECTS, rules={"output": "a", "allow": "b"},
                  now=200.0)
    assert late["pending_confirmation"]["state"] == "expired"
    assert len(late["problems"]) == 1 and "expired" in late["problems"][0]
    (tmp_path / "pending.json").write_text("{")
    damaged = status(state, {}, True, objects=OBJECTS, rules={"output": "a", "allow": "b"})
    assert damaged["problems"][0].startswith("pending confirmation: pending confirmation file")
