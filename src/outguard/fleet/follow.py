"""The policy-follow state machine of the fleet agent, as pure functions (no I/O, no clock).

Place in the data flow: `fleet.client.PolicyAnswer` (GET /v1/policy) → **on_answer** →
actions (`Apply`, `Lockdown`, `Lift`) that `fleet.agent` carries out with `fleet.local`, then
**after_apply** / **after_lockdown** record what they did; `fleet.agent` keeps the `Follow`
in STATE_DIR/fleet/follow.json (`dump`/`load`) so a restart neither re-applies a version
nor forgets a result it has not reported yet.

Rules:
- a version is acted on once (`tried`): a version that failed to apply is reported and not
  tried again; only a new version is (the server halts a rollout on a failure, and gives the
  host the version before, which is the one in force: nothing to do);
- `version` is the one in force (the last applied and confirmed);
- a lockdown is put in while the server's `lockdown_until` is in the future, and lifted when
  the server withdraws it (null, or 204) — only one the fleet put in: a lockdown an operator
  typed on the host is not the fleet's to lift; an expired one lifts itself in the kernel;
- the ETag is kept only once every action of an answer is done, so an action that failed is
  attempted again at the next answer; a 204 has one too (the server long-polls on it);
- version 0 is no version (a lockdown sent to a host that has none assigned).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from outguard.fleet.client import PolicyAnswer


@dataclass(frozen=True)
class Follow:
    version: int | None = None  # in force: applied and confirmed
    tried: int | None = None  # the last version acted on (whatever its result)
    rollout_id: int | None = None
    etag: str | None = None
    lockdown_until: float | None = None  # a lockdown the fleet put in
    result: str | None = None  # of the last version tried
    detail: str = ""
    mode: str | None = None
    reported: bool = True  # the last result has reached the server


@dataclass(frozen=True)
class Apply:
    version: int
    text: str
    rollout_id: int | None


@dataclass(frozen=True)
class Lockdown:
    until: float


@dataclass(frozen=True)
class Lift:
    pass


Action = Apply | Lockdown | Lift


def _live(until: float | None, now: float) -> float | None:
    return until if until is not None and until > now else None


def on_answer(state: Follow, answer: PolicyAnswer, now: float) -> tuple[Follow, list[Action]]:
    """What to do about an answer; the state to keep once every action is done (the
    lockdown and the result are recorded by `after_*` as the actions complete)."""
    if answer.status == 304:
        return state, []
    have = _live(state.lockdown_until, now)
    if answer.status == 204 or answer.policy is None:
        return dataclasses.replace(state, etag=answer.etag), [Lift()] if have is not None else []
    p = answer.policy
    actions: list[Action] = []
    want = _live(p.lockdown_until, now)
    if want != have:  # first: an emergency brake does not wait for an apply and its verify
        actions.append(Lockdown(want) if want is not None else Lift())
    # 0: a lockdown alone, no version yet; the version in force: a halted rollout gave it back
    if p.version > 0 and p.version not in (state.tried, state.version):
        actions.append(Apply(p.version, p.policy, p.rollout_id))
    return dataclasses.replace(state, etag=answer.etag), actions


def after_apply(state: Follow, act: Apply, result: str, detail: str,
                mode: str | None) -> Follow:
    """`result`: applied (confirmed) | apply_failed | verify_failed | rolled_back."""
    return dataclasses.replace(
        state, tried=act.version, rollout_id=act.rollout_id, result=result, detail=detail,
        version=act.version if result == "applied" else state.version,
        mode=mode if result == "applied" else state.mode, reported=False)


def after_lockdown(state: Follow, act: Lockdown | Lift) -> Follow:
    return dataclasses.replace(state, lockdown_until=act.until if isinstance(act, Lockdown)
                               else None)


def failed(state: Follow) -> Follow:
    """An action could not be carried out: forget the ETag, so the next answer brings it back."""
    return dataclasses.replace(state, etag=None)


def reported(state: Follow) -> Follow:
    return dataclasses.replace(state, reported=True)


def dump(state: Follow) -> str:
    return json.dumps(dataclasses.asdict(state), indent=1)


def load(text: str) -> Follow:
    """The state `dump` wrote; unknown keys are ignored (a newer agent's file), a damaged file
    is a fresh start (ValueError for the caller to log)."""
    doc: Any = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    names = {f.name for f in dataclasses.fields(Follow)}
    return Follow(**{k: v for k, v in doc.items() if k in names})
