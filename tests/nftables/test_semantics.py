"""The compiled nftables table means what `decide` says — checked without a kernel.

`tests.nftables.nfteval` walks the compiled chains, maps and sets for one packet the way the kernel
does. For every case of the shared decision table (and its audit / reject variants), and for
random flows against every golden policy, the evaluator's verdict, the named counter it hits and
the NFLOG prefix it writes must match `decide`. The kernel tests check the same table for real.
"""

from __future__ import annotations

import copy
import ipaddress
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outguard.nftables.model import Compiled
from outguard.nftables.nft import compile_ruleset
from outguard.policy.load import load_policy, load_text
from outguard.ruleset.decide import Decision, Flow, FlowProto, decide
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.keys import RuleKey
from tests.cases import (
    CASE_NOW,
    CASE_POLICY,
    CASES,
    Case,
    DefaultAction,
    Mode,
    expected_verdict,
    variant_policy,
)
from tests.nftables.helpers import FIXED_NOW, GOLDEN, lowered
from tests.nftables.nfteval import Evaluator, Outcome, Packet

LAB_POLICY = Path(__file__).resolve().parents[2] / "examples" / "lab-policy.yaml"


def _packet(flow: Flow, now: datetime) -> Packet:
    loopback = flow.dst is not None and ipaddress.ip_address(flow.dst).is_loopback
    return Packet(dst=flow.dst or "", proto=flow.proto, port=flow.port, uid=flow.uid,
                  gid=flow.gid, cgroup=flow.cgroup, oif="lo" if loopback else "eth0",
                  ct_state="established" if flow.established else "new", now=now)


def _expected_trace(d: Decision, rs: Ruleset) -> tuple[list[str], list[str]]:
    """Counters hit and log prefixes written, in order, for a decision: a blocking one is
    counted, counted as logged, and logged with the kernel's action in the prefix."""
    if d.rule.startswith("builtin:"):
        return [], []
    action = {"enforce": "" if rs.default_action == "drop" else " reject", "audit": " audit"}
    if d.rule == "default":
        return ["default", "log.default"], [f"og:default{action[rs.mode]}"]
    section, _name = d.rule.split(":", 1)
    if section == "deny":
        return ([RuleKey.parse(d.rule).counter, f"log.{RuleKey.parse(d.rule).counter}"],
                [f"og:{d.rule}{action[rs.mode]}"])
    return [RuleKey.parse(d.rule).counter], []


def assert_agrees(compiled: Compiled, ruleset: Ruleset, flow: Flow, now: datetime,
                  hook: str = "output") -> tuple[Decision, Outcome]:
    d = decide(ruleset, flow, now=now)
    out = Evaluator(compiled).run(_packet(flow, now), hook)
    counters, logs = _expected_trace(d, ruleset)
    assert (out.verdict, out.counters, out.logs) == (d.verdict, counters, logs), (
        f"kernel table and decide disagree for {flow} at {now}: decide says {d}, "
        f"the table went through {out.chains}")
    return d, out


Tables = dict[tuple[Mode, DefaultAction], tuple[Compiled, Ruleset]]


@pytest.fixture(scope="module")
def case_tables() -> Tables:
    out: Tables = {}
    modes: tuple[Mode, ...] = ("enforce", "audit")
    actions: tuple[DefaultAction, ...] = ("drop", "reject")
    for mode in modes:
        for action in actions:
            ruleset = lowered(load_text(variant_policy(mode, action)), CASE_NOW)
            out[(mode, action)] = (compile_ruleset(ruleset), ruleset)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize(("mode", "action"),
                         [("enforce", "drop"), ("enforce", "reject"), ("audit", "drop")])
def test_case_table_in_the_compiled_table(
        case: Case, mode: Mode, action: DefaultAction,
        case_tables: Tables) -> None:
    compiled, ruleset = case_tables[(mode, action)]
    flow = Flow(dst=case.dst, port=case.port, proto=case.proto, uid=case.uid, gid=case.gid)
    d, out = assert_agrees(compiled, ruleset, flow, CASE_NOW)
    assert (d.rule, d.verdict) == (case.rule, expected_verdict(case, mode, action))
    if out.verdict == "reject":
        assert out.reject_type == ("tcp reset" if case.proto == "tcp" else "icmpx")
        # a logged TCP connect: its first SYN is dropped (the socket waits, the monitor
        # attributes it), the retransmit is reset; anything else is rejected at once
        assert out.held == (case.proto == "tcp")


def test_the_evaluator_notices_a_wrong_table(
        case_tables: Tables) -> None:
    """Guard for the guard: allow evaluated before deny must break some cases."""
    compiled, ruleset = case_tables[("enforce", "drop")]
    broken = copy.copy(compiled)
    broken.chains = dict(compiled.chains)
    output = copy.deepcopy(compiled.chains["output"])
    jumps = [i for i, r in enumerate(output.rules) if "jump" in r.expr[0]]
    a, b = jumps
    output.rules[a], output.rules[b] = output.rules[b], output.rules[a]
    broken.chains["output"] = output
    disagree = 0
    for case in CASES:
        flow = Flow(dst=case.dst, port=case.port, proto=case.proto, uid=case.uid, gid=case.gid)
        try:
            assert_agrees(broken, ruleset, flow, CASE_NOW)
        except AssertionError:
            disagree += 1
    assert disagree >= 3


def test_case_policy_text_is_what_the_kernel_tests_load() -> None:
    assert variant_policy() == CASE_POLICY
    policy = load_text(CASE_POLICY)
    assert policy.doc.options.rate() == (1000, "second")
    addresses = {c.dst for c in CASES}
    assert {"192.0.2.2", "2001:db8::2"}.isdisjoint(addresses), "the tester's own addresses"
    docs = [ipaddress.ip_network(n) for n in
            ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
    for address in addresses:
        ip = ipaddress.ip_address(address)
        assert any(ip in net for net in docs), address
        if ip in ipaddress.ip_network("192.0.2.0/24"):
            assert address == "192.0.2.1", "on-link addresses other than the peer's"
        if ip in ipaddress.ip_network("2001:db8::/64"):
            assert address == "2001:db8::1", "on-link addresses other than the peer's"
    assert {c.proto for c in CASES} == {"tcp", "udp"}
    assert {c.uid for c in CASES} == {0, 65534}
    assert len(CASES) >= 60


# --- random flows against every golden policy -------------------------------------------------

GOLDEN_POLICIES = [*sorted(GOLDEN.glob("*.yaml")), LAB_POLICY]


def _interesting(ruleset: Ruleset) -> tuple[list[str], list[int]]:
    """Addresses at and around every destination of the ruleset, and ports around its ports."""
    addresses: set[str] = {"127.0.0.1", "::1", "192.0.2.77", "2001:db8:ffff::1"}
    for source in ruleset.sources.values():
        el = source.elements
        addresses.update(el.v4 + el.v6)
        for text in el.v4_nets + el.v6_nets:
            net = ipaddress.ip_network(text)
            for ip in (net.network_address, net.broadcast_address,
                       net.network_address + net.num_addresses // 2):
                addresses.add(str(ip))
                for neighbour in (ip - 1, ip + 1):
                    if neighbour.version == ip.version:
                        addresses.add(str(neighbour))
    ports = {1, 80, 443, 65535}
    for rule in ruleset.rules():
        for low, high in rule.match.ports:
            ports.update(p for p in (low - 1, low, high, high + 1) if 1 <= p <= 65535)
    return sorted(addresses), sorted(ports)


def _times(ruleset: Ruleset) -> list[datetime]:
    times = {FIXED_NOW}
    for rule in ruleset.rules():
        if rule.match.until is not None:
            times.update({rule.match.until - timedelta(seconds=1), rule.match.until,
                          rule.match.until + timedelta(days=1)})
    return sorted(times)


@cache
def _golden(path: Path) -> tuple[Compiled, Ruleset, list[str], list[int], list[datetime]]:
    ruleset = lowered(load_policy(path))
    return (compile_ruleset(ruleset), ruleset, *_interesting(ruleset), _times(ruleset))


@pytest.mark.parametrize("path", GOLDEN_POLICIES, ids=[p.stem for p in GOLDEN_POLICIES])
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_flows_agree_with_decide(path: Path, data: st.DataObject) -> None:
    compiled, ruleset, addresses, ports, times = _golden(path)
    proto: FlowProto = data.draw(st.sampled_from(["tcp", "udp", "icmp", "other"]))
    flow = Flow(
        dst=data.draw(st.sampled_from(addresses)),
        port=data.draw(st.sampled_from(ports)) if proto in ("tcp", "udp") else None,
        proto=proto,
        uid=data.draw(st.sampled_from([0, 1000, 65534])),
        gid=data.draw(st.sampled_from([0, 1000, 65534])),
        cgroup=data.draw(st.sampled_from([None, "system.slice/nginx.service",
                                          "/system.slice/batch.slice/job.service/x",
                                          "system.slice/nginx.service.d", "user.slice"])),
        established=data.draw(st.booleans()) and data.draw(st.booleans()),
    )
    now = data.draw(st.sampled_from(times))
    assert_agrees(compiled, ruleset, flow, now)
    if ruleset.forward:
        forward = Flow(**{**flow.__dict__, "uid": None, "gid": None, "cgroup": None})
        if not (forward.dst and ipaddress.ip_address(forward.dst).is_loopback):
            assert_agrees(compiled, ruleset, forward, now, hook="forward")
