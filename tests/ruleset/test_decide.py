"""decide(): the shared decision table (tests/cases.py) and what only decide can be asked."""

from __future__ import annotations

from datetime import timedelta

import pytest

from outguard.policy.load import load_text
from outguard.ruleset.decide import Decision, Flow, decide, rule_matches
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.lower import lower
from outguard.ruleset.names import NamePolicy
from tests.cases import (
    CASE_NOW,
    CASE_POLICY,
    CASES,
    LOCAL_ADDRESSES,
    LOCAL_CASES,
    NAME_CASE_POLICY,
    NAME_CASES,
    Case,
    DefaultAction,
    LocalCase,
    Mode,
    NameCase,
    expected_verdict,
    variant_policy,
)


def _no_dns(name: str) -> list[str]:
    raise AssertionError(f"CASE_POLICY has no host names to resolve, asked for {name}")


def _ruleset(text: str = CASE_POLICY) -> Ruleset:
    return lower(load_text(text), resolver=_no_dns, now=CASE_NOW)


RULESETS: dict[tuple[Mode, DefaultAction], Ruleset] = {
    (mode, action): _ruleset(variant_policy(mode, action))
    for mode in ("enforce", "audit") for action in ("drop", "reject")
}


def _flow(case: Case) -> Flow:
    return Flow(dst=case.dst, port=case.port, proto=case.proto, uid=case.uid, gid=case.gid)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_table(case: Case) -> None:
    d = decide(RULESETS[("enforce", "drop")], _flow(case), now=CASE_NOW)
    assert (d.action, d.verdict, d.rule) == (case.action, case.verdict, case.rule), case.note
    if case.rule != "default":
        assert repr(case.rule.split(":", 1)[1]) in d.reason
    assert d.logged == (case.action == "deny")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize(("mode", "action"), [("enforce", "reject"), ("audit", "drop"),
                                              ("audit", "reject")])
def test_case_table_variants(case: Case, mode: Mode, action: DefaultAction) -> None:
    d = decide(RULESETS[(mode, action)], _flow(case), now=CASE_NOW)
    assert (d.action, d.rule) == (case.action, case.rule)
    assert d.verdict == expected_verdict(case, mode, action)
    if mode == "audit" and case.action == "deny":
        assert d.reason.endswith("(audit mode: logged, not blocked)")


def test_case_table_size_and_spread() -> None:
    assert len(CASES) >= 60
    rules = {c.rule for c in CASES}
    ruleset = RULESETS[("enforce", "drop")]
    live = {r.counter for r in ruleset.rules()} - {"allow:trusted-in-attacker-net", "allow:ping"}
    assert live <= rules, f"rules no case reaches: {live - rules}"
    assert {":" in c.dst for c in CASES} == {True, False}  # both families
    assert len({c.id for c in CASES}) == len(CASES)


# --- what only decide is asked (not in the kernel table) ---------------------------------------

RS = RULESETS[("enforce", "drop")]


@pytest.mark.parametrize(("flow", "rule", "verdict"), [
    # loopback and established traffic come first, whatever the rules say
    (Flow(dst="127.0.0.1", port=25, uid=65534), "builtin:loopback", "accept"),
    (Flow(dst="127.255.0.1", port=389, proto="udp"), "builtin:loopback", "accept"),
    (Flow(dst="::1", port=25), "builtin:loopback", "accept"),
    (Flow(dst="198.51.100.1", port=80, established=True), "builtin:established", "accept"),
    (Flow(dst="2001:db8:bad::1", port=80, established=True), "builtin:established", "accept"),
    # icmp
    (Flow(dst="203.0.113.222", proto="icmp"), "allow:ping", "accept"),
    (Flow(dst="203.0.113.40", proto="icmp"), "allow:host-any", "accept"),
    (Flow(dst="198.51.100.1", proto="icmp"), "deny:attacker-net", "drop"),
    (Flow(dst="2001:db8:1::40", proto="icmp"), "allow:host-any", "accept"),
    (Flow(dst="2001:db8:4::1", proto="icmp"), "default", "drop"),
    (Flow(dst="203.0.113.10", proto="icmp", port=443), "allow:ping", "accept"),
    # a protocol that is neither tcp, udp nor icmp: only rules for any protocol and no port
    (Flow(dst="203.0.113.40", proto="other"), "allow:host-any", "accept"),
    (Flow(dst="203.0.113.10", proto="other"), "default", "drop"),
    (Flow(dst="203.0.113.66", proto="other"), "deny:temp-block", "drop"),
    # no uid known: rules for a user never match
    (Flow(dst="203.0.113.12", port=80), "default", "drop"),
    (Flow(dst="203.0.113.40", port=389), "allow:host-any", "accept"),
    # gid without the uid
    (Flow(dst="203.0.113.150", port=7000, uid=1000, gid=65534), "allow:nogroup-only", "accept"),
])
def test_decide_only_cases(flow: Flow, rule: str, verdict: str) -> None:
    d = decide(RS, flow, now=CASE_NOW)
    assert (d.rule, d.verdict) == (rule, verdict)


def test_reasons_for_people() -> None:
    d = decide(RS, Flow(dst="198.51.100.7", port=443, uid=0), now=CASE_NOW)
    assert d == Decision("deny", "drop", "deny:attacker-net",
                         "deny rule 'attacker-net' matches: 198.51.100.7 is in its destinations;"
                         " deny beats allow")
    d = decide(RS, Flow(dst="203.0.113.251", port=443, uid=0), now=CASE_NOW)
    assert d.reason == ("allow rule 'mirrors' matches: 203.0.113.251 is in list @mirrors;"
                        " port 443/tcp is one of its ports")
    d = decide(RS, Flow(dst="203.0.113.12", port=80, uid=65534), now=CASE_NOW)
    assert d.reason.endswith("the socket belongs to uid 65534")
    d = decide(RS, Flow(dst="203.0.113.222", port=33434, proto="udp"), now=CASE_NOW)
    assert "it applies to every destination" in d.reason
    assert decide(RS, Flow(dst="2001:db8:4::1", port=1), now=CASE_NOW).reason == \
        "no allow rule matches, so the default applies"


def test_an_expiry_between_apply_and_decision() -> None:
    """Lowered while temp-allow lives; asked after it expired: the kernel's `meta time` drops it,
    and so does decide."""
    rs = lower(load_text(CASE_POLICY), resolver=_no_dns, now=CASE_NOW)
    flow = Flow(dst="203.0.113.99", port=8443, uid=0, gid=0)
    assert decide(rs, flow, now=CASE_NOW).rule == "allow:temp-allow"
    (temp,) = [r for r in rs.allow if r.name == "temp-allow"]
    assert temp.match.until is not None
    assert decide(rs, flow, now=temp.match.until - timedelta(seconds=1)).rule == "allow:temp-allow"
    assert decide(rs, flow, now=temp.match.until).rule == "default"
    blocked = Flow(dst="203.0.113.66", port=443, uid=0, gid=0)
    assert decide(rs, blocked, now=temp.match.until + timedelta(days=1)).rule == "allow:net-https"


def test_expired_rules_are_gone_at_lowering_time() -> None:
    assert "expired-allow" not in [r.name for r in RS.allow]
    assert "old-block" not in [r.name for r in RS.deny]
    early = lower(load_text(CASE_POLICY), resolver=_no_dns,
                  now=CASE_NOW.replace(year=2000))
    flow = Flow(dst="203.0.113.98", port=8443, uid=0)
    assert decide(early, flow, now=CASE_NOW.replace(year=2000)).rule == "allow:expired-allow"
    assert decide(early, Flow(dst="203.0.113.40", port=1), now=CASE_NOW.replace(year=2000)
                  ).rule == "deny:old-block"


HOSTS = """\
version: 1
allow:
  - {name: mirror, to: [mirror.example.test], ports: [80], proto: tcp}
  - {name: cdn, to: ["*.cdn.example.test"], ports: [443], proto: tcp}
  - {name: unit, to: [203.0.113.10], for: {unit: nginx.service}}
deny:
  - {name: evil, to: [evil.example.test]}
"""


def _hosts() -> Ruleset:
    answers = {"mirror.example.test": ["203.0.113.20"], "evil.example.test": ["198.51.100.66"]}
    return lower(load_text(HOSTS), resolver=lambda n: answers[n], now=CASE_NOW)


@pytest.mark.parametrize(("flow", "rule"), [
    (Flow(dst="203.0.113.20", port=80), "allow:mirror"),
    (Flow(name="mirror.example.test", port=80), "allow:mirror"),
    (Flow(name="Mirror.Example.Test.", port=80), "allow:mirror"),
    (Flow(name="mirror.example.test", port=81), "default"),
    (Flow(name="a.cdn.example.test", port=443), "allow:cdn"),
    (Flow(name="x.y.cdn.example.test", port=443), "allow:cdn"),
    (Flow(name="cdn.example.test", port=443), "default"),        # the wildcard needs a label
    (Flow(name="evilcdn.example.test", port=443), "default"),    # not a sub-domain
    (Flow(dst="203.0.113.99", name="a.cdn.example.test", port=443), "default"),  # address rules
    (Flow(name="evil.example.test", port=80), "deny:evil"),
    (Flow(dst="198.51.100.66", port=80), "deny:evil"),
    (Flow(dst="203.0.113.10", port=1, cgroup="system.slice/nginx.service"), "allow:unit"),
    (Flow(dst="203.0.113.10", port=1, cgroup="/system.slice/nginx.service/worker"), "allow:unit"),
    (Flow(dst="203.0.113.10", port=1, cgroup="system.slice/nginx.service.d"), "default"),
    (Flow(dst="203.0.113.10", port=1, cgroup="system.slice"), "default"),
    (Flow(dst="203.0.113.10", port=1), "default"),
])
def test_names_and_cgroups(flow: Flow, rule: str) -> None:
    assert decide(_hosts(), flow, now=CASE_NOW).rule == rule


def test_resolved_address_reason_names_the_host() -> None:
    d = decide(_hosts(), Flow(dst="203.0.113.20", port=80), now=CASE_NOW)
    assert "(resolved from mirror.example.test)" in d.reason


def test_rule_matches_gives_the_reason_or_none() -> None:
    (web,) = [r for r in RS.allow if r.name == "web-api"]
    assert rule_matches(RS, web, Flow(dst="203.0.113.10", port=443), CASE_NOW) == \
        "203.0.113.10 is in its destinations; port 443/tcp is one of its ports"
    assert rule_matches(RS, web, Flow(dst="203.0.113.10", port=22), CASE_NOW) is None
    assert rule_matches(RS, web, Flow(dst="not an address", port=443), CASE_NOW) is None


@pytest.mark.parametrize(("mapped", "plain"), [
    ("::ffff:203.0.113.10", "203.0.113.10"), ("::ffff:198.51.100.7", "198.51.100.7"),
    ("::FFFF:cb00:710a", "203.0.113.10"), ("::ffff:127.0.0.1", "127.0.0.1")])
def test_an_ipv4_mapped_destination_is_decided_as_the_ipv4_packet_it_becomes(
        mapped: str, plain: str) -> None:
    ruleset = RULESETS[("enforce", "drop")]
    for port in (443, 8080):
        got = decide(ruleset, Flow(dst=mapped, port=port, proto="tcp", uid=0, gid=0), CASE_NOW)
        want = decide(ruleset, Flow(dst=plain, port=port, proto="tcp", uid=0, gid=0), CASE_NOW)
        assert (got.verdict, got.rule) == (want.verdict, want.rule)


# --- names with `dns:`: decide and the resolver agree (tests/cases.py NAME_CASES) ------------

NAMES_RS = lower(load_text(NAME_CASE_POLICY), resolver=_no_dns, now=CASE_NOW)


@pytest.mark.parametrize("case", NAME_CASES, ids=[c.id for c in NAME_CASES])
def test_name_case_table(case: NameCase) -> None:
    d = decide(NAMES_RS, Flow(name=case.name, port=case.port, proto=case.proto), now=CASE_NOW)
    assert d.rule == case.rule, case.note
    verdict = NamePolicy.of(NAMES_RS).lookup(case.name)
    assert (verdict.action == "resolve") == case.resolves, case.note
    if d.action == "allow":  # the kernel lets a name's addresses out only once it resolved
        assert verdict.action == "resolve"
        assert verdict.rule == d.rule


def test_name_cases_reach_every_rule() -> None:
    assert {c.rule for c in NAME_CASES} == {r.counter for r in NAMES_RS.rules()} | {"default"}


# --- the host's own addresses are loopback (tests/cases.py LOCAL_CASES) ----------------------


@pytest.mark.parametrize("case", LOCAL_CASES, ids=[f"{c.dst}-{c.port}" for c in LOCAL_CASES])
def test_the_hosts_own_addresses_are_loopback_when_decide_knows_them(case: LocalCase) -> None:
    ruleset = RULESETS[("enforce", "drop")]
    flow = Flow(dst=case.dst, port=case.port, proto=case.proto, uid=case.uid, gid=case.uid)
    d = decide(ruleset, flow, CASE_NOW, local=LOCAL_ADDRESSES)
    assert d.rule == case.rule, case.note
    if d.rule == "builtin:loopback":
        assert (d.action, d.verdict) == ("allow", "accept")
    assert decide(ruleset, flow, CASE_NOW).rule == case.rule_without_local, case.note
