"""The policy-follow state machine (pure): which answer leads to which actions, and what is
kept, as a table."""

from __future__ import annotations

import dataclasses

import pytest

from outguard.fleet import follow as fl
from outguard.fleet.client import PolicyAnswer
from outguard.fleet.wire import PolicyResponse

NOW = 1_000_000.0


def answer(version: int, lockdown: float | None = None, rollout: int | None = 3) -> PolicyAnswer:
    return PolicyAnswer(200, PolicyResponse(version=version, policy=f"v{version}",
                                            rollout_id=rollout, lockdown_until=lockdown),
                        f'"{version}-{lockdown or 0}"')


S0 = fl.Follow()
APPLIED2 = fl.Follow(version=2, tried=2, etag='"2-0"', result="applied")
LOCKED = dataclasses.replace(APPLIED2, lockdown_until=NOW + 60, etag=f'"2-{NOW + 60}"')


@pytest.mark.parametrize(("state", "got", "actions"), [
    (S0, answer(1), [fl.Apply(1, "v1", 3)]),
    (APPLIED2, answer(2), []),  # the same version: nothing
    (APPLIED2, answer(3), [fl.Apply(3, "v3", 3)]),
    (APPLIED2, PolicyAnswer(304, etag='"2-0"'), []),
    (dataclasses.replace(APPLIED2, version=1, result="verify_failed"), answer(2), []),  # tried
    (dataclasses.replace(APPLIED2, version=1, result="rolled_back"), answer(1), []),  # reverted
    (APPLIED2, answer(2, NOW + 60), [fl.Lockdown(NOW + 60)]),
    (APPLIED2, answer(3, NOW + 60), [fl.Lockdown(NOW + 60), fl.Apply(3, "v3", 3)]),  # brake 1st
    (APPLIED2, answer(2, NOW - 5), []),  # expired: nothing to put in
    (LOCKED, answer(2, NOW + 60), []),
    (LOCKED, answer(2, NOW + 120), [fl.Lockdown(NOW + 120)]),  # extended
    (LOCKED, answer(2, None), [fl.Lift()]),  # withdrawn
    (LOCKED, PolicyAnswer(204), [fl.Lift()]),
    (dataclasses.replace(LOCKED, lockdown_until=NOW - 1), answer(2, None), []),  # ended itself
    (APPLIED2, PolicyAnswer(204, etag='"none"'), []),  # an operator's lockdown is not the fleet's
    (S0, PolicyAnswer(200, PolicyResponse(version=0, policy="", rollout_id=None,
                                          lockdown_until=NOW + 9), '"0-x"'),
     [fl.Lockdown(NOW + 9)]),  # a lockdown alone: no version to apply
])
def test_on_answer(state: fl.Follow, got: PolicyAnswer, actions: list[fl.Action]) -> None:
    new, acts = fl.on_answer(state, got, NOW)
    assert acts == actions
    if got.status in (200, 204):
        assert new.etag == got.etag
    if got.status == 304:
        assert new == state
    # the answer alone never records a result, a version in force or a lockdown
    assert (new.version, new.tried, new.lockdown_until) == \
        (state.version, state.tried, state.lockdown_until)


@pytest.mark.parametrize(("result", "version", "mode"), [
    ("applied", 5, "enforce"), ("apply_failed", 2, "audit"), ("verify_failed", 2, "audit"),
    ("rolled_back", 2, "audit")])
def test_after_apply(result: str, version: int, mode: str) -> None:
    state = dataclasses.replace(APPLIED2, mode="audit")
    new = fl.after_apply(state, fl.Apply(5, "v5", 9), result, "why", "enforce")
    assert (new.version, new.tried, new.result, new.rollout_id, new.mode, new.reported) == \
        (version, 5, result, 9, mode, False)
    _again, acts = fl.on_answer(new, answer(5), NOW)
    assert acts == []  # a version is acted on once, whatever its result
    assert fl.reported(new).reported


def test_lockdown_and_failure_bookkeeping() -> None:
    s = fl.after_lockdown(APPLIED2, fl.Lockdown(NOW + 9))
    assert s.lockdown_until == NOW + 9
    assert fl.after_lockdown(s, fl.Lift()).lockdown_until is None
    assert fl.failed(s).etag is None  # the next answer brings the action back


def test_dump_load_round_trip_and_damage() -> None:
    s = fl.after_apply(LOCKED, fl.Apply(7, "v7", None), "verify_failed", "probe x", None)
    assert fl.load(fl.dump(s)) == s
    assert fl.load('{"version": 3, "from_the_future": 1}') == fl.Follow(version=3)
    with pytest.raises(ValueError, match="JSON"):
        fl.load("[1]")
