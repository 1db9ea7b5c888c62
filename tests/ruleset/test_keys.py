"""ruleset.keys: decision keys, counter names and set names render and parse back, and every
name the compiler makes is one of them."""

from __future__ import annotations

import pytest

from outguard.events import parse_prefix, render_prefix
from outguard.feeds.sync import feed_sets
from outguard.ruleset.keys import DEFAULT, TABLE, RuleKey, SetName
from tests.nftables.helpers import compiled_of


@pytest.mark.parametrize(("text", "counter"), [
    ("deny:web", "deny.web"), ("allow:a.b-c", "allow.a.b-c"), ("default", "default")])
def test_rule_keys_and_their_counters(text: str, counter: str) -> None:
    key = RuleKey.parse(text)
    assert str(key) == text and key.counter == counter
    assert RuleKey.of_counter(counter) == key
    assert key.log_counter == f"log.{counter}"
    assert key.logged == (key.kind != "allow")


@pytest.mark.parametrize("text", ["", "deny", "deny:", "web", "other:x"])
def test_what_is_no_decision_key(text: str) -> None:
    with pytest.raises(ValueError, match="not a decision key"):
        RuleKey.parse(text)


def test_log_counters_count_no_decision() -> None:
    with pytest.raises(ValueError, match="no decision's counter"):
        RuleKey.of_counter("log.deny.web")
    assert str(RuleKey.parse("builtin:loopback")) == "builtin:loopback"
    assert not RuleKey.parse("builtin:dns").logged and DEFAULT.logged


def test_prefixes_carry_the_key_and_the_action() -> None:
    assert render_prefix("deny:x", "drop") == "og:deny:x"
    assert render_prefix("default", "reject") == "og:default reject"
    assert parse_prefix(render_prefix("deny:x", "accept")) == ("deny:x", "logged-only")
    assert parse_prefix(render_prefix("dns:web", "drop")) == ("dns:web", "refused")


POLICY = """version: 1
deny:
  - {name: bad_one, to: ["@bad-list", 198.51.100.0/24], ports: [25, 465]}
allow:
  - {name: web, to: [203.0.113.1, 2001:db8::/48], ports: [443, 8443], for: {unit: w.service}}
lists:
  bad-list: [192.0.2.1, 192.0.2.0/28]
"""


def test_every_set_the_compiler_names_parses_back() -> None:
    compiled = compiled_of(POLICY)
    kinds = set()
    for name in compiled.sets:
        got = SetName.parse(name)
        assert str(got) == name and SetName.kind_of(name) == got.kind
        kinds.add(got.kind)
    assert kinds == {"l", "m", "p", "c", "fl"}
    lists = [SetName.parse(n) for n in compiled.sets if n.startswith("l_")]
    assert {s.set_kind for s in lists} == {"4a", "4n"}
    assert all(s.of_list("list:bad-list") and s.owner == "bad_list" for s in lists)


def test_fqdn_sets_and_names_that_are_not_ours() -> None:
    base = SetName.fqdn_base("allow", "web", ["b.example.test", "a.example.test"])
    assert base == SetName.fqdn_base("allow", "web", ["a.example.test", "b.example.test"])
    six = SetName.fqdn(base, 6)
    assert (six.kind, six.version, str(six)) == ("f", 6, f"{base}_6")
    assert SetName.of("mine") is None and SetName.kind_of("m_made_by_hand") == "m"
    assert SetName.kind_of("other") is None and TABLE == ("inet", "outguard")


def test_a_feeds_sets_are_found_by_their_list() -> None:
    names = [str(SetName.list_set("list:feed:a_b", "0123456789abcdef", 4, False)),
             str(SetName.list_set("list:feed:a", "fedcba9876543210", 6, True)), "l_x", "p_0"]
    assert feed_sets("a", names) == [("fedcba987654", "6n", names[1])]
    assert feed_sets("a_b", names) == [("0123456789ab", "4a", names[0])]
