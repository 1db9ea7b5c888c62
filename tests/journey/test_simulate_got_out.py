"""simulate's "got out when learned" is what happened (journey trial defect 3): a flow learned
with nothing blocking it got out whether or not the classifier named it, and so did a flow an
audit-mode policy only logged; only the exit code leaves classified flows aside."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from outguard.cli.main import cli
from outguard.journey.simulate import LearnedNames, recorded_allowed, simulate
from outguard.pipeline import lower_policy
from outguard.policy.load import load_text
from outguard.service.learning import decider

from .flows import flow

# the trial: two connections to an attacker's listener while learning (no policy: nothing
# blocked; the listener logged both), classified as a mining pool port
ATTACKER = [flow("198.51.100.66", 4444, exe="/usr/bin/python3.11", count=1, age=i,
                 signature="miner-pool", severity="high") for i in (0, 1)]


def test_classified_flows_that_got_out_are_counted_as_got_out() -> None:
    policy = load_text("version: 1\nallow: []\n", "p.yaml")
    summary = simulate(lower_policy(policy), ATTACKER, names=LearnedNames(ATTACKER))
    assert (summary.blocked, summary.got_out, summary.classified_blocked) == (2, 2, 2)
    assert summary.regressions == 0  # blocking them breaks nothing: exit 0
    assert summary.to_json()["by_process"]["/usr/bin/python3.11"]["got_out"] == 2


def test_the_text_says_they_got_out(tmp_path: Path) -> None:
    flows = tmp_path / "flows.jsonl"
    flows.write_text("".join(json.dumps(f.to_json()) + "\n" for f in ATTACKER))
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nallow: []\n")
    result = CliRunner().invoke(cli, ["simulate", str(policy), "--flows", str(flows),
                                      "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert ("2 flows replayed: 2 would be blocked, 2 of them got out when learned, 2 classified"
            " medium or worse; 0 got out and are not classified") in result.output
    assert "[miner-pool (high), got out when learned]" in result.output


def test_what_an_audit_policy_only_logged_got_out() -> None:
    assert recorded_allowed(flow("203.0.113.9", decision="default audit"))
    assert recorded_allowed(flow("203.0.113.9", decision="deny:x audit"))
    assert not recorded_allowed(flow("203.0.113.9", decision="default"))
    assert not recorded_allowed(flow("203.0.113.9", decision="deny:x"))
    policy = load_text("version: 1\nallow: []\n", "p.yaml")
    summary = simulate(lower_policy(policy), [flow("203.0.113.9", decision="default audit")])
    assert summary.regressions == 1


def test_the_learner_records_an_audit_policys_would_be_blocks_as_audit() -> None:
    audit = load_text("version: 1\nmode: audit\nallow:\n  - {name: a, to: [203.0.113.1]}\n"
                      "deny:\n  - {name: d, to: [198.51.100.0/24]}\n", "p.yaml")
    enforce = load_text("version: 1\nallow:\n  - {name: a, to: [203.0.113.1]}\n", "p.yaml")
    flows = [flow("203.0.113.1"), flow("203.0.113.9"), flow("198.51.100.66", 4444)]
    assert decider(lambda: audit)(flows) == ["allow:a", "default audit", "deny:d audit"]
    assert decider(lambda: enforce)(flows) == ["allow:a", "default", "default"]
    assert decider(lambda: None)(flows) == ["", "", ""]
