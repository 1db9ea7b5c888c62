"""lower: policy → IR with a fake resolver and a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from outguard.nftables.nft import compile_ruleset
from outguard.policy.load import load_policy, load_text
from outguard.policy.loaded import Policy
from outguard.ruleset.ir import Elements, Ruleset
from outguard.ruleset.lower import lower
from tests.nftables.helpers import FIXED_NOW, GOLDEN, fake_resolver, lowered


def test_options_reach_the_ruleset() -> None:
    policy = load_text("version: 1\nmode: audit\noptions: {default_action: reject,"
                       " nflog_group: 5, log_rate: 7/hour, forward: true}\n")
    rs = lowered(policy)
    assert (rs.mode, rs.default_action, rs.nflog_group, rs.log_rate, rs.forward) == \
        ("audit", "reject", 5, (7, "hour"), True)
    assert rs.policy_digest == policy.digest
    assert rs.rules() == ()


def test_host_names_are_resolved_through_the_given_resolver() -> None:
    rs = lowered(load_text("version: 1\nallow:\n  - {name: m, to: [Mirror.Example.Test.,"
                           " 203.0.113.5], ports: [80], proto: tcp}\n"))
    (rule,) = rs.allow
    assert rule.names == ("mirror.example.test",)
    assert rs.resolved == {"mirror.example.test": ("203.0.113.20", "2001:db8:1::20")}
    assert rs.sources[rule.inline or ""].elements == Elements(
        v4=("203.0.113.20", "203.0.113.5"), v6=("2001:db8:1::20",))


def test_resolver_answers_are_parsed_and_deduplicated() -> None:
    answers = {"h.example.test": ["203.0.113.9", "not an address", "203.0.113.9", "2001:DB8::9"]}
    rs = lower(load_text("version: 1\nallow:\n  - {name: h, to: [h.example.test]}\n"),
               resolver=lambda n: answers[n], now=FIXED_NOW)
    assert rs.sources["rule:allow:h"].elements == Elements(v4=("203.0.113.9",),
                                                           v6=("2001:db8::9",))


def _lowered_with_warnings(policy: Policy, **kw: Any) -> tuple[Ruleset, list[str]]:
    warnings: list[str] = []
    return lower(policy, resolver=kw.pop("resolver", fake_resolver), now=FIXED_NOW,
                 warnings=warnings, **kw), warnings


def test_a_host_name_that_does_not_resolve_matches_nothing_with_a_warning_where_it_is() -> None:
    """At boot there may be no DNS yet: the apply goes on (it failed, and the host booted with
    no table), the name matches nothing, the rule's other destinations still count."""
    policy = load_text("version: 1\nallow:\n  - name: h\n    to:\n      - nowhere.example.test\n"
                       "      - 203.0.113.1\n", "p.yaml")
    rs, warnings = _lowered_with_warnings(policy)
    assert warnings == [
        "p.yaml:5:9: allow[0].to[0]: host name 'nowhere.example.test' does not resolve now:"
        " nothing is allowed or denied for it (it matches nothing) until it resolves at a"
        " later apply"]
    assert rs.sources["rule:allow:h"].elements == Elements(v4=("203.0.113.1",))


def test_a_rule_with_only_names_that_do_not_resolve_matches_nothing() -> None:
    from outguard.ruleset.decide import Flow, decide

    rs, warnings = _lowered_with_warnings(load_text(
        "version: 1\nallow:\n  - {name: h, to: [nowhere.example.test]}\n"))
    assert len(warnings) == 1 and rs.allow[0].inline is None and not rs.allow[0].any_destination
    assert decide(rs, Flow(dst="203.0.113.1", port=443), now=FIXED_NOW).rule == "default"
    assert not any(r.expr for c in compile_ruleset(rs).chains.values() for r in c.rules
                   if any("allow.h" in str(e) for e in r.expr))


def test_an_unresolvable_name_in_an_inline_list_is_reported_in_the_list() -> None:
    policy = load_text("version: 1\nallow:\n  - {name: a, to: ['@l']}\n"
                       "lists:\n  l:\n    - 203.0.113.1\n    - nowhere.example.test\n",
                       "p.yaml")
    _rs, warnings = _lowered_with_warnings(policy)
    assert [w.split(": ")[0:2] for w in warnings] == [["p.yaml:7:7", "lists.l[1]"]]


def test_name_resolution_is_bounded_in_time_and_asks_every_name_at_once() -> None:
    """A resolver that hangs (no DNS at boot: ~20 s of timeouts and retries) costs the apply
    the bound, not a multiple of it; names that answered in time count."""
    import threading
    import time

    release = threading.Event()

    def slow(name: str) -> list[str]:
        if name.startswith("hangs"):
            release.wait(30)
            return ["203.0.113.9"]
        return ["203.0.113.8"]

    names = "".join(f"      - hangs{i}.example.test\n" for i in range(5))
    policy = load_text("version: 1\nallow:\n  - name: h\n    to:\n" + names +
                       "      - quick.example.test\n")
    t0 = time.monotonic()
    try:
        rs, warnings = _lowered_with_warnings(policy, resolver=slow, resolve_timeout=1.0)
    finally:
        release.set()
    assert time.monotonic() - t0 < 3.0
    assert len(warnings) == 5
    assert rs.sources["rule:allow:h"].elements == Elements(v4=("203.0.113.8",))


def test_names_in_list_files_are_left_to_the_dns_resolver(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text("nowhere.example.test\n203.0.113.1\n")
    (tmp_path / "p.yaml").write_text("version: 1\ndeny:\n  - {name: f, to: ['@feed']}\n"
                                     "lists:\n  feed: {file: feed.txt}\n")
    asked: list[str] = []

    def resolver(name: str) -> list[str]:
        asked.append(name)
        return []

    rs = lower(load_policy(tmp_path / "p.yaml"), resolver=resolver, now=FIXED_NOW)
    assert asked == []
    assert rs.sources["list:feed"].elements == Elements(v4=("203.0.113.1",))


def test_names_in_inline_lists_are_resolved() -> None:
    rs = lowered(load_text("version: 1\nallow:\n  - {name: a, to: ['@l']}\n"
                           "lists:\n  l: [mirror.example.test]\n"))
    assert rs.sources["list:l"].elements.v4 == ("203.0.113.20",)


def test_expired_rules_are_left_out_at_the_given_time() -> None:
    policy = load_text("version: 1\nallow:\n"
                       "  - {name: past, to: [203.0.113.1], expires: 2026-06-01T11:59:59Z}\n"
                       "  - {name: now, to: [203.0.113.2], expires: 2026-06-01T12:00:00Z}\n"
                       "  - {name: soon, to: [203.0.113.3], expires: 2026-06-01T12:00:01Z}\n"
                       "  - {name: always, to: [203.0.113.4]}\n")
    assert [r.name for r in lowered(policy).allow] == ["soon", "always"]
    assert [r.name for r in lowered(policy, FIXED_NOW - timedelta(hours=1)).allow] == \
        ["past", "now", "soon", "always"]
    (soon, _always) = lowered(policy).allow
    assert soon.match.until == datetime(2026, 6, 1, 12, 0, 1, tzinfo=UTC)
    assert soon.index == 2  # the index as written, not among live rules


def test_expires_with_an_offset_is_converted_to_utc() -> None:
    rs = lowered(load_text("version: 1\nallow:\n  - {name: a, to: [203.0.113.1],"
                           " expires: '2026-06-02T00:00:00+02:00'}\n"))
    assert rs.allow[0].match.until == datetime(2026, 6, 1, 22, 0, tzinfo=UTC)


def test_an_expiry_with_a_fraction_of_a_second_is_taken_to_the_whole_second() -> None:
    """The kernel's `meta time` check takes whole seconds: `decide` switches at the same
    moment, and a rule whose second has begun is expired at apply time too."""
    from outguard.ruleset.decide import Flow, decide

    text = ("version: 1\nallow:\n  - name: t\n    to: [203.0.113.10]\n"
            "    expires: 2030-01-01T00:00:00.750Z\n")
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    rs = lowered(load_text(text), moment - timedelta(days=1))
    assert rs.allow[0].match.until == moment
    flow = Flow(dst="203.0.113.10", port=443)
    assert decide(rs, flow, now=moment - timedelta(microseconds=1)).rule == "allow:t"
    assert decide(rs, flow, now=moment).rule == "default"
    assert lowered(load_text(text), moment + timedelta(milliseconds=500)).allow == ()

def test_a_list_only_used_by_expired_rules_is_no_source() -> None:
    rs = lowered(load_text("version: 1\nallow:\n"
                           "  - {name: a, to: ['@l'], expires: 2001-01-01T00:00:00Z}\n"
                           "lists:\n  l: [203.0.113.1]\n"))
    assert rs.sources == {}


def test_owners_become_ids_and_cgroups() -> None:
    rs = lowered(load_policy(GOLDEN / "owners.yaml"))
    matches = {r.name: r.match for r in rs.rules()}
    assert matches["backup-as-nobody"].uid == 65534
    assert matches["root-ssh"].uid == 0
    assert (matches["group-app"].uid, matches["group-app"].gid) == (None, 65534)
    assert (matches["root-in-group"].uid, matches["root-in-group"].gid) == (0, 0)
    rs = lowered(load_policy(GOLDEN / "unit.yaml"))
    matches = {r.name: r.match for r in rs.rules()}
    assert (matches["nginx-upstream"].cgroup, matches["nginx-upstream"].cgroup_level) == \
        ("system.slice/nginx.service", 2)
    assert (matches["batch-cgroup"].cgroup, matches["batch-cgroup"].cgroup_level) == \
        ("system.slice/batch.slice/job.service", 3)


def test_sources_inline_lists_and_any_destination() -> None:
    rs = lowered(load_policy(GOLDEN / "lists.yaml"))
    rules = {r.name: r for r in rs.rules()}
    assert rules["mirrors"].inline == "rule:allow:mirrors"
    assert rules["mirrors"].lists == ("list:mirrors",)
    assert rules["partners"].inline is None
    assert rules["feed"].lists == ("list:blocklist",)
    assert set(rs.sources) == {"list:blocklist", "list:mirrors", "rule:allow:mirrors"}
    assert rs.sources["list:mirrors"].is_list
    assert rs.sources["list:blocklist"].kinds == frozenset({"4a", "4n", "6a", "6n"})
    rs = lowered(load_policy(GOLDEN / "any-destination.yaml"))
    assert [r.any_destination for r in rs.rules()] == [True, True, True, True, True, False]


def test_wildcards_are_kept_for_the_dns_resolver() -> None:
    rs = lowered(load_policy(GOLDEN / "hostnames.yaml"))
    cdn = next(r for r in rs.allow if r.name == "cdn")
    assert cdn.wildcards == ("*.cdn.example.test",)
    assert (cdn.inline, cdn.lists, cdn.any_destination) == (None, (), False)


def test_fake_resolver_is_what_the_goldens_use() -> None:
    assert fake_resolver("mirror.example.test") == ["203.0.113.20", "2001:db8:1::20"]
    assert fake_resolver("unknown.example.test") == []
