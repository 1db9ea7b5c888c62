"""Learning's kernel rules: where they sit, what they count and log, and that they decide
nothing."""

from __future__ import annotations

import pytest

from outguard.errors import PolicyError
from outguard.policy.load import load_text
from tests.nftables.helpers import compiled_of, rules_text

POLICY = """
version: 1
options: {nflog_group: 7}
allow:
  - {name: web, to: [203.0.113.10], ports: [443]}
"""


def test_learning_logs_every_new_flow_before_the_policy_decides() -> None:
    c = compiled_of(POLICY + "learn: true\n")
    out = rules_text(c, "output")
    learn = 'ct state new counter name "learn.new" log prefix "og:learn" group 8'
    assert learn in out
    # after established, loopback and neighbour discovery; before every rule of the policy
    assert out.index(learn) == 3 and out[4] == "jump allow"
    assert "learn.new" in c.counters
    assert c.chains["input"].hook == "input"
    assert rules_text(c, "input") == [
        'meta l4proto { tcp, udp } th sport 53 log prefix "og:learn-dns" group 9']


def test_without_learning_nothing_of_it_is_there() -> None:
    c = compiled_of(POLICY)
    assert "input" not in c.chains and "learn.new" not in c.counters
    assert not any("learn" in r for r in rules_text(c, "output"))


def test_the_groups_wrap_at_the_top() -> None:
    c = compiled_of("version: 1\nlearn: true\noptions: {nflog_group: 65535}\n")
    assert any(r.endswith("group 0") for r in rules_text(c, "output"))
    assert rules_text(c, "input")[0].endswith("group 1")


@pytest.mark.parametrize("value", ['"true"', "1", "yes", "on"])
def test_learn_takes_only_a_boolean(value: str) -> None:
    with pytest.raises(PolicyError, match="learn"):
        load_text(f"version: 1\nlearn: {value}\n", "p.yaml")
