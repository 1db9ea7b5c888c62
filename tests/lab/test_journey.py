"""Lab: `outguard lab demo --journey` end to end, from no policy to enforce, in the real lab.

One run of the journey (about two minutes), then one assertion per promise of issue 16 §6: the
suggested policy names its destinations (no address of a named lab host), simulate exits 0,
apply --verify succeeds and is confirmed, the learned workload runs again with zero blocked
flows, the JNDI callback is blocked and raised as critical, a lockdown blocks the API and lifts
by itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from outguard.lab import journey
from outguard.lab import topology as t
from outguard.lab.workload import Outcome

from .conftest import java_skip_reason, lab_leftovers

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def run() -> Iterator[tuple[journey.JourneyResult, list[str]]]:
    if reason := java_skip_reason():
        pytest.skip(reason)
    lines: list[str] = []
    result = journey.run_journey(down_after=True, say=lines.append)
    print("\n".join(lines))  # the transcript, shown with any failure
    yield result, lines


def test_the_lab_is_gone_afterwards(run: tuple[journey.JourneyResult, list[str]]) -> None:
    assert lab_leftovers() == []


def test_the_workload_was_learned(run: tuple[journey.JourneyResult, list[str]]) -> None:
    result, _ = run
    assert [r.observed for r in result.learned] == [Outcome.ALLOWED] * len(result.learned)
    for host in ("mirror", "api", "backup", "ntp"):
        assert t.host(host).fqdn in result.flows_text


def test_the_suggested_policy_names_its_destinations(
    run: tuple[journey.JourneyResult, list[str]],
) -> None:
    result, lines = run
    doc = yaml.safe_load(result.policy_text)
    destinations = [d for rule in doc["allow"] for d in rule.get("to", [])]
    for host in ("mirror", "api", "backup", "ntp"):
        assert t.host(host).fqdn in destinations, destinations
    assert any(rule.get("proto") == "udp" and 123 in rule.get("ports", []) for rule in doc["allow"])
    named = {a for h in t.HOSTS if h.name != "dns" for a in h.addresses}
    assert not named & set(destinations), "an address of a named destination"
    assert doc.get("dns", {}).get("upstreams"), "names need the dns: section"
    assert any("suggested.yaml" in line for line in lines)  # it was printed


def test_simulate_apply_verify_confirm(run: tuple[journey.JourneyResult, list[str]]) -> None:
    result, lines = run
    assert result.simulate_code == 0
    assert result.apply_code == 0
    assert result.confirmed
    assert any(line.startswith("$ outguard apply") and "--verify" in line
               and "--confirm-timeout" in line for line in lines)


def test_the_workload_runs_again_with_zero_blocked_flows(
    run: tuple[journey.JourneyResult, list[str]],
) -> None:
    result, _ = run
    assert result.enforced and all(r.observed == Outcome.ALLOWED for r in result.enforced), \
        "\n".join(run[1])
    assert result.blocked_incidents == []
    assert result.default_drops == 0


def test_the_jndi_callback_is_blocked_and_critical(
    run: tuple[journey.JourneyResult, list[str]],
) -> None:
    result, _ = run
    assert result.jndi is not None and result.jndi.observed == Outcome.BLOCKED
    assert [i.signature for i in result.jndi_incidents] == ["jndi-callback"]
    assert result.jndi_incidents[0].dst == t.host("attacker").ipv4


def test_a_lockdown_blocks_the_api_then_lifts_by_itself(
    run: tuple[journey.JourneyResult, list[str]],
) -> None:
    result, _ = run
    assert result.lockdown_blocked is not None
    assert result.lockdown_blocked.observed == Outcome.BLOCKED
    assert result.lockdown_incidents  # one per address family curl tried
    assert {i.rule for i in result.lockdown_incidents} == {"lockdown"}
    assert result.lockdown_lifted is not None
    assert result.lockdown_lifted.observed == Outcome.ALLOWED
    assert result.ok


def test_commands_run_as_typed_on_the_server() -> None:
    """What the journey runs: `--netns` for the lab, `--state-dir` only where the command has
    it (`dns install` has none: the first journey failed on it)."""
    paths = t.LabPaths()
    dns = journey.cli(paths, "dns", "install")
    assert "--state-dir" not in dns and dns[-2:] == ["--netns", t.SERVER_NS]
    learn = journey.cli(paths, "learn", "--for", "20s")
    assert learn[-4:] == ["--netns", t.SERVER_NS, "--state-dir", str(paths.state_dir)]
    assert journey.shown("apply", "p.yaml", "--verify") == "$ outguard apply p.yaml --verify"


def test_the_workload_asks_by_name() -> None:
    """Names in every URL of the learned workload: the suggested policy can only name what the
    clients asked for by name."""
    steps = journey.journey_steps(t.LabPaths())
    targets = [next(a for a in s.argv if t.ZONE in a) for s in steps]
    assert len(targets) == len(steps)
    assert not any(a for h in t.HOSTS for a in h.addresses for s in steps if a in " ".join(s.argv))


def test_journey_writes_its_own_policy() -> None:
    """`--journey --policy`: a usage error before anything is built."""
    from click.testing import CliRunner

    from outguard.cli.lab_cmd import lab

    got = CliRunner().invoke(lab, ["demo", "--journey", "--policy", "examples/lab-policy.yaml"])
    assert got.exit_code == 2 and "--journey writes its own policy" in got.output
    assert lab_leftovers() == []
    assert "--journey" in CliRunner().invoke(lab, ["demo", "--help"]).output
