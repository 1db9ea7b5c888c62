"""Learning's kernel rules: where they sit, what they count and log, and that they decide
nothing."""

from __future__ import annotations

import pytest

from outguard.errors import PolicyError
from outguard.nftables.nft_learn import COUNT_SIZE, COUNT_TIMEOUT, KEY_SIZE, KEY_TIMEOUT, count_sets
from outguard.policy.load import load_text
from tests.nftables.helpers import compiled_of, rules_text

POLICY = """
version: 1
options: {nflog_group: 7}
allow:
  - {name: web, to: [203.0.113.10], ports: [443]}
"""


def test_learning_sees_every_new_flow_before_the_policy_decides() -> None:
    c = compiled_of(POLICY + "learn: true\n")
    out = rules_text(c, "output")
    # after established, loopback and neighbour discovery; before every rule of the policy
    assert out.index("ct state new jump learn") == 3 and out[4] == "jump allow"
    assert {"learn.new", "learn.logged", "learn.keys"} <= set(c.counters)
    assert c.chains["input"].hook == "input"
    assert rules_text(c, "input") == [
        'meta l4proto { tcp, udp } th sport 53 log prefix "og:learn-dns" group 9']


def test_the_kernel_counts_by_key_and_logs_a_keys_first_flow_and_the_rest() -> None:
    c = compiled_of(POLICY + "learn: true\n")
    learn = rules_text(c, "learn")
    sets = count_sets()
    key = "daddr . meta l4proto . th dport . meta skuid"
    assert learn[0] == 'counter name "learn.new"'  # every new flow, first
    assert learn[1] == (f"meta nfproto ipv4 meta l4proto {{ tcp, udp }} update @{sets[4]}"
                        f" {{ ip {key} counter }} goto learn_key4")
    assert learn[2].startswith("meta nfproto ipv6") and f"@{sets[6]} {{ ip6 {key} counter" \
        in learn[2]
    # what no set takes: counted and logged one by one, no verdict (the policy decides)
    assert learn[3] == 'counter name "learn.logged" log prefix "og:learn" group 8'
    first = rules_text(c, "learn_key4")
    assert first[0].endswith(" return") and "@fl_learnk4_" in first[0]
    assert first[1].endswith('counter name "learn.keys" log prefix "og:learn-key" group 8')
    for version in (4, 6):  # bounded: a size and a timeout each
        counting = c.sets[sets[version]]
        assert (counting.capacity, counting.element_timeout) == (COUNT_SIZE, COUNT_TIMEOUT)
    keys = [s for name, s in c.sets.items() if name.startswith("fl_learnk")]
    assert [(s.capacity, s.element_timeout) for s in keys] == [(KEY_SIZE, KEY_TIMEOUT)] * 2
    assert not any(r.endswith(("accept", "drop")) for ch in ("learn", "learn_key4", "learn_key6")
                   for r in rules_text(c, ch))


def test_without_learning_nothing_of_it_is_there() -> None:
    c = compiled_of(POLICY)
    assert "input" not in c.chains and "learn.new" not in c.counters
    assert not any(name.startswith("learn") for name in c.chains)
    assert not any("learn" in r for r in rules_text(c, "output"))


def test_the_groups_wrap_at_the_top() -> None:
    c = compiled_of("version: 1\nlearn: true\noptions: {nflog_group: 65535}\n")
    assert any(r.endswith("group 0") for r in rules_text(c, "learn"))
    assert rules_text(c, "input")[0].endswith("group 1")


@pytest.mark.parametrize("value", ['"true"', "1", "yes", "on"])
def test_learn_takes_only_a_boolean(value: str) -> None:
    with pytest.raises(PolicyError, match="learn"):
        load_text(f"version: 1\nlearn: {value}\n", "p.yaml")
