"""`decide()` and the kernel agree, case by case (DESIGN: "tests check that the kernel agrees").

The shared decision table (`tests/cases.py`: `CASE_POLICY` and `CASES`) is applied in the test
topology's server namespace; every case is sent as a real TCP connect or UDP datagram, as root
(in this process) or as nobody (a child process running as uid/gid 65534). For each case the
kernel's answer is

- whether the packet passed (peer answered) or was dropped (see tests/kernel/topology.py), and
- which named counter of `inet outguard` moved (`allow.<rule>`, `deny.<rule>`, `default`),

and both must equal what `decide(ruleset, flow)` says: its verdict and its rule.

Attribution: cases run in batches in which no two cases expect the same counter, so each moved
counter belongs to exactly one case; every batch's counter deltas must be exactly one packet on
each expected counter and nothing anywhere else (a dropped TCP connect sends one SYN within the
0.6 s probe timeout; the first retransmission comes after 1 s).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outguard.policy.load import load_text
from outguard.ruleset.decide import Decision, Flow, decide
from outguard.ruleset.keys import RuleKey
from outguard.ruleset.lower import lower
from tests.cases import CASES, Case, variant_policy
from tests.kernel.topology import DROPPED, PASSED, Probe, Topology, deltas

pytestmark = pytest.mark.kernel

VARIANTS = [("enforce", "drop"), ("audit", "drop"), ("enforce", "reject")]


def _decisions(policy_text: str) -> list[Decision]:
    ruleset = lower(load_text(policy_text, "cases-policy.yaml"))
    now = datetime.now(UTC)  # the kernel checks `meta time` against the real clock
    return [decide(ruleset, Flow(dst=c.dst, port=c.port, proto=c.proto, uid=c.uid, gid=c.gid),
                   now) for c in CASES]


def _counter(decision: Decision) -> str | None:
    return None if decision.rule.startswith("builtin:") else RuleKey.parse(decision.rule).counter


def _batches(decisions: list[Decision]) -> list[list[int]]:
    """Case indexes in batches whose expected counters are all different."""
    batches: list[tuple[set[str], list[int]]] = []
    for i, d in enumerate(decisions):
        key = d.rule
        for used, members in batches:
            if key not in used:
                used.add(key)
                members.append(i)
                break
        else:
            batches.append(({key}, [i]))
    return [members for _used, members in batches]


def _observed_verdict(case: Case, outcome: str, default_action: str) -> str:
    """What the socket saw, as a verdict. A TCP RST from a `reject` looks like the peer's RST:
    under `reject` a refused TCP connect is "accept|reject" and only the counter decides."""
    if outcome in DROPPED:
        return "drop"
    if outcome in PASSED:
        if default_action == "reject" and case.proto == "tcp" and outcome == "refused":
            return "accept|reject"
        return "accept"
    if outcome.startswith("rejected:"):
        return "reject"  # EPERM, then the local ICMP admin-prohibited
    return f"?{outcome}"


def _agrees(verdict: str, observed: str) -> bool:
    return verdict in observed.split("|")


@pytest.mark.parametrize(("mode", "default_action"), VARIANTS,
                         ids=[f"{m}-{a}" for m, a in VARIANTS])
def test_decide_and_kernel_agree_on_every_case(topology: Topology, mode: str,
                                               default_action: str) -> None:
    assert len(CASES) >= 50
    policy = variant_policy(mode, default_action)  # type: ignore[arg-type]
    decisions = _decisions(policy)
    topology.add_addresses(*{c.dst for c in CASES})
    topology.apply(policy)

    problems: list[str] = []

    def packets(case: Case, decision: Decision) -> int:
        # reject holds back the first SYN of a logged connect (so that the monitor can
        # attribute it) and resets its retransmit, ~1 s later: two packets
        return 2 if decision.verdict == "reject" and case.proto == "tcp" else 1

    for batch in _batches(decisions):
        before = topology.counters()
        outcomes = topology.probe([Probe(CASES[i].dst, CASES[i].port, CASES[i].proto,
                                         CASES[i].uid) for i in batch],
                                  **({"timeout": 2.0} if default_action == "reject" else {}))
        moved = deltas(before, topology.counters())
        # builtin decisions (loopback, established) are accepted before any counter
        expected = {c: 1 for i in batch if (c := _counter(decisions[i])) is not None}
        for i, outcome in zip(batch, outcomes, strict=True):
            case, decision = CASES[i], decisions[i]
            counter = _counter(decision)
            observed = _observed_verdict(case, outcome, default_action)
            got = moved.get(counter, 0) if counter else 0
            if not _agrees(decision.verdict, observed) or \
                    got != (packets(case, decision) if counter else 0):
                problems.append(
                    f"{case.id} ({case.note or '-'}): decide says {decision.verdict} by "
                    f"{decision.rule}; kernel: {outcome} ({observed}), {counter} moved by {got}")
        stray = {k: v for k, v in moved.items() if k not in expected}
        if stray:
            cases = ", ".join(CASES[i].id for i in batch)
            problems.append(f"counters no case expects moved: {stray} (batch: {cases})")
    assert not problems, (
        f"{len(problems)} disagreement(s) between decide() and the kernel "
        f"({mode}, default {default_action}):\n" + "\n".join(problems))



MAPPED = [("::ffff:203.0.113.10", 443), ("::ffff:203.0.113.10", 8080),
          ("::ffff:198.51.100.7", 443)]


def test_decide_and_kernel_agree_on_ipv4_mapped_destinations(topology: Topology) -> None:
    """A dual-stack (AF_INET6) socket connecting to ::ffff:a.b.c.d sends IPv4 packets."""
    ruleset = lower(load_text(CASE_POLICY_TEXT, "cases-policy.yaml"))
    topology.add_addresses(*[a for a, _p in MAPPED])
    topology.apply(CASE_POLICY_TEXT)
    problems = []
    for addr, port in MAPPED:
        decision = decide(ruleset, Flow(dst=addr, port=port, proto="tcp", uid=0, gid=0))
        before = topology.counters()
        [outcome] = topology.probe([Probe(addr, port)])
        moved = deltas(before, topology.counters())
        passed = outcome in PASSED
        if moved != {RuleKey.parse(decision.rule).counter: 1} or passed != (decision.verdict == "accept"):
            problems.append(f"tcp [{addr}]:{port}: decide {decision.verdict} by {decision.rule}; "
                            f"kernel {outcome}, counters {moved}")
    assert not problems, "\n".join(problems)


CASE_POLICY_TEXT = variant_policy("enforce", "drop")
