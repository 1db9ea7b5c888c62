"""`outguard flows` over a real store, and the policy text `outguard learn` applies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from outguard.cli.learn_cmd import learning_text
from outguard.cli.main import cli
from outguard.errors import StateError
from outguard.events import LearnedFlow
from outguard.store.sqlite import SQLiteStore

NOW = datetime.now(UTC)


def flow(dst: str, age: timedelta, **kw: object) -> LearnedFlow:
    base = dict(exe="/usr/bin/curl", cmdline=("curl", "https://api.example.test"), user="app",
                uid=1000, unit="app.service", cgroup="/system.slice/app.service",
                container=None, dst=dst, port=443, proto="tcp", names=("api.example.test",),
                count=3, first_seen=NOW - age, last_seen=NOW - age, decision="allow:api")
    base.update(kw)
    return LearnedFlow(**base)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    db = SQLiteStore(path)
    db.record_flows([flow("203.0.113.7", timedelta(hours=1)),
                     flow("203.0.113.8", timedelta(days=9), names=(), decision="default",
                          signature="jndi-callback", severity="critical")])
    db.close()
    return path


def test_flows_json_is_one_learned_flow_a_line(store: Path) -> None:
    got = CliRunner().invoke(cli, ["flows", "--store", str(store), "--json", "--since", "30d"])
    assert got.exit_code == 0, got.output
    flows = [LearnedFlow.from_json(json.loads(line)) for line in got.output.splitlines()]
    assert [f.dst for f in flows] == ["203.0.113.7", "203.0.113.8"]  # most recent first
    assert flows[1].signature == "jndi-callback"


def test_flows_table_and_since(store: Path) -> None:
    got = CliRunner().invoke(cli, ["flows", "--store", str(store)])
    assert got.exit_code == 0, got.output
    lines = got.output.splitlines()
    assert lines[0].split()[:3] == ["last", "seen", "count"]
    assert len(lines) == 2  # the 9-day-old flow is outside the default 7d
    assert "203.0.113.7:443/tcp" in lines[1] and "api.example.test" in lines[1]
    assert "allow:api" in lines[1] and "app.service" in lines[1]


def test_flows_of_a_store_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    got = CliRunner().invoke(cli, ["flows", "--store", str(tmp_path / "none.db")])
    assert got.exit_code != 0
    assert "no event store" in got.output and "Traceback" not in got.output


def test_flows_of_a_foreign_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    path.write_bytes(b"this is no database at all" * 100)
    got = CliRunner().invoke(cli, ["flows", "--store", str(path)])
    assert got.exit_code != 0 and "Traceback" not in got.output


def test_learning_text_adds_the_key_or_keeps_the_file(tmp_path: Path) -> None:
    plain = tmp_path / "p.yaml"
    plain.write_text("version: 1\nallow: []")
    assert learning_text(plain) == "version: 1\nallow: []\nlearn: true  # added by `outguard learn`\n"
    on = tmp_path / "on.yaml"
    on.write_text("version: 1\nlearn: true\n")
    assert learning_text(on) == on.read_text()
    off = tmp_path / "off.yaml"
    off.write_text("version: 1\nlearn: false\n")
    with pytest.raises(StateError, match="learn: false"):
        learning_text(off)
    flow_style = tmp_path / "flow.yaml"
    flow_style.write_text("{version: 1}\n")
    with pytest.raises(StateError, match="add `learn: true`"):
        learning_text(flow_style)
