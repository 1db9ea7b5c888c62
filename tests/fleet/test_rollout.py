"""Rollouts against a real PostgreSQL and two replicas, hosts simulated with an HTTP client:
waves advance on reports, a failing canary halts everything and gets its previous version
back, a blocked-rate jump halts, abort gives everyone their previous version, and a lockdown
or a new assignment wakes long-polls on every replica within seconds (LISTEN/NOTIFY)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from outguard.errors import PolicyError
from outguard.fleet import ops, rollout
from tests.fleet.conftest import Replicas
from tests.fleet.hosts import SimHost, rows

V1 = "version: 1\nmode: enforce\nallow:\n  - name: web\n    to: [203.0.113.10]\n" \
     "    ports: [443]\n    proto: tcp\n"
V2 = V1.replace("203.0.113.10", "203.0.113.20")


def _fleet(replicas: Replicas, n: int) -> list[SimHost]:
    # hosts spread over both replicas, as a load balancer would
    return [SimHost(replicas.urls[i % 2], replicas.dsn, f"web-{i:02d}") for i in range(n)]


def _push(dsn: str, path: Path, text: str, **kw) -> ops.Pushed:
    path.write_text(text)
    args = {"glob": "web-*", "canary": 0, "waves": [100.0], "max_rate_jump": 5.0,
            "soak_seconds": 0.0} | kw
    with ops.connect(dsn) as conn:
        return ops.push(conn, path, **args)


def _apply_all(hosts: list[SimHost]) -> dict[str, int | None]:
    """Each host fetches its policy and reports it applied; name → version it has."""
    out: dict[str, int | None] = {}
    for h in hosts:
        got = h.policy()
        if got.status_code == 200:
            body = got.json()
            h.report(body["version"], body["rollout_id"], "applied")
            out[h.name] = body["version"]
        else:
            out[h.name] = None
    return out


def _status(dsn: str) -> dict:
    with ops.connect(dsn) as conn:
        return rollout.status(conn, None)


def _until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return got


def test_waves_advance_on_reports(replicas: Replicas, tmp_path: Path) -> None:
    hosts = _fleet(replicas, 10)
    pushed = _push(replicas.dsn, tmp_path / "p.yaml", V1, canary=2, waves=[25.0, 100.0])
    assert [len(w) for w in pushed.waves] == [2, 2, 6]
    done: list[str] = []
    for n, wave in enumerate(pushed.waves):
        _until(lambda n=n: _status(replicas.dsn)["wave"] == n)
        waiting = [h for h in hosts if h.name not in done + wave]
        assert all(h.policy().status_code == 204 for h in waiting)  # not yet theirs
        assert set(_apply_all([h for h in hosts if h.name in wave]).values()) == {pushed.version}
        done += wave
    _until(lambda: _status(replicas.dsn)["state"] == "done")
    assert rows(replicas.dsn, "SELECT count(*) FROM hosts WHERE applied_version = %s"
                " AND assigned_rollout IS NULL", pushed.version) == [(10,)]


def test_one_wave_advances_once_under_concurrent_reports(replicas: Replicas,
                                                          tmp_path: Path) -> None:
    hosts = _fleet(replicas, 16)
    pushed = _push(replicas.dsn, tmp_path / "p.yaml", V1, canary=8, waves=[50.0, 100.0])
    wave0 = [h for h in hosts if h.name in pushed.waves[0]]
    bodies = [h.policy().json() for h in wave0]
    go = threading.Barrier(len(wave0))

    def report(h: SimHost, body: dict) -> None:
        go.wait()  # all at once, over both replicas
        h.report(body["version"], body["rollout_id"], "applied")

    threads = [threading.Thread(target=report, args=(h, b))
               for h, b in zip(wave0, bodies, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _until(lambda: _status(replicas.dsn)["wave"] == 1)
    time.sleep(1)  # ticks of both replicas: wave 1 has no reports, so it stays
    status = _status(replicas.dsn)
    assert status["wave"] == 1 and status["state"] == "running"
    assigned = [h["host"] for h in status["hosts"] if h["assigned"]]
    assert sorted(assigned) == sorted(pushed.waves[0] + pushed.waves[1])
    # a second start of wave 1 would have recorded the new version as their previous one,
    # and abort would then roll them back to it
    assert {h["previous_version"] for h in status["hosts"] if h["assigned"]} == {None}


def test_a_failing_canary_halts_and_gets_its_previous_version(replicas: Replicas,
                                                             tmp_path: Path) -> None:
    hosts = _fleet(replicas, 10)
    v1 = _push(replicas.dsn, tmp_path / "p.yaml", V1)
    _apply_all(hosts)
    _until(lambda: _status(replicas.dsn)["state"] == "done")
    v2 = _push(replicas.dsn, tmp_path / "p.yaml", V2, canary=2, waves=[25.0, 100.0])
    canary = [h for h in hosts if h.name in v2.waves[0]]
    got = canary[0].policy().json()
    assert got["version"] == v2.version and "203.0.113.20" in got["policy"]
    canary[0].report(v2.version, v2.rollout_id, "verify_failed", detail="web unreachable")
    status = _status(replicas.dsn)
    assert status["state"] == "halted" and "verify_failed" in status["reason"]
    for h in hosts:  # the canary gets v1 back; nobody else was ever given v2
        body = h.policy().json()
        assert body["version"] == v1.version, h.name
    never = rows(replicas.dsn, "SELECT count(*) FROM rollout_hosts WHERE rollout_id = %s"
                 " AND wave > 0 AND assigned IS NOT NULL", v2.rollout_id)
    assert never == [(0,)]
    # the other canary's late success does not restart it; resume refuses a halted rollout
    canary[1].report(v2.version, v2.rollout_id, "applied")
    assert _status(replicas.dsn)["state"] == "halted"
    with ops.connect(replicas.dsn) as conn, pytest.raises(rollout.RolloutError, match="abort"):
        rollout.resume(conn, None)
    time.sleep(1)  # several ticks of both replicas: still nothing assigned beyond the canary
    assert rows(replicas.dsn, "SELECT count(*) FROM hosts WHERE assigned_version = %s",
                v2.version) == [(0,)]


def test_a_blocked_rate_jump_halts(replicas: Replicas, tmp_path: Path) -> None:
    hosts = _fleet(replicas, 4)
    for h in hosts:
        h.report(None, None, "running", blocked_rate=1.0)
    v = _push(replicas.dsn, tmp_path / "p.yaml", V1, canary=1, waves=[100.0], soak_seconds=30)
    (canary,) = [h for h in hosts if h.name in v.waves[0]]
    canary.report(v.version, v.rollout_id, "applied", blocked_rate=1.0)
    assert _status(replicas.dsn)["state"] == "running"  # soaking
    canary.report(v.version, None, "running", blocked_rate=9.0)  # a heartbeat, after apply
    status = _status(replicas.dsn)
    assert status["state"] == "halted" and "blocked rate 9/s" in status["reason"]
    assert canary.policy().status_code == 204  # its previous assignment: none


def test_abort_gives_everyone_their_previous_version(replicas: Replicas, tmp_path: Path) -> None:
    hosts = _fleet(replicas, 4)
    v = _push(replicas.dsn, tmp_path / "p.yaml", V1, canary=1, waves=[50.0, 100.0],
              soak_seconds=3600)
    _apply_all(hosts)
    with ops.connect(replicas.dsn) as conn:
        rollout.pause(conn, v.rollout_id)
        assert rollout.status(conn, None)["state"] == "paused"
        rollout.abort(conn, None)
    assert _status(replicas.dsn)["state"] == "aborted"
    assert all(h.policy().status_code == 204 for h in hosts)


def test_a_policy_that_does_not_load_is_never_stored(replicas: Replicas, tmp_path: Path) -> None:
    _fleet(replicas, 1)
    with pytest.raises(PolicyError):
        _push(replicas.dsn, tmp_path / "p.yaml", V1 + "bogus: 1\n")
    assert rows(replicas.dsn, "SELECT count(*) FROM policy_versions") == [(0,)]


def test_lockdown_and_pushes_wake_long_polls_on_every_replica(replicas: Replicas) -> None:
    hosts = _fleet(replicas, 2)
    tags = [h.policy().headers["etag"] for h in hosts]
    answers: dict[str, tuple[float, object]] = {}

    def poll(h: SimHost, tag: str) -> None:
        got = h.policy(wait=30, etag=tag)
        answers[h.name] = (time.monotonic(), got)

    threads = [threading.Thread(target=poll, args=(h, t)) for h, t in zip(hosts, tags, strict=True)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert not answers  # both are waiting (one on each replica)
    start = time.monotonic()
    with ops.connect(replicas.dsn) as conn:
        ops.lockdown(conn, "web-*", 7200)
    for t in threads:
        t.join(35)
    for name, (when, got) in answers.items():
        assert got.status_code == 200, name
        assert got.json()["version"] == 0 and got.json()["lockdown_until"] > time.time() + 7000
        assert when - start < 3.0, f"{name} woke after {when - start:.1f}s"
    again = hosts[0].policy(wait=1, etag=answers["web-00"][1].headers["etag"])
    assert again.status_code == 304


def test_a_wave_advances_by_the_periodic_check_after_its_soak(replicas: Replicas,
                                                              tmp_path: Path) -> None:
    hosts = _fleet(replicas, 3)
    v = _push(replicas.dsn, tmp_path / "p.yaml", V1, canary=1, waves=[100.0], soak_seconds=1.5)
    (canary,) = [h for h in hosts if h.name in v.waves[0]]
    body = canary.policy().json()
    canary.report(body["version"], body["rollout_id"], "applied")
    reported = time.monotonic()
    assert _status(replicas.dsn)["wave"] == 0  # soaking: no report will come to advance it
    _until(lambda: _status(replicas.dsn)["wave"] == 1)
    assert time.monotonic() - reported >= 1.4


def test_a_waiting_poll_returns_when_its_lockdown_ends(replicas: Replicas) -> None:
    (host,) = _fleet(replicas, 1)
    with ops.connect(replicas.dsn) as conn:
        ops.lockdown(conn, "web-*", 2.0)
    locked = host.policy()
    assert locked.status_code == 200 and locked.json()["lockdown_until"]
    start = time.monotonic()
    ended = host.policy(wait=30, etag=locked.headers["etag"])
    assert ended.status_code == 204  # no version, and no lockdown any more
    assert 1.0 < time.monotonic() - start < 4.0


def test_a_late_failure_of_an_earlier_wave_halts_and_reverts_that_host(replicas: Replicas,
                                                                       tmp_path: Path) -> None:
    hosts = _fleet(replicas, 3)
    v = _push(replicas.dsn, tmp_path / "p.yaml", V1, canary=1, waves=[100.0])
    (canary,) = [h for h in hosts if h.name in v.waves[0]]
    body = canary.policy().json()
    canary.report(body["version"], body["rollout_id"], "applied")
    assert _status(replicas.dsn)["wave"] == 1  # soak 0: the next wave at once
    # the canary's own watchdog rolled it back later (e.g. its confirmation never came)
    canary.report(v.version, v.rollout_id, "rolled_back", detail="no confirmation")
    status = _status(replicas.dsn)
    assert status["state"] == "halted" and "rolled_back" in status["reason"]
    assert all(h.policy().status_code == 204 for h in hosts)  # the canary and wave 1
