"""`outguard events` and `outguard top` over a real store file; `run`'s option checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from outguard.cli.main import cli
from outguard.monitor.aggregate import Aggregator
from outguard.monitor.classify import load_classifier
from outguard.store.sqlite import SQLiteStore
from tests.monitor.events import event

JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    c, agg = load_classifier(), Aggregator()
    now = (datetime.now(UTC) - datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)).total_seconds()
    incs = []
    for ev in (event("203.0.113.9", 1389, exe=JAVA, rule="deny:ldap", at=now - 60),
               event("198.51.100.7", 443, exe="/usr/bin/curl", at=now - 30),
               event("198.51.100.7", 443, exe="/usr/bin/curl", at=now - 20),
               event("198.51.100.8", 80, exe="/usr/bin/apt", at=now - 7200)):
        ev.classifications = c.classify(ev)
        incs.append(agg.add(ev).incident)
    store = SQLiteStore(tmp_path / "events.db")
    store.write(list({i.id: i for i in incs}.values()))
    store.close()
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_events_json_filters(state: Path) -> None:
    code, out = run("events", "--state-dir", str(state), "--json", "--since", "1h")
    assert code == 0
    got = [json.loads(line) for line in out.splitlines()]
    assert [(e["process"]["exe"], e["count"]) for e in got] == [("/usr/bin/curl", 2), (JAVA, 1)]
    _, out = run("events", "--state-dir", str(state), "--json", "--since", "1d")
    assert len(out.splitlines()) == 3
    _, out = run("events", "--state-dir", str(state), "--json", "--rule", "deny:ldap")
    assert [json.loads(line)["signature"] for line in out.splitlines()] == ["jndi-callback"]
    _, out = run("events", "--state-dir", str(state), "--json", "--process", "curl")
    assert len(out.splitlines()) == 1


def test_events_table(state: Path) -> None:
    code, out = run("events", "--store", str(state / "events.db"), "--severity", "critical")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("last seen") and len(lines) == 2
    assert "critical" in lines[1] and "203.0.113.9:1389" in lines[1]
    assert "possible JNDI callback (Log4Shell)" in lines[1]


def test_events_without_store_is_a_clear_error(tmp_path: Path) -> None:
    code, out = run("events", "--state-dir", str(tmp_path))
    assert code == 1 and "no event store" in out


def test_events_bad_since(state: Path) -> None:
    code, out = run("events", "--state-dir", str(state), "--since", "yesterday")
    assert code == 2 and "not a duration" in out


def test_top_once(state: Path) -> None:
    code, out = run("top", "--state-dir", str(state), "--once", "--since", "1d")
    assert code == 0
    assert "top blocked processes" in out and "top blocked destinations" in out
    proc_part = out.split("top blocked destinations")[0]
    assert proc_part.index("/usr/bin/curl") < proc_part.index("java")
    assert "198.51.100.7:443" in out and "critical" in out


def test_run_rejects_a_bad_metrics_address(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\n")
    code, out = run("run", str(policy), "--state-dir", str(tmp_path), "--metrics-listen", "9108")
    assert code == 2 and "HOST:PORT" in out


def test_run_needs_a_policy_to_apply_or_no_apply(tmp_path: Path) -> None:
    code, out = run("run", "--state-dir", str(tmp_path))
    assert code == 2 and "--no-apply" in out
