"""The late-host rule against a real PostgreSQL and two replicas: a host that enrols while a
rollout runs and matches its glob joins the last wave (the version when that wave starts, or at
once when it has), and the rollout is done only when it too applied; with no rollout running (or
a halted one) a new host gets the fleet's current version for its name; a host the enrolment's
step missed is adopted by the replicas' periodic tick."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from outguard.fleet import ops, rollout
from tests.fleet.conftest import Replicas
from tests.fleet.hosts import SimHost, rows
from tests.fleet.test_rollout import V1, V2, _apply_all, _fleet, _push, _status, _until


def _late(replicas: Replicas, name: str) -> SimHost:
    return SimHost(replicas.urls[1], replicas.dsn, name)


def test_a_late_host_joins_the_last_wave(replicas: Replicas, tmp_path: Path) -> None:
    hosts = _fleet(replicas, 4)
    v1 = _push(replicas.dsn, tmp_path / "p.yaml", V1)
    _apply_all(hosts)
    _until(lambda: _status(replicas.dsn)["state"] == "done")
    v2 = _push(replicas.dsn, tmp_path / "p.yaml", V2, canary=1, waves=[50.0, 100.0])
    assert [len(w) for w in v2.waves] == [1, 2, 1]
    late = _late(replicas, "web-90")  # during wave 0: the fleet's current version meanwhile
    assert late.policy().json()["version"] == v1.version
    other = _late(replicas, "db-01")  # not matched by the glob: nothing
    assert other.policy().status_code == 204
    for n, wave in enumerate(v2.waves[:2]):
        _until(lambda n=n: _status(replicas.dsn)["wave"] == n)
        assert late.policy().json()["version"] == v1.version  # not before the last wave
        _apply_all([h for h in hosts if h.name in wave])
    _until(lambda: _status(replicas.dsn)["wave"] == 2)
    body = late.policy().json()
    assert body["version"] == v2.version and body["rollout_id"] == v2.rollout_id
    status = _status(replicas.dsn)
    mine = next(h for h in status["hosts"] if h["host"] == "web-90")
    assert mine["wave"] == 2 and mine["previous_version"] == v1.version
    _apply_all([h for h in hosts if h.name in v2.waves[2]])
    # the last wave waits for the late host too
    assert _status(replicas.dsn)["state"] == "running"
    late.report(v2.version, v2.rollout_id, "applied")
    _until(lambda: _status(replicas.dsn)["state"] == "done")
    assert "web-90" not in [h.name for h in hosts]


def test_a_host_enrolling_in_the_last_wave_takes_the_version_at_once(
        replicas: Replicas, tmp_path: Path) -> None:
    hosts = _fleet(replicas, 2)
    pushed = _push(replicas.dsn, tmp_path / "p.yaml", V1)  # one wave: the last
    late = _late(replicas, "web-77")
    body = late.policy().json()
    assert body["version"] == pushed.version and body["rollout_id"] == pushed.rollout_id
    _apply_all(hosts)
    assert _status(replicas.dsn)["state"] == "running"
    late.report(pushed.version, pushed.rollout_id, "verify_failed", detail="web unreachable")
    status = _status(replicas.dsn)  # a late host's failure halts like any host's
    assert status["state"] == "halted" and "web-77" in status["reason"]
    assert late.policy().status_code == 204  # its previous version: none


def test_no_rollout_running_new_hosts_get_the_current_version(replicas: Replicas,
                                                              tmp_path: Path) -> None:
    hosts = _fleet(replicas, 2)
    v1 = _push(replicas.dsn, tmp_path / "p.yaml", V1)
    _apply_all(hosts)
    _until(lambda: _status(replicas.dsn)["state"] == "done")
    assert _late(replicas, "web-50").policy().json()["version"] == v1.version
    v2 = _push(replicas.dsn, tmp_path / "p.yaml", V2, canary=1, waves=[100.0])
    canary = next(h for h in hosts if h.name in v2.waves[0])
    canary.report(v2.version, v2.rollout_id, "apply_failed", detail="nft said no")
    assert _status(replicas.dsn)["state"] == "halted"
    late = _late(replicas, "web-51")  # a halted rollout adopts no one
    assert late.policy().json()["version"] == v1.version
    assert rows(replicas.dsn, "SELECT count(*) FROM rollout_hosts WHERE rollout_id = %s"
                " AND host_id = %s", v2.rollout_id, late.host_id) == [(0,)]


def test_the_tick_adopts_a_host_the_enrolment_missed(db: str, tmp_path: Path) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        for name in ("web-01", "web-02"):
            conn.execute("INSERT INTO hosts (name, credential_sha256) VALUES (%s, %s)",
                         (name, name))
    pushed = _push(db, tmp_path / "p.yaml", V1)
    with ops.connect(db) as conn:
        # enrolled (committed) but its enrolment's step never ran: a replica died between
        conn.execute("INSERT INTO hosts (name, credential_sha256) VALUES ('web-03', 'c3')")
        rollout.tick(conn)
        rollout.tick(conn)  # twice: adopted once
        got = rollout.status(conn, None)
    late = [h for h in got["hosts"] if h["host"] == "web-03"]
    assert len(late) == 1 and late[0]["assigned"] and late[0]["wave"] == 0
    assert late[0]["assigned_version"] == pushed.version


def test_a_wave_waits_for_every_one_of_its_hosts(replicas: Replicas, tmp_path: Path) -> None:
    # bool_and skips NULLs: one host's `applied` once finished a wave whose others had not
    # reported at all (found with the late-host rule, whose late host is such an "other")
    hosts = _fleet(replicas, 3)
    pushed = _push(replicas.dsn, tmp_path / "p.yaml", V1, waves=[50.0, 100.0])
    assert [len(w) for w in pushed.waves] == [2, 1]
    _apply_all([next(h for h in hosts if h.name == pushed.waves[0][0])])
    time.sleep(1)  # several ticks of both replicas
    assert _status(replicas.dsn)["wave"] == 0
