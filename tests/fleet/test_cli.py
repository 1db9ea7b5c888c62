"""`outguard fleet ...` end to end on a real PostgreSQL: init (and its refusal of a newer
schema), enrol tokens, push, rollout status, hosts/events/top with filters and --json,
lockdown, revoke, prune."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from click.testing import CliRunner

from outguard.cli.main import cli
from outguard.fleet import schema
from tests.fleet.conftest import Replicas
from tests.fleet.hosts import SimHost, incident

V1 = "version: 1\nmode: enforce\nallow:\n  - name: web\n    to: [203.0.113.10]\n" \
     "    ports: [443]\n    proto: tcp\n"


def run(*args: str, code: int = 0) -> str:
    got = CliRunner().invoke(cli, ["fleet", *args], catch_exceptions=False)
    assert got.exit_code == code, got.output
    return got.output


def test_init_twice_then_a_newer_schema_is_refused(dsn: str) -> None:
    assert f"version {schema.SCHEMA_VERSION} (was 0)" in run("init", dsn)
    assert "already current" in run("init", dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE og_schema SET version = 99")
    out = run("init", dsn, code=1)
    assert "version 99, newer than this outguard's" in out and "upgrade outguard" in out
    assert "newer than this outguard" in run("hosts", "--db", dsn, code=1)


def test_operator_commands(replicas: Replicas, tmp_path: Path) -> None:
    db = replicas.dsn
    tok = run("enroll-token", "--db", db, "--host", "web-1").strip()
    assert len(tok) > 30
    assert "not a host name" in run("enroll-token", "--db", db, "--host", "bad name!", code=1)
    a = SimHost(replicas.urls[0], db, "web-1")
    b = SimHost(replicas.urls[1], db, "db-1")
    a.incidents([incident(1, rule="deny:tor", severity="high", count=5),
                 incident(2, exe="/usr/bin/java", count=2)])
    a.incidents([incident(1, rule="deny:tor", severity="high", count=7)])  # it grew
    b.incidents([incident(3, exe="/usr/bin/java", count=1)])
    found = [json.loads(x) for x in run("events", "--db", db, "--json").splitlines()]
    assert sorted((e["host"], e["id"], e["count"]) for e in found) == [
        ("db-1", "inc3", 1), ("web-1", "inc1", 7), ("web-1", "inc2", 2)]
    tor = [json.loads(x) for x in run("events", "--db", db, "--json", "--rule", "tor")
           .splitlines()]
    assert [e["id"] for e in tor] == ["inc1"]
    java = run("events", "--db", db, "--json", "--process", "java", "--host", "web-*")
    assert [json.loads(x)["id"] for x in java.splitlines()] == ["inc2"]
    assert run("events", "--db", db, "--severity", "critical") == "no incidents in the last 24h\n"
    top = json.loads(run("top", "--db", db, "--json"))
    assert top["host"][0] == {"host": "web-1", "incidents": 2, "packets": 9,
                              "last_seen": top["host"][0]["last_seen"], "worst": "high"}
    assert [r["process"] for r in top["process"]] == ["/usr/bin/curl", "/usr/bin/java"]
    (tmp_path / "p.yaml").write_text(V1)
    out = run("push", str(tmp_path / "p.yaml"), "--db", db, "--to", "web-*", "--canary", "1",
              "--waves", "100%", "--soak", "0")
    assert "policy version 1, rollout 1" in out and "wave 0 (canary): web-1" in out
    assert "running" in run("rollout", "status", "--db", db)
    assert "matches no enrolled host" in run("lockdown", "--db", db, "--to", "x-*", "--for",
                                             "2h", code=1)
    assert "web-1" in run("lockdown", "--db", db, "--to", "web-*", "--for", "2h")
    listed = {h["host"]: h for h in json.loads(run("hosts", "--db", db, "--json"))}
    assert listed["web-1"]["lockdown_until"] and listed["web-1"]["assigned_version"] == 1
    assert listed["db-1"]["lockdown_until"] is None
    assert "db-1" in run("hosts", "--db", db)
    run("revoke", "--db", db, "db-1")
    assert json.loads(run("hosts", "--db", db, "--json"))[0]["revoked"] is True
    assert "no host 'nope'" in run("revoke", "--db", db, "nope", code=1)
    assert "dropped 0 partition(s)" in run("prune", "--db", db, "--keep-days", "30")
    assert "aborted" in run("rollout", "abort", "--db", db)


def test_serve_refuses_a_database_without_the_schema(dsn: str) -> None:
    out = run("serve", "--db", dsn, "--no-tls", "--listen", "127.0.0.1:9", code=1)
    assert "version 0, this outguard needs" in out and "fleet init" in out
    assert "--tls-cert" in run("serve", "--db", dsn, "--listen", "127.0.0.1:9", code=2)


def test_serve_says_where_it_listens_and_warns_of_plain_http_off_the_loopback(capsys) -> None:
    # a trial: `fleet serve --listen 198.51.100.1:8449 --no-tls` served in silence
    from outguard.cli.fleet_cmd import _say_where

    _say_where("198.51.100.1", "8449", no_tls=True)
    err = capsys.readouterr().err
    assert "http://198.51.100.1:8449/v1/" in err and "WARNING: --no-tls" in err
    _say_where("::1", "8449", no_tls=True)
    err = capsys.readouterr().err
    assert "http://[::1]:8449/v1/" in err and "WARNING" not in err
    _say_where("198.51.100.1", "8443", no_tls=False)
    assert "WARNING" not in capsys.readouterr().err
