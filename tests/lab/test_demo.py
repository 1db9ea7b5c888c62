"""Lab: the workload against a hand-written ruleset, and the full `outguard lab demo --down`.

The first test pins the lab side alone: a small nftables table, written here by hand to mean
what examples/lab-policy.yaml means, is loaded with `nft -f` in og-lab-server and every step
must come out as expected. The second runs the real demo end to end through the CLI (loader,
compiler, `outguard apply`/`status`); it needs that CLI and is skipped without it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from outguard.kernel import netns
from outguard.lab import topology as t
from outguard.lab import workload

from .conftest import java_skip_reason, lab_leftovers

pytestmark = pytest.mark.lab

HAND_WRITTEN = """
table inet outguard {
  chain output {
    type filter hook output priority filter; policy accept;
    oif "lo" accept
    ct state established,related accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept
    ip daddr 198.51.100.0/24 counter drop
    ip6 daddr 2001:db8:bad::/48 counter drop
    ip daddr 192.0.2.53 meta l4proto { tcp, udp } th dport 53 accept
    ip daddr 203.0.113.10 tcp dport { 80, 443 } accept
    ip6 daddr 2001:db8::10 tcp dport { 80, 443 } accept
    ip daddr 203.0.113.20 tcp dport 80 accept
    ip6 daddr 2001:db8::20 tcp dport 80 accept
    ip daddr 203.0.113.12 tcp dport 80 meta skuid 65534 accept
    counter drop
  }
}
"""


def test_workload_against_a_hand_written_ruleset(lab: t.LabPaths) -> None:
    if reason := java_skip_reason():
        pytest.skip(reason)
    workload.compile_java(lab)
    netns.run(t.SERVER_NS, ["nft", "-f", "-"], input=HAND_WRITTEN)
    try:
        results = workload.run_steps(workload.demo_steps(lab), workload.ns_runner())
    finally:
        netns.run(t.SERVER_NS, ["nft", "delete", "table", "inet", "outguard"], check=False)
    wrong = [(r.step.key, r.observed.value, r.detail) for r in results if not r.ok]
    assert wrong == []


def test_full_demo_with_down() -> None:
    """`outguard lab demo --down` end to end: the CLI exits 1 unless every step, the counters
    and the monitor check (exactly one critical incident, from the workload's java pid, within
    1 s) hold; the report shows the attribution."""
    if reason := java_skip_reason():
        pytest.skip(reason)
    try:
        proc = subprocess.run([sys.executable, "-m", "outguard", "lab", "demo", "--down"],
                              capture_output=True, text=True, timeout=180, check=False)
    finally:
        subprocess.run([sys.executable, "-m", "outguard", "lab", "down"],
                       capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = len(workload.demo_steps(t.LabPaths()))
    assert f"{steps} of {steps} steps as expected." in proc.stdout
    for key in ("allow:web-api", "deny:attacker-net", "default"):
        assert key in proc.stdout
    assert "✓ CRITICAL possible JNDI callback (Log4Shell) [jndi-callback]" in proc.stdout
    assert "(the workload's java)" in proc.stdout
    assert '"signature":"jndi-callback"' in proc.stdout  # the alert line
    assert "The lab has been removed." in proc.stdout
    assert lab_leftovers() == []
