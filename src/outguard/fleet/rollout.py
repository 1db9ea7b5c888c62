"""Rollouts: a stored policy version given to a host group in waves, halting by itself.

Place in the data flow: `fleet push` (`fleet.ops`) calls `create`; the API's report handler
calls `on_report`, every replica's housekeeping calls `tick`; the operator calls `pause`,
`resume`, `abort`. Every step runs in one transaction that first locks the rollout's row
(`SELECT ... FOR UPDATE`), so two replicas handling two reports of one wave at once never both
advance it: the second sees the first's result. A wave advances when all its hosts reported
`applied` for this rollout and a soak time has passed with no host's blocked-packet rate above
its rate before the apply plus `max_rate_jump`. It halts when a host reports a failure
(apply_failed, verify_failed, rolled_back) or its rate jumps: the hosts of that wave get their
previous version back, the later waves are never assigned. Abort gives every host that took the
version its previous one. An assignment change NOTIFYs, so the hosts' long-polls return at once.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
from dataclasses import dataclass
from typing import Any

import psycopg

from outguard.errors import OutguardError
from outguard.fleet.db import notify
from outguard.fleet.wire import FAILED_RESULTS, ReportRequest

ACTIVE = ("running", "paused", "halted")


class RolloutError(OutguardError):
    """A rollout step the operator asked for cannot be done (and nothing was changed)."""


def plan_waves(names: list[str], canary: int, waves: list[float]) -> list[list[str]]:
    """Hosts by wave: the first `canary` names, then the rest cut at the cumulative
    percentages `waves` (the last must be 100). Empty waves are left out."""
    if not waves or waves[-1] != 100 or any(b <= a for a, b in itertools.pairwise(waves)) \
            or waves[0] <= 0:
        raise RolloutError(f"waves: need rising percentages ending at 100%, got {waves}")
    ordered = sorted(names)
    out = [ordered[:canary]] if canary > 0 else []
    rest = ordered[canary:]
    start = 0
    for pct in waves:
        end = math.ceil(len(rest) * pct / 100)
        out.append(rest[start:end])
        start = end
    return [w for w in out if w]


def create(conn: psycopg.Connection, version: int, selector: str, waves: list[list[int]],
           max_rate_jump: float, soak_seconds: float) -> int:
    """Store a rollout of `version` to the hosts (ids) by wave, and start its first wave."""
    with conn.transaction():
        conn.execute("LOCK TABLE rollouts IN SHARE ROW EXCLUSIVE MODE")  # one push at a time
        busy = conn.execute("SELECT id, state FROM rollouts WHERE state = ANY(%s)",
                            (list(ACTIVE),)).fetchone()
        if busy is not None:
            raise RolloutError(f"rollout {busy[0]} is {busy[1]}: abort it (or let it finish)"
                               " before pushing another")
        row = conn.execute(
            "INSERT INTO rollouts (version, selector, waves, state, max_rate_jump, soak_seconds)"
            " VALUES (%s, %s, %s, 'running', %s, %s) RETURNING id",
            (version, selector, len(waves), max_rate_jump, soak_seconds)).fetchone()
        assert row is not None
        rid = int(row[0])
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO rollout_hosts (rollout_id, host_id, wave) VALUES"
                            " (%s, %s, %s)", [(rid, h, n) for n, ids in enumerate(waves)
                                              for h in ids])
        _start_wave(conn, rid, version, 0)
    return rid


def _start_wave(conn: psycopg.Connection, rid: int, version: int, wave: int) -> None:
    _assign(conn, rid, version, wave, None)
    conn.execute("UPDATE rollouts SET current_wave = %s, wave_started = now() WHERE id = %s",
                 (wave, rid))


def _assign(conn: psycopg.Connection, rid: int, version: int, wave: int,
            host_ids: list[int] | None) -> None:
    """The hosts of `wave` (only `host_ids`, when given) take `version`; what they had is kept
    for a revert, their blocked rate as the baseline of the rate-jump check."""
    conn.execute(
        "UPDATE rollout_hosts rh SET previous_version = h.assigned_version,"
        " baseline_rate = coalesce(h.blocked_rate, 0), assigned = now()"
        " FROM hosts h WHERE h.id = rh.host_id AND rh.rollout_id = %s AND rh.wave = %s"
        " AND (%s::bigint[] IS NULL OR rh.host_id = ANY(%s))",
        (rid, wave, host_ids, host_ids))
    conn.execute(
        "UPDATE hosts h SET assigned_version = %s, assigned_rollout = %s FROM rollout_hosts rh"
        " WHERE h.id = rh.host_id AND rh.rollout_id = %s AND rh.wave = %s"
        " AND (%s::bigint[] IS NULL OR rh.host_id = ANY(%s))",
        (version, rid, rid, wave, host_ids, host_ids))
    notify(conn)


@dataclass(frozen=True)
class _Row:
    id: int
    version: int
    waves: int
    wave: int
    state: str
    max_rate_jump: float
    soak: float


def _lock(conn: psycopg.Connection, rid: int, *, skip_locked: bool = False) -> _Row | None:
    tail = " SKIP LOCKED" if skip_locked else ""
    row = conn.execute("SELECT id, version, waves, current_wave, state, max_rate_jump,"
                       " soak_seconds FROM rollouts WHERE id = %s FOR UPDATE" + tail,
                       (rid,)).fetchone()
    return _Row(*row) if row is not None else None


def _revert(conn: psycopg.Connection, r: _Row, wave: int | None, host_id: int | None = None
            ) -> None:
    """The hosts that took the version (of `wave`, or all; and `host_id`) get their previous
    one back."""
    conn.execute(
        "UPDATE hosts h SET assigned_version = rh.previous_version, assigned_rollout = NULL"
        " FROM rollout_hosts rh WHERE h.id = rh.host_id AND rh.rollout_id = %s"
        " AND rh.assigned IS NOT NULL"
        " AND (%s::int IS NULL OR rh.wave = %s OR rh.host_id = %s::bigint)"
        " AND h.assigned_version = %s",
        (r.id, wave, wave, host_id, r.version))
    notify(conn)


def _halt(conn: psycopg.Connection, r: _Row, reason: str, host_id: int | None = None) -> None:
    """Stop the rollout: the current wave, and the host that failed (it may be of an earlier
    wave), go back to their previous version; the later waves are never assigned."""
    conn.execute("UPDATE rollouts SET state = 'halted', reason = %s WHERE id = %s",
                 (reason, r.id))
    _revert(conn, r, r.wave, host_id)


def _jumped(conn: psycopg.Connection, r: _Row) -> str | None:
    """The first host of the current wave whose blocked rate rose by more than allowed since
    it applied, as a reason; None when none did."""
    row = conn.execute(
        "SELECT h.name, h.blocked_rate, rh.baseline_rate FROM rollout_hosts rh"
        " JOIN hosts h ON h.id = rh.host_id WHERE rh.rollout_id = %s AND rh.wave = %s"
        " AND rh.result = 'applied' AND h.blocked_rate > rh.baseline_rate + %s"
        " ORDER BY h.name LIMIT 1", (r.id, r.wave, r.max_rate_jump)).fetchone()
    if row is None:
        return None
    return (f"host {row[0]}: blocked rate {row[1]:g}/s after the apply, {row[2]:g}/s before"
            f" (more than +{r.max_rate_jump:g}/s)")


def _advance(conn: psycopg.Connection, r: _Row) -> None:
    """Halt on a rate jump; else move to the next wave when this one is done and soaked."""
    reason = _jumped(conn, r)
    if reason:
        _halt(conn, r, reason)
        return
    # coalesce: bool_and skips NULLs, and a host that has not reported yet has a NULL result
    # (without it one host's `applied` finished its whole wave)
    row = conn.execute(
        "SELECT bool_and(coalesce(result = 'applied', false)),"
        " extract(epoch FROM now() - max(reported))"
        " FROM rollout_hosts WHERE rollout_id = %s AND wave = %s", (r.id, r.wave)).fetchone()
    if row is None or not row[0] or float(row[1]) < r.soak:
        return
    if r.wave + 1 < r.waves:
        _start_wave(conn, r.id, r.version, r.wave + 1)
        return
    conn.execute("UPDATE rollouts SET state = 'done' WHERE id = %s", (r.id,))
    conn.execute("UPDATE hosts SET assigned_rollout = NULL WHERE assigned_rollout = %s", (r.id,))


def on_report(conn: psycopg.Connection, host_id: int, rep: ReportRequest) -> None:
    """A host's report, for the rollout it names (or the one it is in, for its rate)."""
    with conn.transaction():
        rid = rep.rollout_id
        if rid is None:
            got = conn.execute("SELECT assigned_rollout FROM hosts WHERE id = %s",
                               (host_id,)).fetchone()
            rid = got[0] if got else None
        if rid is None:
            return
        r = _lock(conn, rid)
        if r is None:
            return
        if rep.rollout_id == r.id and rep.version == r.version and rep.result != "running":
            conn.execute(
                "UPDATE rollout_hosts SET result = %s, detail = %s, reported = now()"
                " WHERE rollout_id = %s AND host_id = %s AND assigned IS NOT NULL",
                (rep.result, rep.detail, r.id, host_id))
            if rep.result in FAILED_RESULTS and r.state == "running":
                name = conn.execute("SELECT name FROM hosts WHERE id = %s", (host_id,)).fetchone()
                _halt(conn, r, f"host {name[0] if name else host_id} reported {rep.result}:"
                               f" {rep.detail}", host_id)
                return
        if r.state == "running":
            _advance(conn, r)


# Hosts enrolled after a push (the late-host rule; README "Fleet"): a host the push did not see
# (it enrolled, or was enrolled again after a revoke, since) whose name matches the --to glob of
# a running or paused rollout joins that rollout's LAST wave: it takes the version when the last
# wave starts, at once when the last wave has started already, and then counts in that wave like
# any of its hosts (the wave is done when it too reported applied; its failure halts). Until
# then, and when no such rollout runs (a halted or aborted one adopts no one), a host with no
# version gets the fleet's current version for its name: that of the latest rollout that finished
# (`done`) whose glob matches it.
def _adopt(conn: psycopg.Connection, r: _Row, host_id: int | None) -> list[int]:
    """Put the late hosts matching `r`'s glob (`host_id` alone, when given) in its last wave;
    the ids put. The caller holds `r`'s row lock."""
    got = conn.execute("SELECT selector FROM rollouts WHERE id = %s", (r.id,)).fetchone()
    assert got is not None
    late = conn.execute(
        "SELECT h.id, h.name FROM hosts h WHERE h.revoked IS NULL"
        " AND (%s::bigint IS NULL OR h.id = %s) AND NOT EXISTS (SELECT 1 FROM rollout_hosts rh"
        " WHERE rh.rollout_id = %s AND rh.host_id = h.id)", (host_id, host_id, r.id)).fetchall()
    ids = [int(i) for i, name in late if fnmatch.fnmatchcase(name, got[0])]
    if not ids:
        return []
    last = r.waves - 1
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO rollout_hosts (rollout_id, host_id, wave) VALUES (%s, %s, %s)"
                        " ON CONFLICT DO NOTHING", [(r.id, i, last) for i in ids])
    if r.wave == last:  # the last wave has started: they take the version now
        _assign(conn, r.id, r.version, last, ids)
    return ids


def current_version(conn: psycopg.Connection, name: str) -> int | None:
    """The fleet's current version for host `name`: the latest finished rollout's whose glob
    matches it; None when none does."""
    for version, selector in conn.execute(
            "SELECT version, selector FROM rollouts WHERE state = 'done' ORDER BY id DESC"):
        if fnmatch.fnmatchcase(name, selector):
            return int(version)
    return None


def on_enroll(conn: psycopg.Connection, host_id: int) -> None:
    """The late-host rule for a host that has just enrolled. Locks the active rollout's row
    first, then the host's, as every other step does (no deadlock with a report's step)."""
    with conn.transaction():
        active = conn.execute("SELECT id FROM rollouts WHERE state = ANY(%s) ORDER BY id DESC"
                              " LIMIT 1", (["running", "paused"],)).fetchone()
        r = _lock(conn, int(active[0])) if active else None
        host = conn.execute("SELECT name, assigned_version FROM hosts WHERE id = %s"
                            " AND revoked IS NULL FOR UPDATE", (host_id,)).fetchone()
        if host is None:
            return
        if host[1] is None:
            version = current_version(conn, host[0])
            if version is not None:
                conn.execute("UPDATE hosts SET assigned_version = %s WHERE id = %s",
                             (version, host_id))
                notify(conn)
        if r is not None and r.state in ("running", "paused"):
            _adopt(conn, r, host_id)


def tick(conn: psycopg.Connection) -> None:
    """Advance every running rollout whose wave is due; a rollout another replica is busy
    with is skipped (it is being looked at already)."""
    ids = [row[0] for row in conn.execute(
        "SELECT id FROM rollouts WHERE state = 'running'").fetchall()]
    for rid in ids:
        with conn.transaction():
            r = _lock(conn, rid, skip_locked=True)
            if r is not None and r.state == "running":
                _adopt(conn, r, None)
                _advance(conn, r)


def _operator_lock(conn: psycopg.Connection, rid: int | None) -> _Row:
    if rid is None:
        got = conn.execute("SELECT id FROM rollouts ORDER BY id DESC LIMIT 1").fetchone()
        if got is None:
            raise RolloutError("no rollout yet: `outguard fleet push` starts one")
        rid = int(got[0])
    r = _lock(conn, rid)
    if r is None:
        raise RolloutError(f"no rollout {rid}")
    return r


def pause(conn: psycopg.Connection, rid: int | None) -> int:
    with conn.transaction():
        r = _operator_lock(conn, rid)
        if r.state != "running":
            raise RolloutError(f"rollout {r.id} is {r.state}, not running")
        conn.execute("UPDATE rollouts SET state = 'paused' WHERE id = %s", (r.id,))
    return r.id


def resume(conn: psycopg.Connection, rid: int | None) -> int:
    with conn.transaction():
        r = _operator_lock(conn, rid)
        if r.state != "paused":
            raise RolloutError(f"rollout {r.id} is {r.state}: only a paused rollout resumes"
                               + (" (a halted one: abort it, fix the policy, push again)"
                                  if r.state == "halted" else ""))
        conn.execute("UPDATE rollouts SET state = 'running' WHERE id = %s", (r.id,))
        _adopt(conn, r, None)
        _advance(conn, _Row(r.id, r.version, r.waves, r.wave, "running", r.max_rate_jump, r.soak))
    return r.id


def abort(conn: psycopg.Connection, rid: int | None) -> int:
    """Stop the rollout; every host that took its version gets its previous one back."""
    with conn.transaction():
        r = _operator_lock(conn, rid)
        if r.state in ("aborted", "done"):
            raise RolloutError(f"rollout {r.id} is already {r.state}")
        conn.execute("UPDATE rollouts SET state = 'aborted', reason = 'aborted by the operator'"
                     " WHERE id = %s", (r.id,))
        _revert(conn, r, None)
    return r.id


def status(conn: psycopg.Connection, rid: int | None) -> dict[str, Any]:
    """The rollout and its hosts, for `fleet rollout status`."""
    with conn.transaction():  # the row locked a moment: one consistent picture
        r = _operator_lock(conn, rid)
        head = conn.execute("SELECT selector, reason, created FROM rollouts WHERE id = %s",
                            (r.id,)).fetchone()
        assert head is not None
        hosts = conn.execute(
            "SELECT h.name, rh.wave, rh.previous_version, rh.assigned IS NOT NULL, rh.result,"
            " rh.detail, h.assigned_version FROM rollout_hosts rh JOIN hosts h"
            " ON h.id = rh.host_id WHERE rh.rollout_id = %s ORDER BY rh.wave, h.name",
            (r.id,)).fetchall()
    return {"id": r.id, "version": r.version, "selector": head[0], "state": r.state,
            "reason": head[1], "created": head[2].isoformat(), "wave": r.wave, "waves": r.waves,
            "hosts": [{"host": h[0], "wave": h[1], "previous_version": h[2], "assigned": h[3],
                       "result": h[4], "detail": h[5], "assigned_version": h[6]}
                      for h in hosts]}
