"""nftables.nft: the table layout, rule by rule, and limits of what nft 1.0.6 accepts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from outguard.errors import PolicyError
from outguard.nftables import nft_tx
from outguard.nftables.nft import compile_ruleset, conditions
from outguard.policy.load import load_text
from outguard.ruleset.ir import Match
from outguard.ruleset.keys import RuleKey
from tests.nftables.helpers import compiled_of, lowered, rules_text


def _m(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


L4 = {"meta": {"key": "l4proto"}}


@pytest.mark.parametrize(("match", "expected"), [
    (Match(), []),
    (Match(proto="tcp"), [_m(L4, "tcp")]),
    (Match(proto="udp", ports=((53, 53),)),
     [_m({"payload": {"protocol": "udp", "field": "dport"}}, 53)]),
    (Match(proto="tcp", ports=((80, 80), (8000, 8100))),
     [_m({"payload": {"protocol": "tcp", "field": "dport"}},
         {"set": [80, {"range": [8000, 8100]}]})]),
    (Match(proto="tcp", ports=((8000, 8100),)),
     [_m({"payload": {"protocol": "tcp", "field": "dport"}}, {"range": [8000, 8100]})]),
    (Match(proto="any", ports=((53, 53),)),
     [_m(L4, {"set": ["tcp", "udp"]}), _m({"payload": {"protocol": "th", "field": "dport"}}, 53)]),
    (Match(proto="icmp"), [_m(L4, {"set": ["icmp", "ipv6-icmp"]})]),
    (Match(uid=65534, gid=0), [_m({"meta": {"key": "skuid"}}, 65534),
                               _m({"meta": {"key": "skgid"}}, 0)]),
    (Match(cgroup="system.slice/nginx.service", cgroup_level=2),
     [_m({"socket": {"key": "cgroupv2", "level": 2}}, "system.slice/nginx.service")]),
    (Match(until=datetime(2026, 7, 1, tzinfo=UTC)),
     [_m({"meta": {"key": "time"}}, 1782864000, "<")]),
])
def test_conditions(match: Match, expected: list[dict[str, Any]]) -> None:
    assert conditions(match) == expected


def test_rules_with_the_same_ports_share_one_named_port_set() -> None:
    # An anonymous set per rule made a 1,000-rule apply cost ~0.5 s of libnftables evaluation.
    policy = load_text("""
version: 1
allow:
  - {name: a, to: [192.0.2.1], ports: [443, 8000-8100], proto: tcp}
  - {name: b, to: [192.0.2.2], ports: [443, 8000-8100], proto: tcp}
  - {name: c, to: [192.0.2.3], ports: [53, 443], proto: any}
""", "p.yaml")
    compiled = compile_ruleset(lowered(policy))
    port_sets = {n: s for n, s in compiled.sets.items() if n.startswith("p_")}
    assert len(port_sets) == 2
    assert sorted(s.elements() for s in port_sets.values()) == sorted(
        [[443, {"range": [8000, 8100]}], [53, 443]])
    exprs = [e for chain in compiled.chains.values() for rule in chain.rules for e in rule.expr]
    refs = [e["match"]["right"] for e in exprs
            if "match" in e and e["match"]["left"].get("payload", {}).get("field") == "dport"]
    assert sorted(set(refs)) == sorted(f"@{n}" for n in port_sets)


def test_kernel_counter_names() -> None:
    assert RuleKey.parse("allow:web-api").counter == "allow.web-api"
    assert RuleKey.parse("deny:a.b").counter == "deny.a.b"
    assert RuleKey.parse("default").counter == "default"


def test_deny_verdict_chain_counts_gates_logs_and_drops() -> None:
    c = compiled_of("version: 1\ndeny:\n  - {name: x, to: [198.51.100.1]}\n"
                    "options: {log_rate: 3/minute, nflog_group: 9}\n")
    assert rules_text(c, "v_deny_x") == [
        'counter name "deny.x"',
        "jump log_gate",
        'counter name "log.deny.x" log prefix "og:deny:x" group 9',
        "drop",
    ]
    assert rules_text(c, "v_default") == [
        "jump log_gate", 'counter name "log.default" log prefix "og:default" group 9', "drop"]


def test_log_gate_limits_per_flow_and_falls_back_to_one_limit() -> None:
    c = compiled_of("version: 1\noptions: {log_rate: 3/minute}\n")
    gate = rules_text(c, "log_gate")
    sets = {n: s for n, s in c.sets.items() if n.startswith("fl_")}
    seen = next(n for n in sets if n.startswith("fl_f4s_"))
    lim = next(n for n in sets if n.startswith("fl_f4l_"))
    key = "ip daddr . th dport . meta skuid"
    assert gate[0] == f"meta mark {0x6F670001} drop"  # outguard verify's probes: never logged
    gate = gate[1:]
    assert gate[:3] == [
        f"meta l4proto {{ tcp, udp }} update @{seen} {{ {key} }}",
        f"meta l4proto {{ tcp, udp }} {key} @{seen} update @{lim} {{ {key} limit rate over"
        " 3/minute burst 5 packets } drop",
        f"meta l4proto {{ tcp, udp }} {key} @{seen} return"]
    # no lookup into a set whose elements hold a limit: a lookup runs the limit too
    assert not [r for r in gate if f"@{lim} " in r.replace("update @", "")]
    assert gate[-1] == "limit rate over 3/minute burst 5 packets drop"
    assert len(gate) == 19
    # bounded, expiring, and named after their declaration (a changed rate makes new ones)
    assert sorted((s.key_type, s.capacity, s.element_timeout) for s in sets.values()) == sorted(
        2 * [(("ipv4_addr", "inet_service", "uid"), 8192, 160),
             (("ipv6_addr", "inet_service", "uid"), 8192, 160),
             (("ipv4_addr", "inet_service"), 4096, 160), (("ipv6_addr", "inet_service"), 4096, 160),
             (("ipv4_addr", "inet_proto"), 4096, 160), (("ipv6_addr", "inet_proto"), 4096, 160)])
    other = compiled_of("version: 1\noptions: {log_rate: 10/second}\n")
    assert not set(sets) & set(other.sets)
    assert {s.element_timeout for s in other.sets.values()} == {10}


def test_reject_holds_the_first_syn_of_a_logged_connection() -> None:
    c = compiled_of("version: 1\noptions: {default_action: reject}\n")
    rs4 = next(n for n in c.sets if n.startswith("fl_rs4_"))
    four = "ip saddr . th sport . ip daddr . th dport"
    default = rules_text(c, "v_default")
    # the retransmit of a held SYN: reset before the gate, not logged a second time
    assert default[0] == f"meta l4proto tcp {four} @{rs4} goto v_reject"
    assert default[2:] == ["jump log_gate",
                           'counter name "log.default" log prefix "og:default reject" group 0',
                           "goto v_reject_first"]
    first = rules_text(c, "v_reject_first")
    assert first[0].startswith(f"meta l4proto tcp add @{rs4} {{ {four} }} drop")
    assert first[-1] == "goto v_reject"
    # what the gate does not log is rejected at once
    assert rules_text(c, "log_gate")[-1].endswith(" goto v_reject")
    assert rules_text(c, "v_reject") == ["meta l4proto tcp reject with tcp reset",
                                         "reject with icmpx admin-prohibited"]


def test_burst_is_at_least_the_rate() -> None:
    c = compiled_of("version: 1\noptions: {log_rate: 1000/second}\n")
    assert rules_text(c, "log_gate")[-1].startswith("limit rate over 1000/second burst 1000")


def test_one_verdict_chain_per_deny_rule_shared_by_its_groups() -> None:
    c = compiled_of("version: 1\ndeny:\n"
                    "  - {name: x, to: [198.51.100.1, '2001:db8:bad::1', 198.51.100.0/30]}\n")
    assert [n for n in c.chains if n.startswith("v_deny_")] == ["v_deny_x"]


def test_allow_rules_accept_with_their_counter_and_do_not_log() -> None:
    c = compiled_of("version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443],"
                    " proto: tcp}\n")
    (group,) = [n for n in c.chains if n.startswith("g_a_")]
    assert rules_text(c, group) == ['tcp dport 443 counter name "allow.web" accept']


def test_lists_are_one_set_per_family_and_kind_shared_by_rules() -> None:
    c = compiled_of("version: 1\ndeny:\n  - {name: d, to: ['@l'], ports: [25]}\n"
                    "allow:\n  - {name: a, to: ['@l'], ports: [80], proto: tcp}\n"
                    "lists:\n  l: [203.0.113.1, 203.0.113.8/29, '2001:db8::/48']\n")
    names = sorted(n for n in c.sets if not n.startswith("fl_"))  # not the log gate's
    assert [n.rsplit("_", 1)[1] for n in names] == ["4a", "4n", "6n"]
    assert all(n.startswith("l_l_") for n in names)
    assert c.sets[names[1]].interval and not c.sets[names[0]].interval
    assert not any(s.verdict_map for s in c.sets.values())


def test_list_set_names_follow_the_content() -> None:
    one = compiled_of("version: 1\nallow:\n  - {name: a, to: ['@l']}\nlists:\n  l: [203.0.113.1]\n")
    two = compiled_of("version: 1\nallow:\n  - {name: a, to: ['@l']}\nlists:\n  l: [203.0.113.2]\n")
    lists = {n for n in one.sets if n.startswith("l_")}
    assert lists and lists.isdisjoint(two.sets)
    again = compiled_of("version: 1\nallow:\n  - {name: b, to: ['@l'], ports: [1]}\n"
                        "lists:\n  l: [203.0.113.1]\n")
    assert set(one.sets) == set(again.sets)


def test_interval_map_merges_prefixes_of_one_rule() -> None:
    c = compiled_of("version: 1\nallow:\n  - {name: a, to: [203.0.113.0/26, 203.0.113.64/26]}\n")
    (name,) = [n for n in c.sets if n.startswith("m_a_4n_")]
    elements = c.sets[name].elements()
    assert [e[0] for e in elements] == [{"prefix": {"addr": "203.0.113.0", "len": 25}}]


def test_a_single_inside_a_prefix_goes_to_the_group_of_both() -> None:
    c = compiled_of("version: 1\nallow:\n"
                    "  - {name: net, to: [203.0.113.0/24], ports: [443], proto: tcp}\n"
                    "  - {name: host, to: [203.0.113.7]}\n")
    (singles,) = [n for n in c.sets if n.startswith("m_a_4a_")]
    ((key, verdict),) = c.sets[singles].elements()
    assert key == "203.0.113.7"
    assert rules_text(c, verdict["goto"]["target"]) == [
        'tcp dport 443 counter name "allow.net" accept', 'counter name "allow.host" accept']


def test_needs_text_only_with_cgroups() -> None:
    assert not compiled_of("version: 1\nallow:\n  - {name: a, for: {user: 0}}\n").needs_text
    assert compiled_of("version: 1\nallow:\n  - {name: a, for: {unit: x.service}}\n").needs_text
    assert compiled_of("version: 1\nallow:\n  - {name: a, for: {cgroup: /a/b}}\n").needs_text


def test_counters_are_default_then_every_live_rule_deny_first() -> None:
    c = compiled_of("version: 1\nallow:\n  - {name: b, to: [203.0.113.1]}\n"
                    "deny:\n  - {name: a, to: [198.51.100.1]}\n"
                    "  - {name: old, to: [198.51.100.2], expires: 2001-01-01T00:00:00Z}\n")
    assert c.counters == ["default", "deny.a", "allow.b", "log.default", "log.deny.a"]


def test_empty_policy_has_only_the_default() -> None:
    c = compiled_of("version: 1\n")
    assert set(c.chains) == {"v_default", "log_gate", "output"}
    assert all(s.element_timeout for s in c.sets.values())  # only the log gate's
    assert rules_text(c, "output")[-1] == 'counter name "default" goto v_default'


# --- limits of nft 1.0.6 ------------------------------------------------------------------------

def test_rule_comments_fit_nft_byte_limit() -> None:
    comment = "é" * 150  # valid: at most 200 characters, no control characters, no '"'
    c = compiled_of(f"version: 1\nallow:\n  - name: a\n    to: [203.0.113.1]\n"
                    f"    comment: {comment}\n")
    rules = [cmd["add"]["rule"] for cmd in nft_tx.full(c) if "rule" in cmd.get("add", {})]
    commented = [r["comment"] for r in rules if r.get("comment", "").startswith("é")]
    assert commented
    assert all(len(text.encode()) <= 128 for text in commented)


def test_ascii_comments_are_cut_to_fit() -> None:
    c = compiled_of("version: 1\nallow:\n  - name: a\n    to: [203.0.113.1]\n"
                    f"    comment: {'x' * 200}\n")
    rules = [cmd["add"]["rule"] for cmd in nft_tx.full(c) if "rule" in cmd.get("add", {})]
    assert [r["comment"] for r in rules if r.get("comment", "").startswith("x")] == ["x" * 120]


def test_far_expiry_fits_nft_time() -> None:
    text = ("version: 1\nallow:\n  - {name: a, to: [203.0.113.1],"
            " expires: '2300-01-01T00:00:00Z'}\n")
    try:
        policy = load_text(text)
    except PolicyError:
        return  # refusing it is fine too
    compiled = compile_ruleset(lowered(policy))
    values = [e["match"]["right"] for chain in compiled.chains.values() for r in chain.rules
              for e in r.expr if "match" in e and e["match"]["left"] == {"meta": {"key": "time"}}]
    assert values
    assert all(v < 2**63 for v in values)
