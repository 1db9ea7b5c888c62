"""The lockdown's part of the table (`nftables.nft_lockdown`): where it sits, what it keeps, how
it ends, and its record."""

from __future__ import annotations

import pytest

from outguard.nftables.nft import compile_lockdown, compile_ruleset
from outguard.nftables.nft_lockdown import Lockdown
from outguard.policy.load import load_text
from outguard.ruleset.keys import LOCKDOWN, RuleKey
from tests.nftables.helpers import lowered

POLICY = """version: 1
mode: MODE
allow:
  - name: web
    to: [203.0.113.10]
    ports: [443]
  - name: api
    to: [203.0.113.11]
deny:
  - name: bad
    to: [198.51.100.66]
"""


def _compiled(mode: str = "enforce", keep: tuple[str, ...] = ("api",)):  # type: ignore[no-untyped-def]
    rs = lowered(load_text(POLICY.replace("MODE", mode)))
    return compile_ruleset(rs, Lockdown(1_900_000_000, keep))


def test_the_lockdown_comes_right_after_loopback_and_established_and_ends_by_meta_time() -> None:
    out = _compiled()
    rules = out.chains["output"].rules
    entry = next(i for i, r in enumerate(rules) if {"jump": {"target": "lockdown"}} in r.expr)
    assert {"match": {"op": "<", "left": {"meta": {"key": "time"}},
                      "right": 1_900_000_000}} in rules[entry].expr
    assert entry == 3 and all("jump" not in str(r.expr) for r in rules[:entry])
    # deny beats a kept rule; only kept rules are in `keep`; the rest is dropped and logged
    assert [r.expr for r in out.chains["lockdown"].rules] == [
        [{"jump": {"target": "deny"}}], [{"jump": {"target": "keep"}}],
        [{"goto": {"target": "v_lockdown"}}]]
    kept = str([out.chains[n].rules for n in out.chains if n.startswith("g_k_")])
    assert "allow.api" in kept and "allow.web" not in kept
    assert "lockdown" in out.counters and "log.lockdown" in out.counters
    assert "'prefix': 'og:lockdown'" in str(out.chains["v_lockdown"].rules)


def test_audit_mode_still_drops_in_a_lockdown() -> None:
    out = _compiled("audit")
    # an audit deny accepts: the lockdown does not go through the deny rules
    assert [r.expr for r in out.chains["lockdown"].rules] == [
        [{"jump": {"target": "keep"}}], [{"goto": {"target": "v_lockdown"}}]]
    verdict = out.chains["v_lockdown"].rules
    assert all("accept" not in r.expr[-1] for r in verdict)
    assert verdict[-1].expr[-1] == {"drop": None}


def test_without_a_policy_only_the_lockdown_filters() -> None:
    out = compile_lockdown(Lockdown(1_900_000_000), 0, (10, "second"))
    assert "v_default" not in out.chains and "default" not in out.counters
    assert out.chains["output"].rules[-1].expr[-1] == {"jump": {"target": "lockdown"}}


def test_the_lockdown_record_and_its_key() -> None:
    got = Lockdown(1_900_000_000, ("a", "b"))
    assert Lockdown.from_json(got.to_json()) == got
    assert got.until_text == "2030-03-17T17:46:40Z"
    for bad in ({}, {"until": "x"}, {"until": True}, {"until": 1, "keep": "a"}, []):
        with pytest.raises(ValueError):
            Lockdown.from_json(bad)
    assert str(LOCKDOWN) == "lockdown" == LOCKDOWN.counter
    assert RuleKey.of_counter("lockdown") == LOCKDOWN == RuleKey.parse("lockdown")
    assert LOCKDOWN.logged


def test_the_monitor_reads_the_lockdown_back_from_its_prefix() -> None:
    from outguard.events import parse_prefix

    assert parse_prefix("og:lockdown") == ("lockdown", "dropped")


def test_outguards_resolver_still_reaches_its_upstreams_in_a_lockdown() -> None:
    import dataclasses

    from outguard.policy.model import DnsConfig
    from outguard.ruleset.ir import DnsSettings

    rs = lowered(load_text(POLICY.replace("MODE", "enforce")))
    dns = DnsSettings.of(DnsConfig(upstreams=["192.0.2.53"]), 4242, "/etc/outguard")
    out = compile_ruleset(dataclasses.replace(rs, dns=dns), Lockdown(1_900_000_000))
    first = str(out.chains["lockdown"].rules[0].expr)
    assert "'right': 4242" in first and "192.0.2.53" in first and "accept" in first
    assert out.chains["lockdown"].rules[-1].expr == [{"goto": {"target": "v_lockdown"}}]
