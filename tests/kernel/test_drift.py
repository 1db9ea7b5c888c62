"""Drift: what is in outguard's table that the last apply did not leave there, as `status` (and
`status --check`, for monitoring) reports it. Compared by netlink — object names and each
chain's rules — never by listing set elements, so it stays fast next to a 1M-element set.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.kernel.test_apply_safety import ADDRESSES, POLICY_A
from tests.kernel.topology import Probe, Topology

pytestmark = pytest.mark.kernel


@pytest.fixture
def with_a(topology: Topology) -> Topology:
    topology.add_addresses(*ADDRESSES)
    proc = topology.cli("apply", str(topology.write_policy(POLICY_A, "a.yaml")))
    assert proc.returncode == 0, proc.stderr
    return topology


def test_a_rule_inserted_by_hand_is_drift(with_a: Topology) -> None:
    """An accept for the attacker put into outguard's own chain was invisible to `status`."""
    topo = with_a
    assert topo.cli("status", "--check").returncode == 0
    assert topo.status_cli()["drift"] == []
    topo.nft("insert", "rule", "inet", "outguard", "output", "ip", "daddr", "198.51.100.7",
             "accept")
    assert topo.passes(Probe("198.51.100.7", 443)) == [True]
    proc = topo.cli("status", "--check")
    assert proc.returncode == 2
    assert "PROBLEM: drift: the rules of chain output differ" in proc.stdout
    assert topo.status_cli()["drift"] == [
        "the rules of chain output differ from what outguard applied"]
    assert topo.cli("apply", str(topo.state_dir.parent / "a.yaml")).returncode == 0
    assert topo.cli("status", "--check").returncode == 0
    assert topo.passes(Probe("198.51.100.7", 443)) == [False]


@pytest.mark.parametrize("edit", [
    ("add", "chain", "inet", "outguard", "by-hand"),
    ("add", "set", "inet", "outguard", "by-hand", "{ type ipv4_addr; }"),
    ("add", "counter", "inet", "outguard", "by-hand"),
])
def test_objects_added_by_hand_are_drift(with_a: Topology, edit: tuple[str, ...]) -> None:
    topo = with_a
    topo.nft(*edit)
    drift = topo.status_cli()["drift"]
    assert drift == [f"{edit[1]} by-hand is in outguard's table, but outguard did not make it"]


def test_elements_a_feed_or_the_resolver_adds_are_not_drift(with_a: Topology) -> None:
    topo = with_a
    sets = topo.nft("list", "sets", "inet")
    name = next(w for w in sets.split() if w.startswith("l_mirrors_") and w.endswith("_4a"))
    topo.nft("delete", "element", "inet", "outguard", name, "{ 203.0.113.200 }")
    assert topo.status_cli()["drift"] == []
    assert topo.cli("status", "--check").returncode == 0


def test_drift_is_found_fast_next_to_a_million_element_set(topology: Topology,
                                                          tmp_path: Path) -> None:
    """`nft list` would load the whole set first (13-22 s here); status reads no element."""
    topo = topology
    listing = tmp_path / "big.txt"
    with listing.open("w") as fh:
        for i in range(1_000_000):  # 240.0.0.0/4: never routed, never sent to
            fh.write(f"{240 + (i >> 24)}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
    policy = ("version: 1\ndeny:\n  - {name: big, to: ['@big']}\nallow:\n"
              "  - {name: web, to: [203.0.113.10], ports: [443]}\n"
              f"lists:\n  big: {{file: {listing}}}\n")
    proc = topo.cli("apply", str(topo.write_policy(policy)), timeout=300)
    assert proc.returncode == 0, proc.stderr
    topo.nft("add", "rule", "inet", "outguard", "output", "accept")
    t0 = time.monotonic()
    proc = topo.cli("status", "--check")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2 and "drift" in proc.stdout
    assert elapsed < 5, f"status took {elapsed:.1f} s"


def test_a_delta_reads_back_only_the_chains_it_refilled_and_records_what_a_full_read_finds(
        with_a: Topology) -> None:
    from outguard.kernel.rules import rule_digests
    from outguard.state import StateDir

    topo = with_a
    changed = POLICY_A.replace('ports: ["8000-8100"]', 'ports: ["8000-8200"]')
    assert topo.apply(changed).method == "delta"
    recorded = StateDir(topo.state_dir).snapshot("applied")
    assert recorded is not None and recorded.rule_digests is not None
    assert recorded.rule_digests == topo.thread.call(rule_digests)


@pytest.mark.parametrize("how", ["hand", "watchdog"])
def test_a_rule_inserted_after_a_rollback_is_drift(with_a: Topology, how: str) -> None:
    """After a rollback the rules were not recorded: status said "drift unknown", and an accept
    inserted by hand went unnoticed by `status --check` (exit 0)."""
    from tests.kernel.test_apply_safety import POLICY_B, _wait_for

    topo = with_a
    args = ("--confirm-timeout", "2") if how == "watchdog" else ()
    proc = topo.cli("apply", str(topo.write_policy(POLICY_B, "b.yaml")), *args)
    assert proc.returncode == 0, proc.stderr
    if how == "hand":
        assert topo.cli("rollback").returncode == 0
    else:
        _wait_for(lambda: topo.status()["last_rollback"] is not None, 30, "the watchdog")
    assert topo.status_cli()["drift"] == []
    assert topo.cli("status", "--check").returncode == 0
    topo.nft("insert", "rule", "inet", "outguard", "output", "accept")
    proc = topo.cli("status", "--check")
    assert proc.returncode == 2 and "drift: the rules of chain output differ" in proc.stdout


def test_drift_that_cannot_be_told_is_a_problem(with_a: Topology) -> None:
    """"drift unknown" (no rules recorded) passed `status --check`."""
    import json

    topo = with_a
    path = topo.state_dir / "applied" / "state.json"
    meta = json.loads(path.read_text())
    meta["rule_digests"] = None
    path.write_text(json.dumps(meta))
    proc = topo.cli("status", "--check")
    assert proc.returncode == 2 and "PROBLEM: drift unknown" in proc.stdout, proc.stdout
