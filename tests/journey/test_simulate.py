"""`simulate`: each flow through the same decide(), names included; what counts as a flow that
would newly be blocked."""

from __future__ import annotations

from pathlib import Path

from outguard.journey.simulate import LearnedNames, Replayer, recorded_allowed, simulate
from outguard.pipeline import load_policy, lower_policy
from outguard.ruleset.ir import Ruleset

from .flows import flow

DNS = "dns: {upstreams: [192.0.2.53]}\n"


def _ruleset(tmp: Path, text: str, flows: list) -> Ruleset:  # type: ignore[type-arg]
    path = tmp / "p.yaml"
    path.write_text("version: 1\nmode: enforce\n" + text)
    return lower_policy(load_policy(path), resolver=LearnedNames(flows).resolver)


def test_names_decide_name_rules(tmp_path: Path) -> None:
    flows = [flow("203.0.113.10", names=("api.example.com",)),
             flow("203.0.113.11", names=("x.cdn.example.org",)),
             flow("203.0.113.12", names=("other.example",))]
    rs = _ruleset(tmp_path, DNS + "allow:\n - {name: api, to: [api.example.com], ports: [443]}\n"
                  " - {name: cdn, to: ['*.cdn.example.org']}\n", flows)
    got = {}
    simulate(rs, flows, each=lambda o: got.update({o.flow.dst: (o.decision.rule, o.name)}))
    assert got == {"203.0.113.10": ("allow:api", "api.example.com"),
                   "203.0.113.11": ("allow:cdn", "x.cdn.example.org"),
                   "203.0.113.12": ("default", None)}


def test_a_deny_by_name_beats_an_allow_by_address(tmp_path: Path) -> None:
    flows = [flow("203.0.113.10", names=("bad.example",))]
    rs = _ruleset(tmp_path, DNS + "allow:\n - {name: net, to: [203.0.113.0/24]}\n"
                  "deny:\n - {name: bad, to: [bad.example]}\n", flows)
    summary = simulate(rs, flows)
    assert summary.blocked == 1 and summary.by_process["/usr/bin/curl"].destinations == \
        {"bad.example tcp/443": {"deny:bad"}}


def test_without_dns_names_resolve_to_their_learned_addresses(tmp_path: Path) -> None:
    flows = [flow("203.0.113.10", names=("api.example.com",)), flow("203.0.113.10", 8443)]
    rs = _ruleset(tmp_path, "allow:\n - {name: api, to: [api.example.com]}\n", flows)
    assert simulate(rs, flows).blocked == 0  # no DNS asked: the learned answer


def test_a_name_seen_for_the_address_by_another_flow_counts(tmp_path: Path) -> None:
    flows = [flow("203.0.113.10", names=("api.example.com",)), flow("203.0.113.10", 443)]
    names = LearnedNames(flows)
    rs = _ruleset(tmp_path, DNS + "allow:\n - {name: api, to: [api.example.com]}\n", flows)
    assert simulate(rs, flows, names=names).blocked == 0
    assert simulate(rs, flows).blocked == 1  # only its own names: the bare flow is blocked


def test_regressions_are_flows_that_got_out_and_are_not_classified(tmp_path: Path) -> None:
    flows = [flow("203.0.113.1", decision=""), flow("203.0.113.2", decision="allow:x"),
             flow("203.0.113.3", decision="default"), flow("203.0.113.4", decision="deny:y"),
             flow("203.0.113.5", signature="jndi-callback", severity="critical"),
             flow("203.0.113.6", decision="builtin:dns")]
    rs = _ruleset(tmp_path, "allow: []\n", flows)
    summary = simulate(rs, flows)
    assert (summary.blocked, summary.regressions, summary.classified_blocked) == (6, 3, 1)
    assert [recorded_allowed(f) for f in flows] == [True, True, False, False, True, True]


def test_user_and_unit_conditions(tmp_path: Path) -> None:
    flows = [flow("203.0.113.1", uid=65534, user="nobody"), flow("203.0.113.1", uid=0),
             flow("203.0.113.2", unit="app.service"),
             flow("203.0.113.2", unit="other.service")]
    rs = _ruleset(tmp_path, "allow:\n - {name: a, to: [203.0.113.1], for: {user: nobody}}\n"
                  " - {name: b, to: [203.0.113.2], for: {unit: app.service}}\n", flows)
    blocked = []
    simulate(rs, flows, each=lambda o: blocked.append((o.flow.dst, o.blocked)))
    assert blocked == [("203.0.113.1", False), ("203.0.113.1", True), ("203.0.113.2", False),
                       ("203.0.113.2", True)]


def test_dns_to_an_upstream_is_the_resolver_s_work(tmp_path: Path) -> None:
    flows = [flow("192.0.2.53", 53, "udp"), flow("192.0.2.99", 53, "udp")]
    rs = _ruleset(tmp_path, DNS + "allow: []\n", flows)
    rules = [Replayer(rs).replay(f).decision.rule for f in flows]
    assert rules == ["builtin:dns", "default"]


def test_audit_mode_blocks_nothing(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nmode: audit\nallow: []\n")
    rs = lower_policy(load_policy(path))
    summary = simulate(rs, [flow("203.0.113.1")])
    assert summary.blocked == 0 and summary.regressions == 0
