"""`outguard verify` and `apply --verify` in the kernel, through the real CLI: the outcomes
`reached`, `blocked by outguard`, `blocked elsewhere` (a second table that drops an allowed
destination) and `let out` (a hand-made accept in outguard's table, held back by verify's guard
so that nothing reaches the denied destination), IPv4 and IPv6, TCP and UDP, as root and as the
rule's user; `apply --verify` rolls back a policy whose allowed destination cannot be reached,
with and without `--confirm-timeout`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from outguard.kernel import netns as ns
from tests.kernel.topology import Probe, Topology

pytestmark = pytest.mark.kernel

WEB4, WEB6, NTP4, NTP6 = "203.0.113.10", "2001:db8:10::10", "203.0.113.20", "2001:db8:20::20"
BACKUP4, BAD4, NEW4 = "203.0.113.30", "198.51.100.66", "203.0.113.40"
POLICY = f"""version: 1
allow:
  - name: web
    to: [{WEB4}, "{WEB6}"]
    ports: [443]
  - name: ntp
    to: [{NTP4}, "{NTP6}"]
    ports: [123]
    proto: udp
  - name: backup
    to: [{BACKUP4}]
    ports: [22]
    proto: tcp
    for: {{user: nobody}}
deny:
  - name: bad
    to: [{BAD4}]
"""
OTHER_TABLE = f"""table inet other {{
  chain output {{
    type filter hook output priority 10; policy accept;
    ip daddr {WEB4} drop
    ip6 daddr {NTP6} drop
    ip daddr {NEW4} drop
  }}
}}
"""


def _verify(topo: Topology, *args: str) -> tuple[int, dict[str, Any]]:
    proc = topo.cli("verify", "--json", "--timeout", "1", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _by(report: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    return {(p["subject"], p["dst"], p["proto"]): p["outcome"] for p in report["probes"]}


def test_verify_tells_reached_blocked_by_outguard_and_blocked_elsewhere_apart(
        topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4, WEB6, NTP4, NTP6, BACKUP4, BAD4)
    topo.apply(POLICY)
    code, report = _verify(topo)
    assert code == 0, report
    assert _by(report) == {
        ("allow:web", WEB4, "tcp"): "reached", ("allow:web", WEB6, "tcp"): "reached",
        ("allow:ntp", NTP4, "udp"): "reached", ("allow:ntp", NTP6, "udp"): "reached",
        ("allow:backup", BACKUP4, "tcp"): "reached",
        ("deny:bad", BAD4, "tcp"): "blocked by outguard",
        ("default", "192.0.2.201", "tcp"): "blocked by outguard"}
    assert {p["uid"] for p in report["probes"] if p["subject"] == "allow:backup"} == {65534}
    assert [p["blocked_by"] for p in report["probes"] if p["subject"] == "default"] == ["default"]

    topo.nft("-f", "-", input=OTHER_TABLE)  # another firewall drops two allowed destinations
    code, report = _verify(topo)
    assert code == 1
    got = _by(report)
    assert got[("allow:web", WEB4, "tcp")] == "blocked elsewhere"
    assert got[("allow:ntp", NTP6, "udp")] == "blocked elsewhere"
    assert got[("allow:web", WEB6, "tcp")] == "reached"
    assert got[("deny:bad", BAD4, "tcp")] == "blocked by outguard"
    assert [p["subject"] for p in report["probes"] if not p["ok"]] == ["allow:web", "allow:ntp"]
    assert not any(t[1] == "outguard_verify" for t in topo.tables())  # the guard is gone


def test_a_deny_rule_outguard_lets_out_is_reported_and_held_on_the_host(
        topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4, BAD4)
    topo.apply(POLICY)
    # what reaches the peer for the denied address, counted before anything else sees it
    ns.run(topo.peer, ["nft", "-f", "-"], input=(
        "table inet watch {\n counter seen {\n }\n chain pre {\n  type filter hook prerouting"
        f" priority -300;\n  ip daddr {BAD4} counter name seen\n }}\n}}\n"))
    topo.nft("insert", "rule", "inet", "outguard", "output", "ip", "daddr", BAD4, "accept")
    code, report = _verify(topo)
    assert code == 1
    assert _by(report)[("deny:bad", BAD4, "tcp")] == "let out"
    seen = ns.run(topo.peer, ["nft", "-j", "list", "counter", "inet", "watch", "seen"]).stdout
    assert '"packets": 0' in seen, seen
    assert topo.passes(Probe(WEB4, 443)) == [True]


def test_apply_verify_rolls_back_a_policy_whose_allowed_destination_is_unreachable(
        topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4, WEB6, NTP4, NTP6, BACKUP4, BAD4, NEW4)
    first = topo.write_policy(POLICY.replace(f"ip daddr {WEB4} drop", ""), "first.yaml")
    proc = topo.cli("apply", str(first), "--verify")
    assert proc.returncode == 0, proc.stderr
    applied = topo.status()["policy_hash"]
    topo.nft("-f", "-", input=OTHER_TABLE.replace(f"ip daddr {WEB4} drop", "")
             .replace(f"ip6 daddr {NTP6} drop", ""))
    newer = POLICY.replace("deny:", f"  - name: new\n    to: [{NEW4}]\n    ports: [443]\ndeny:")
    second = topo.write_policy(newer, "second.yaml")
    for extra in ([], ["--confirm-timeout", "300"]):
        proc = topo.cli("apply", str(second), "--verify", *extra)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "rolled back" in proc.stderr and "allow:new" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        status = topo.status()
        assert status["policy_hash"] == applied
        assert status["pending_confirmation"] is None
        assert status["last_rollback"]["by"] == "verify"
        assert topo.passes(Probe(NEW4, 443)) == [False]


def test_a_name_rule_is_probed_at_the_address_the_name_resolves_to(topology: Topology) -> None:
    import shutil
    from pathlib import Path

    topo = topology
    named = "203.0.113.50"
    topo.add_addresses(named, BAD4)
    etc = Path("/etc/netns") / topo.server
    assert topo.server.startswith("ogt-") and not etc.exists()
    etc.mkdir(parents=True)
    try:
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{named} api.example.test\n")
        policy = topo.write_policy("version: 1\nallow:\n  - name: api\n    to: [api.example.test]\n"
                                   "    ports: [8443]\n")
        proc = topo.cli("apply", str(policy), "--verify")
        assert proc.returncode == 0, proc.stderr
        code, report = _verify(topo)
        assert code == 0
        assert _by(report)[("allow:api", named, "tcp")] == "reached"
        assert [p["port"] for p in report["probes"] if p["subject"] == "allow:api"] == [8443]
    finally:
        shutil.rmtree(etc)


def test_in_audit_mode_a_denied_probe_is_logged_and_kept_on_the_host(topology: Topology) -> None:
    topo = topology
    topo.add_addresses(WEB4, WEB6, NTP4, NTP6, BACKUP4, BAD4)
    topo.apply(POLICY.replace("version: 1\n", "version: 1\nmode: audit\n"))
    ns.run(topo.peer, ["nft", "-f", "-"], input=(
        "table inet watch {\n counter seen {\n }\n chain pre {\n  type filter hook prerouting"
        " priority -300;\n  ip daddr { 198.51.100.66, 192.0.2.201 } counter name seen\n }\n}\n"))
    code, report = _verify(topo)
    assert code == 0, [p["detail"] for p in report["probes"] if not p["ok"]]
    got = _by(report)
    assert got[("deny:bad", BAD4, "tcp")] == "logged by outguard (audit)"
    assert got[("default", "192.0.2.201", "tcp")] == "logged by outguard (audit)"
    assert got[("allow:web", WEB4, "tcp")] == "reached"
    seen = ns.run(topo.peer, ["nft", "-j", "list", "counter", "inet", "watch", "seen"]).stdout
    assert '"packets": 0' in seen, seen


def test_a_probe_is_counted_and_never_logged_so_verify_raises_no_incident(
        topology: Topology) -> None:
    """Every `outguard verify` became a default-rule incident (and an alert): its probes carry
    keys.PROBE_MARK, which the log gate lets take its verdict unlogged; the rule's counter,
    which verify reads, still moves. An unmarked packet to the same place is logged."""
    from outguard.kernel import prober
    from outguard.ruleset.keys import PROBE_MARK

    topo = topology
    topo.add_addresses(WEB4, BAD4)
    topo.apply(POLICY)
    before = topo.counters(logged=True)
    assert topo.thread.call(prober.probe, BAD4, 443, "tcp", 0.3, PROBE_MARK) == "timeout"
    assert topo.thread.call(prober.probe, "192.0.2.201", 9, "tcp", 0.3, PROBE_MARK) == "timeout"
    after = topo.counters(logged=True)
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert moved.get("deny.bad", 0) >= 1 and moved.get("default", 0) >= 1, moved
    assert not [k for k in moved if k.startswith("log.")], moved
    topo.thread.call(prober.probe, BAD4, 443, "tcp", 0.3)  # no mark: logged as ever
    assert topo.counters(logged=True)["log.deny.bad"] > after.get("log.deny.bad", 0)
