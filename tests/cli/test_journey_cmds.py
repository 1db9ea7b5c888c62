"""`outguard suggest` and `outguard simulate` through click: the store (real SQLite) and
`--flows` files, `--against`, `--out`, and simulate's exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner, Result

from outguard.cli.main import cli
from outguard.store.sqlite import SQLiteStore
from tests.journey.flows import flow

NOW = datetime.now(UTC)
FLOWS = [flow("203.0.113.10", names=("api.example.com",)),
         flow("192.0.2.53", 53, "udp"),
         flow("203.0.113.30", 123, "udp", exe="/usr/sbin/chronyd"),
         flow("198.51.100.7", 1389, exe="/usr/bin/java", names=("evil.example",),
              signature="jndi-callback", severity="critical")]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _file(tmp: Path, flows: list = FLOWS) -> Path:  # type: ignore[type-arg]
    path = tmp / "flows.jsonl"
    path.write_text("".join(json.dumps(f.to_json()) + "\n" for f in flows))
    return path


def _store(tmp: Path) -> Path:
    path = tmp / "events.db"
    db = SQLiteStore(path)
    recent = [f.__class__(**{**f.__dict__, "first_seen": NOW - timedelta(hours=1),
                             "last_seen": NOW - timedelta(minutes=5)}) for f in FLOWS]
    db.record_flows(recent)
    db.close()
    return path


def test_suggest_from_a_file_then_simulate(tmp_path: Path) -> None:
    out = tmp_path / "suggested.yaml"
    result = run("suggest", "--flows", str(_file(tmp_path)), "--out", str(out),
                 "--state-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "api.example.com" in text and "203.0.113.10" not in text
    assert "jndi-callback (critical)" in text
    checked = run("check", str(out), "--state-dir", str(tmp_path))
    assert checked.exit_code == 0, checked.output
    result = run("simulate", str(out), "--flows", str(_file(tmp_path)),
                 "--state-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "BLOCK  /usr/bin/java (root) -> evil.example (198.51.100.7) tcp/1389: default" \
        in result.output
    # the JNDI callback got out while learning (nothing was blocked): said so, exit 0 all
    # the same (blocking a classified flow is what the policy is for)
    assert ("4 flows replayed: 1 would be blocked, 1 of them got out when learned, 1 classified"
            " medium or worse; 0 got out and are not classified") in result.output
    assert "default  [jndi-callback (critical), got out when learned]" in result.output


def test_suggest_and_simulate_from_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    result = run("suggest", "--store", str(store), "--state-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "api.example.com" in result.output
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallow:\n  - {name: ntp, to: [203.0.113.30], ports: [123]}\n")
    result = run("simulate", str(policy), "--store", str(store), "--state-dir", str(tmp_path))
    assert result.exit_code == 1  # the API call and DNS got out, and would be blocked
    assert "/usr/bin/curl: 2 flows (2 connections), 2 got out when learned" in result.output
    old = run("simulate", str(policy), "--store", str(store), "--since", "1m",
              "--state-dir", str(tmp_path))
    assert old.exit_code == 0 and "0 flows replayed" in old.output


def test_simulate_json(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallow: []\n")
    result = run("simulate", str(policy), "--flows", str(_file(tmp_path)), "--json",
                 "--state-dir", str(tmp_path))
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [d["rule"] for d in lines[:-1]] == ["default"] * 4
    assert lines[0]["regression"] is True and lines[3]["regression"] is False
    assert lines[-1]["summary"]["regressions"] == 3


def test_simulate_errors_exit_2(tmp_path: Path) -> None:
    flows = _file(tmp_path)
    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text("version: 1\nallow: [{name: x, to: [nope!]}]\n")
    result = run("simulate", str(bad_policy), "--flows", str(flows), "--state-dir", str(tmp_path))
    assert result.exit_code == 2 and "bad.yaml:2" in result.output
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\nallow: []\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(FLOWS[0].to_json()) + "\n{not json\n")
    result = run("simulate", str(good), "--flows", str(broken), "--state-dir", str(tmp_path))
    assert result.exit_code == 2 and f"{broken}:2:" in result.output
    missing = run("simulate", str(good), "--flows", str(tmp_path / "none.jsonl"),
                  "--state-dir", str(tmp_path))
    assert missing.exit_code == 2 and "cannot read" in missing.output


def test_a_corrupt_or_foreign_store_is_a_clear_error(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\nallow: []\n")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE songs (title TEXT)")
    for store in (corrupt, foreign, tmp_path / "absent.db"):
        result = run("simulate", str(good), "--store", str(store), "--state-dir", str(tmp_path))
        assert result.exit_code == 2, (store, result.output)
        assert result.output.startswith("error: ") and "Traceback" not in result.output
        result = run("suggest", "--store", str(store), "--state-dir", str(tmp_path))
        assert result.exit_code == 1 and result.output.startswith("error: ")


def test_suggest_against_prints_a_diff_or_writes_the_file(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    text = "# mine\nversion: 1\nallow:\n  - {name: ntp, to: [203.0.113.30], ports: [123]}\n"
    policy.write_text(text)
    flows = _file(tmp_path, FLOWS[2:3] + [flow("203.0.113.40", 22)])
    result = run("suggest", "--flows", str(flows), "--against", str(policy),
                 "--state-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"--- {policy}\n+++ {policy} (suggested)\n")
    assert "+    to:" in result.output and "203.0.113.30" not in result.output.split("@@")[-1] \
        .replace("  - {name: ntp, to: [203.0.113.30], ports: [123]}", "")
    out = tmp_path / "new.yaml"
    result = run("suggest", "--flows", str(flows), "--against", str(policy), "--out", str(out),
                 "--state-dir", str(tmp_path))
    assert result.exit_code == 0 and out.read_text().startswith(text)
    assert policy.read_text() == text


def test_suggest_per_host(tmp_path: Path) -> None:
    result = run("suggest", "--flows", str(_file(tmp_path)), "--per", "host",
                 "--state-dir", str(tmp_path))
    assert result.exit_code == 0 and "- name: host-tcp443\n" in result.output
    assert "for:" not in result.output


def test_against_adds_nothing_for_what_the_user_denies(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    text = "version: 1\ndeny:\n  - {name: no-ssh, to: [203.0.113.40], ports: [22]}\n"
    policy.write_text(text)
    flows = _file(tmp_path, [flow("203.0.113.40", 22), flow("203.0.113.41", 443)])
    out = tmp_path / "new.yaml"
    result = run("suggest", "--flows", str(flows), "--against", str(policy), "--out", str(out),
                 "--state-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    merged = out.read_text()
    assert "203.0.113.41" in merged and "- \"203.0.113.40\"" not in merged
    assert "# note: 1 learned flows are blocked by your rule deny:no-ssh" in merged


def test_simulate_from_a_file_knows_the_names_other_flows_saw(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\ndns: {upstreams: [192.0.2.53]}\n"
                      "allow:\n  - {name: api, to: [api.example.com]}\n")
    flows = _file(tmp_path, [flow("203.0.113.10", names=("api.example.com",)),
                             flow("203.0.113.10", 8443)])  # no name of its own
    result = run("simulate", str(policy), "--flows", str(flows), "--state-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "2 flows replayed: 0 would be blocked" in result.output
