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


def test_events_table_keeps_path_components_whole(tmp_path: Path) -> None:
    """Trial run: the table cut exe paths mid-word (`…dk-amd64/bin/java` as `k-amd64/bin/java`)."""
    long = "/opt/vendor/very-long-product-name-2024/runtime/jdk-17.0.9+9/bin/java"
    ev = event("203.0.113.9", 1389, exe=long, rule="deny:ldap")
    ev.classifications = load_classifier().classify(ev)
    store = SQLiteStore(tmp_path / "events.db")
    store.write([Aggregator().add(ev).incident])
    store.close()
    code, out = run("events", "--state-dir", str(tmp_path), "--since", "100000d")
    assert code == 0
    (row,) = out.splitlines()[1:]
    shown = next(w for w in row.split() if w.endswith("java[4242]"))
    assert shown.startswith("…/") and long.endswith(shown[2:].removesuffix("[4242]"))
    assert "/" + shown[2:].split("/")[0] + "/" in long  # whole components only


def test_events_rule_by_bare_name(state: Path) -> None:
    """Trial run: `events --rule attacker-net` (without `deny:`) silently matched nothing."""
    code, out = run("events", "--state-dir", str(state), "--json", "--rule", "ldap")
    assert code == 0
    assert [json.loads(line)["rule"] for line in out.splitlines()] == ["deny:ldap"]
    result = CliRunner().invoke(cli, ["events", "--state-dir", str(state), "--rule", "nope"])
    assert result.exit_code == 0
    assert "no incidents of rule 'nope'" in result.output
    assert "rules with incidents: default, deny:ldap" in result.output


def test_events_table_says_what_was_done(state: Path) -> None:
    code, out = run("events", "--state-dir", str(state), "--since", "1h")
    lines = out.splitlines()
    assert code == 0 and "action" in lines[0].split()
    assert all(" dropped " in line for line in lines[1:])


def _damaged_store(where: Path) -> None:
    import sqlite3

    from tests.store.test_sqlite import incidents
    store = SQLiteStore(where / "events.db")
    store.write(incidents(2000))
    store.close()
    db = sqlite3.connect(where / "events.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray((where / "events.db").read_bytes())
    for off in range(4096 * 3, len(data), 4096 * 2):
        data[off:off + 2000] = b"\xff" * 2000
    (where / "events.db").write_bytes(data)


@pytest.mark.parametrize("command", [["events"], ["top", "--once"]])
def test_a_damaged_store_is_a_clear_error(tmp_path: Path, command: list[str]) -> None:
    """Hostile tester: a damaged store gave tracebacks."""
    _damaged_store(tmp_path)
    result = CliRunner().invoke(cli, [*command, "--state-dir", str(tmp_path), "--since",
                                      "100000d"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # not a traceback
    assert "is damaged: move it aside" in result.output


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
