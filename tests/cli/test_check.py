"""The read-only commands through click's CliRunner: check, schema, compile (explain:
test_explain.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from outguard.cli.main import cli

GOOD = """\
version: 1
allow:
  - name: web-api
    to: [203.0.113.10, "2001:db8::10"]
    ports: [80, 443]
    proto: tcp
  - name: backup-as-nobody
    to: [203.0.113.12]
    ports: [80]
    for: {user: nobody}
deny:
  - name: attacker-net
    to: [198.51.100.0/24]
lists:
  spare: [192.0.2.9]
"""

BAD = """\
version: 1
allow:
  - name: web-api
    to: [10.0.0.300]
    ports: [70000]
  - name: x
    proto: sctp
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def _no_dry_run_here(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """CliRunner runs in this test's own network namespace (the host's): the kernel's dry run is
    tested in a namespace of its own (the `kernel` tests below) and left out everywhere else."""
    if request.node.get_closest_marker("kernel") is None:
        from outguard.cli import check
        from outguard.ruleset import reach

        monkeypatch.setattr(check, "kernel_refusal", lambda _policy: None)
        # nor the host's resolv.conf (tests/test_reach.py gives its own)
        monkeypatch.setattr(reach.HostView, "of_netns", classmethod(
            lambda cls, _netns: cls(resolv_conf=Path("/nonexistent/resolv.conf"))))


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


# --- check ------------------------------------------------------------------------------------

def test_check_ok(good: Path) -> None:
    result = run("check", str(good))
    assert result.exit_code == 0
    assert result.stdout == f"{good}: ok (3 rules, 1 lists, 1 warnings)\n"
    assert result.stderr == (f"warning: {good}:15:10: lists.spare: list 'spare' is not used by"
                             " any rule\n")


def test_check_strict_fails_on_warnings(good: Path) -> None:
    """Issue 14: `--strict` printed "ok" and exited 1."""
    result = run("check", "--strict", str(good))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"warning: {good}:15:10: lists.spare: list 'spare' is not used by any rule",
        f"{good}: failed --strict: 1 warning(s), no error (3 rules, 1 lists, 1 warnings)"]


def test_check_strict_passes_without_warnings(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nmode: audit\n")
    result = run("check", "--strict", str(path))
    assert result.exit_code == 0
    assert result.stdout == f"{path}: ok (0 rules, 0 lists, 0 warnings)\n"
    assert result.stderr == ""


def test_check_errors(bad: Path) -> None:
    result = run("check", str(bad))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}:4:10: allow[0].to[0]: '10.0.0.300' is not an IP address, network or host name",
        f"{bad}:5:13: allow[0].ports[0]: port 70000 is outside 1-65535",
        f"{bad}:7:12: allow[1].proto: 'sctp' is not one of 'tcp', 'udp', 'icmp' or 'any'",
        "3 error(s); nothing was applied",
    ]


def test_check_the_issue_example_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.policy.test_errors import ISSUE_EXAMPLE

    monkeypatch.chdir(tmp_path)
    Path("policy.yaml").write_text(ISSUE_EXAMPLE)
    result = run("check", "policy.yaml")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "policy.yaml:12:9: allow[2].to[0]: '10.0.0.300' is not an IP address, network or host name")


def test_check_missing_file(tmp_path: Path) -> None:
    result = run("check", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'nope.yaml'}:1:1: cannot read policy: No such file or directory",
        "1 error(s); nothing was applied"]


def test_check_the_lab_policy() -> None:
    lab = Path(__file__).resolve().parents[2] / "examples" / "lab-policy.yaml"
    result = run("check", str(lab))
    assert result.exit_code == 0
    # mirror.example.test is resolved at apply time, and (.test) it does not resolve here
    assert result.stdout.endswith(": ok (5 rules, 0 lists, 1 warnings)\n")
    assert "host name 'mirror.example.test' does not resolve" in result.stderr


def test_check_reads_feed_copies_from_the_state_dir(tmp_path: Path) -> None:
    """Issue 14: check had no --state-dir; a `url:` feed's last good copy is read from it."""
    from outguard.feeds.merge import FeedSet
    from outguard.feeds.parse import parse
    from outguard.feeds.store import FeedStore

    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nmode: audit\ndeny:\n  - {name: t, to: ['@feed:corp']}\n"
                      "feeds:\n  corp: {url: 'https://intel.example.test/bad.txt'}\n")
    empty = run("check", "--state-dir", str(tmp_path / "empty"), str(policy))
    assert empty.exit_code == 0
    assert "feed corp has no good copy yet" in empty.stderr
    FeedStore(tmp_path / "state" / "feeds").write_copy(
        "corp", FeedSet.of(parse(b"198.51.100.0/24\n", "plain")))
    full = run("check", "--state-dir", str(tmp_path / "state"), str(policy))
    assert (full.exit_code, full.stderr) == (0, "")
    assert full.stdout == f"{policy}: ok (1 rules, 0 lists, 0 warnings)\n"


def test_check_reports_shape_and_reference_errors_in_one_run(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallow:\n  - {name: a, to: [10.0.0.300, '@partnrs']}\n"
                      "lists:\n  partners: [192.0.2.1]\n")
    result = run("check", str(policy))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{policy}:3:20: allow[0].to[0]: '10.0.0.300' is not an IP address, network or host name",
        f"{policy}:3:32: allow[0].to[1]: no list named 'partnrs' in 'lists'; did you mean"
        " 'partners'?",
        "2 error(s); nothing was applied"]


# --- the kernel's dry run (as root, in a namespace of the test's own) ---------------------------

@pytest.mark.kernel
def test_the_kernel_checks_what_apply_would_send(tmp_path: Path) -> None:
    """What the loader lets through and the kernel refuses is an error of `check` (here ports
    that overlap, made past the loader's merge: the kernel says "conflicting intervals")."""
    from outguard.cli.check import kernel_refusal
    from outguard.kernel import netns as ns
    from outguard.policy.load import load_text
    from tests.kernel.conftest import kernel_skip_reason, new_netns

    assert kernel_skip_reason() is None, kernel_skip_reason()
    policy = load_text("version: 1\nallow:\n  - {name: a, to: [203.0.113.1], ports: [443],"
                       " proto: tcp}\n", "p.yaml")
    rule = policy.doc.allow[0].model_copy(update={"ports": [(443, 443), (1, 1024)]})
    broken = policy.doc.model_copy(update={"allow": [rule]})
    name = new_netns()
    etc = Path("/etc/netns") / name
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")  # none that policy blocks
        assert kernel_refusal(policy, name) is None
        policy.doc = broken
        refusal = kernel_refusal(policy, name)
        assert refusal is not None and "conflicting intervals" in refusal
        path = tmp_path / "p.yaml"
        path.write_text(GOOD)
        proc = subprocess.run([sys.executable, "-m", "outguard", "check", "--netns", name,
                               "--state-dir", str(tmp_path / "state"), str(path)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert (proc.returncode, proc.stdout) == (0, f"{path}: ok (3 rules, 1 lists, 1 warnings)\n")
        assert ns.run(name, ["nft", "list", "tables"]).stdout == ""  # nothing committed
    finally:
        ns.delete(name)
        shutil.rmtree(etc, ignore_errors=True)


# --- schema -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = run("schema")
    assert result.exit_code == 0
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_schema_is_json_with_the_policy_keys(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "outguard policy"
    assert schema["type"] == "object"
    assert {"version", "mode", "allow", "deny", "lists", "options"} <= set(schema["properties"])
    assert schema["required"] == ["version"]
    assert schema["additionalProperties"] is False
    rule = schema["$defs"]["Rule"]
    assert set(rule["properties"]) == {"name", "to", "ports", "proto", "for", "comment",
                                       "expires"}
    assert rule["additionalProperties"] is False
    assert set(schema["$defs"]["Options"]["properties"]) == {
        "default_action", "nflog_group", "log_rate", "forward"}


def _types(node: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """The JSON types a schema node accepts (enough of JSON Schema for this check)."""
    if "$ref" in node:
        return _types(defs[node["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in node:
        return set().union(*(_types(n, defs) for n in node["anyOf"]))
    if "type" in node:
        return {node["type"]} if isinstance(node["type"], str) else set(node["type"])
    return {"string", "integer", "number", "boolean", "array", "object", "null"}  # anything


def test_schema_accepts_what_policies_contain(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    rule = defs["Rule"]["properties"]
    to_items = next(n for n in rule["to"]["anyOf"] if n.get("type") == "array")["items"]
    assert "string" in _types(to_items, defs)
    port_items = next(n for n in rule["ports"]["anyOf"] if n.get("type") == "array")["items"]
    assert {"integer", "string"} <= _types(port_items, defs)
    assert "array" in _types(schema["properties"]["lists"]["additionalProperties"], defs)


# --- compile ----------------------------------------------------------------------------------

def test_compile_prints_nft_text(good: Path) -> None:
    result = run("compile", str(good))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:3] == ["add table inet outguard", "delete table inet outguard",
                         "add table inet outguard"]
    assert 'add rule inet outguard v_deny_attacker-net counter name "log.deny.attacker-net"' \
        ' log prefix "og:deny:attacker-net" group 0' in lines
    assert lines[-1] == 'add rule inet outguard output counter name "default" goto v_default'
    assert "warning: " in result.stderr  # the unused list


def test_compile_json(good: Path) -> None:
    result = run("compile", "--json", str(good))
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["nftables"][0] == {"metainfo": {"json_schema_version": 1}}
    rules = [c["add"]["rule"] for c in doc["nftables"] if "rule" in c.get("add", {})]
    assert {r["chain"] for r in rules} >= {"output", "deny", "allow", "v_default"}
    assert rules[-1]["expr"] == [{"counter": "default"}, {"goto": {"target": "v_default"}}]


def test_compile_text_and_json_agree(good: Path) -> None:
    from outguard.nftables import nft_text

    text = run("compile", str(good)).stdout
    doc = json.loads(run("compile", "--json", str(good)).stdout)
    assert nft_text.script(doc["nftables"]) == text


def test_compile_errors(bad: Path) -> None:
    result = run("compile", str(bad))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == "3 error(s); nothing was applied"
