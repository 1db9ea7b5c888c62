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
                  clock=lambda: 200.0)
    assert late["pending_confirmation"]["state"] == "expired"
    assert len(late["problems"]) == 1 and "expired" in late["problems"][0]
    (tmp_path / "pending.json").write_text("{")
    damaged = status(state, {}, True, objects=OBJECTS, rules={"output": "a", "allow": "b"})
    assert damaged["problems"][0].startswith("pending confirmation: pending confirmation file")


RULES = {"output": "a", "allow": "b"}


def _applied(tmp_path: Path, **kw: object) -> StateDir:
    state = StateDir(tmp_path)
    state.ensure()
    state.write(_snap(**kw), "version: 1\n", b"[]")
    return state


def test_drift_that_cannot_be_told_is_a_problem(tmp_path: Path) -> None:
    state = _applied(tmp_path, rule_digests=None)
    got = status(state, {}, True, objects=OBJECTS, rules=RULES)
    assert got["drift"] is None
    assert [p for p in got["problems"] if p.startswith("drift unknown")]


def test_no_table_and_nothing_applied_is_a_problem(tmp_path: Path) -> None:
    """After `remove` egress is open: `status --check` said nothing."""
    state = StateDir(tmp_path)
    assert status(state, {}, False)["problems"] == [
        "no outguard table in the kernel and no policy applied with this state directory:"
        " egress is open"]


def test_rules_that_apply_only_in_part_are_problems(tmp_path: Path) -> None:
    unresolved = ("p.yaml:5:9: allow[0].to[0]: host name 'api.example.test' does not resolve"
                  " now: nothing is allowed or denied for it (it matches nothing) until it"
                  " resolves at a later apply")
    state = _applied(tmp_path, warnings=[unresolved, "p.yaml:3:3: allow[1]: shadowed by web"])
    got = status(state, {}, True, objects=OBJECTS, rules=RULES)
    assert got["partial"] == [unresolved]
    assert got["problems"] == [f"applies only in part: {unresolved}"]


def test_a_dns_policy_without_a_running_agent_is_a_problem(tmp_path: Path) -> None:
    import os

    state = _applied(tmp_path, dns_listen="127.0.0.1:53")
    now = 1_000_000.0
    alive = {"pid": os.getpid(), "started": now - 100, "updated": now - 5, "stopped": False}
    cases = {"none": None, "stopped": {**alive, "stopped": True},
             "stale": {**alive, "updated": now - 61},
             "running": alive}
    for want, report in cases.items():
        got = status(state, {}, True, objects=OBJECTS, rules=RULES, clock=lambda: now, agent=report)
        assert got["agent"] == want
        problems = [p for p in got["problems"] if "agent" in p]
        assert bool(problems) == (want != "running"), (want, got["problems"])
        if problems:
            assert "127.0.0.1:53" in problems[0]
    # without `dns:` the agent is optional
    plain = _applied(tmp_path / "plain")
    assert status(plain, {}, True, objects=OBJECTS, rules=RULES, clock=lambda: now)["problems"] == []


def test_expired_rules_are_shown(tmp_path: Path) -> None:
    state = _applied(tmp_path, counters={"default": "default", "allow:tmp": "allow.tmp"},
                     expires={"allow:tmp": "2026-12-03T10:00:45+00:00"})
    at = 1796294400.0  # 2026-12-03T10:40:00Z
    got = status(state, {}, True, objects=OBJECTS, rules=RULES, clock=lambda: at)
    assert got["expired"] == {"allow:tmp": "2026-12-03T10:00:45+00:00"}
    assert got["problems"] == []
    assert status(state, {}, True, objects=OBJECTS, rules=RULES, clock=lambda: at - 3600)["expired"] == {}


def test_a_unit_bound_since_the_apply_applies_in_full_while_the_agent_runs(
        tmp_path: Path) -> None:
    """The unit was not running at the apply; it runs now and the agent bound it: `status
    --check` kept calling the rule partial."""
    import os

    warning = ("allow rule 'web': cgroup system.slice/web.service does not exist now (the unit"
               " is not running?): the rule matches nothing until it starts")
    state = StateDir(tmp_path)
    state.ensure()
    state.write(_snap(warnings=[warning]), "version: 1\n",
                b'[{"outguard_cgroups": "c_web", "paths": ["system.slice/web.service"]}]')
    now = 1_000_000.0
    agent = {"pid": os.getpid(), "started": now - 100, "updated": now - 1, "stopped": False}
    rules = {"output": "a", "allow": "b"}

    def check(running: bool, exists: bool) -> list[str]:
        got = status(state, {}, True, objects=OBJECTS, rules=rules, clock=lambda: now,
                     agent=agent if running else None, cgroup_exists=lambda p: exists)
        return [str(w) for w in got["partial"]]

    assert check(running=True, exists=True) == []
    assert check(running=True, exists=False) == [warning]  # still not running
    assert check(running=False, exists=True) == [warning]  # no agent: nothing bound it
