"""The iptables export, loaded into real kernels, agrees with `decide()` on the shared case table.

Same method as tests/kernel/test_agreement.py (which checks the nftables backend): the
decision-table policy (`tests/cases.py`) is applied in the topology's server namespace, this
time through `outguard.export.iptables_apply` (ipset restore + iptables-restore +
ip6tables-restore), with iptables-nft and with iptables-legacy; every case is sent as a real
TCP connect or UDP datagram as root or nobody, and both the verdict the socket sees and the
rule counter that moved (the packet counter of the lines tagged `og:<rule>`) must be what
`decide` says. Also: NFLOG prefixes, re-apply and remove leave every foreign rule, chain and
set alone, and the CLI's `apply --backend`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from outguard.compile.lower import lower
from outguard.decide import Decision
from outguard.export.iptables_apply import apply_ruleset, remove
from outguard.kernel import iptables as ipt
from outguard.kernel import netns as ns
from outguard.kernel.iptables import Variant
from outguard.policy.load import load_text
from tests.cases import CASE_POLICY, CASES, variant_policy
from tests.kernel.test_agreement import VARIANTS, _agrees, _batches, _decisions, _observed_verdict
from tests.kernel.topology import NflogReader, Probe, Topology, deltas

pytestmark = pytest.mark.kernel

IPT: list[Variant] = ["nft", "legacy"]


def _counters(topo: Topology, variant: Variant) -> dict[str, int]:
    out: dict[str, int] = {}
    for version in (4, 6):
        for key, n in ipt.counters(version, variant, topo.server).items():
            out[key] = out.get(key, 0) + n
    return out


def _counter(decision: Decision) -> str | None:
    return None if decision.rule.startswith("builtin:") else decision.rule


def _apply(topo: Topology, text: str, variant: Variant) -> None:
    apply_ruleset(lower(load_text(text, "cases-policy.yaml")), variant, topo.server)


@pytest.mark.parametrize("variant", IPT)
@pytest.mark.parametrize(("mode", "default_action"), VARIANTS,
                         ids=[f"{m}-{a}" for m, a in VARIANTS])
def test_iptables_and_decide_agree_on_every_case(topology: Topology, variant: Variant,
                                                 mode: str, default_action: str) -> None:
    policy = variant_policy(mode, default_action)  # type: ignore[arg-type]
    decisions = _decisions(policy)
    topology.add_addresses(*{c.dst for c in CASES})
    _apply(topology, policy, variant)

    problems: list[str] = []
    for batch in _batches(decisions):
        before = _counters(topology, variant)
        outcomes = topology.probe([Probe(CASES[i].dst, CASES[i].port, CASES[i].proto,
                                         CASES[i].uid) for i in batch])
        moved = deltas(before, _counters(topology, variant))
        expected = {c for i in batch if (c := _counter(decisions[i])) is not None}
        for i, outcome in zip(batch, outcomes, strict=True):
            case, decision = CASES[i], decisions[i]
            counter = _counter(decision)
            observed = _observed_verdict(case, outcome, default_action)
            got = moved.get(counter, 0) if counter else 0
            if not _agrees(decision.verdict, observed) or got != (1 if counter else 0):
                problems.append(
                    f"{case.id} ({case.note or '-'}): decide says {decision.verdict} by "
                    f"{decision.rule}; iptables-{variant}: {outcome} ({observed}), {counter} "
                    f"moved by {got}")
        stray = {k: v for k, v in moved.items() if k not in expected}
        if stray:
            problems.append(f"counters no case expects moved: {stray} "
                            f"(batch: {', '.join(CASES[i].id for i in batch)})")
    assert not problems, (f"{len(problems)} disagreement(s) between decide() and iptables-"
                          f"{variant} ({mode}, default {default_action}):\n" + "\n".join(problems))


@pytest.mark.parametrize("variant", IPT)
def test_nflog_prefixes_name_the_rule(topology: Topology, variant: Variant) -> None:
    topology.add_addresses("198.51.100.1", "203.0.113.201")
    _apply(topology, CASE_POLICY, variant)
    reader = NflogReader(topology.server, 0)
    try:
        topology.probe([Probe("198.51.100.1", 80), Probe("203.0.113.201", 80, "tcp", 65534)])
        records = reader.collect(1.0)
    finally:
        reader.close()
    got = {(r.prefix, r.dst) for r in records}
    assert ("og:deny:attacker-net", "198.51.100.1") in got
    assert ("og:default", "203.0.113.201") in got
    assert {r.uid for r in records if r.dst == "203.0.113.201"} <= {65534, None}


FOREIGN_V4 = "-A OUTPUT -d 192.0.2.99/32 -p tcp -m tcp --dport 9 -j ACCEPT"


@pytest.mark.parametrize("variant", IPT)
def test_reapply_and_remove_touch_only_outguards_chains_and_sets(topology: Topology,
                                                                 variant: Variant) -> None:
    server = topology.server
    cmd = ipt.command("iptables", 4, variant)
    ns.run(server, [cmd, "-w", "-N", "OTHER-CHAIN"])
    ns.run(server, [cmd, "-w", "-A", "OTHER-CHAIN", "-j", "RETURN"])
    ns.run(server, [cmd, "-w", *FOREIGN_V4.split()])
    ns.run(server, ["ipset", "create", "other-set", "hash:ip"])
    _apply(topology, CASE_POLICY, variant)
    _apply(topology, variant_policy("audit", "drop"), variant)  # fewer chains: the rest go
    _apply(topology, variant_policy("enforce", "reject"), variant)
    saved = ipt.save(4, variant, server)
    assert ipt.has_rule(saved, FOREIGN_V4) and ipt.has_rule(saved, "-A OTHER-CHAIN -j RETURN")
    assert saved.count("-j OUTGUARD-OUT") == 1, saved
    assert set(ipt.chains(saved, "OUTGUARD-")) == {
        "OUTGUARD-OUT", "OUTGUARD-DEFAULT", "OUTGUARD-REJECT",
        *(f"OUTGUARD-D{i}" for i in range(6))}
    remove(variant, server)
    saved = ipt.save(4, variant, server)
    assert ipt.has_rule(saved, FOREIGN_V4) and "OUTGUARD" not in saved
    assert "OUTGUARD" not in ipt.save(6, variant, server)
    assert ipt.ipset_names(server) == ["other-set"]


def test_cli_apply_with_the_iptables_backend(topology: Topology) -> None:
    path = topology.write_policy(CASE_POLICY)
    proc = subprocess.run(
        [sys.executable, "-m", "outguard", "apply", str(path), "--backend", "iptables-legacy",
         "--netns", topology.server, "--state-dir", str(topology.state_dir)],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "with iptables-legacy" in proc.stdout
    saved = ipt.save(4, "legacy", topology.server)
    assert ipt.has_rule(saved, "-A OUTPUT -j OUTGUARD-OUT")
    topology.add_addresses("198.51.100.1", "203.0.113.10")
    assert topology.passes(Probe("198.51.100.1", 80), Probe("203.0.113.10", 443)) == [False, True]
