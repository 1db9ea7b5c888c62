"""What an applied policy does to real traffic: allowed flows pass, the rest is dropped (IPv4 and
IPv6), deny beats allow, `for: {user: ...}` is checked against real processes, audit mode passes
everything and logs it, and `status --json` shows the counters of the rules that were hit.

Every test builds the two-namespace topology of tests/kernel/topology.py and applies the policy
in its server namespace (in this process through `apply.run.apply_policy` with an `Nft` bound to the
namespace, or through the CLI with `--netns`).
"""

from __future__ import annotations

import pytest

from outguard.kernel import netns as ns
from outguard.policy.load import load_text
from outguard.ruleset.decide import Flow, decide
from outguard.ruleset.lower import lower
from tests.kernel.topology import (
    DROPPED,
    LINK,
    NOBODY,
    PASSED,
    NflogReader,
    Probe,
    Topology,
    deltas,
)

pytestmark = pytest.mark.kernel

POLICY = """\
version: 1
mode: enforce
allow:
  - name: web
    to: [203.0.113.10, "2001:db8:10::10"]
    ports: [80, 443]
    proto: tcp
  - name: dns
    to: [192.0.2.53, "2001:db8:53::53"]
    ports: [53]
    proto: udp
  - name: backup-nobody
    to: [203.0.113.12, "2001:db8:12::12"]
    ports: [873]
    proto: tcp
    for: {user: nobody}
  - name: overlap
    comment: the same addresses are denied below; deny wins
    to: [203.0.113.66, "2001:db8:66::66"]
    ports: [443]
    proto: tcp
deny:
  - name: attacker-net
    to: [198.51.100.0/24, "2001:db8:bad::/48", 203.0.113.66, "2001:db8:66::66"]
options:
  log_rate: 1000/second
"""

# name: (v4, v6) destination of the same role in both families
HOSTS = {
    "web": ("203.0.113.10", "2001:db8:10::10"),
    "dns": ("192.0.2.53", "2001:db8:53::53"),
    "backup": ("203.0.113.12", "2001:db8:12::12"),
    "overlap": ("203.0.113.66", "2001:db8:66::66"),
    "attacker": ("198.51.100.7", "2001:db8:bad::7"),
    "other": ("203.0.113.99", "2001:db8:99::99"),
}
ALL_ADDRESSES = [a for pair in HOSTS.values() for a in pair]
FAMILIES = {"ipv4": 0, "ipv6": 1}

# (host, port, proto, uid, expected counter): counter None never happens here (no loopback)
FLOWS = [
    ("web", 80, "tcp", 0, "allow.web"),
    ("web", 443, "tcp", 0, "allow.web"),
    ("dns", 53, "udp", 0, "allow.dns"),
    ("web", 8080, "tcp", 0, "default"),        # allowed host, other port
    ("web", 443, "udp", 0, "default"),         # allowed host and port, other protocol
    ("dns", 53, "tcp", 0, "default"),          # udp-only rule
    ("other", 80, "tcp", 0, "default"),        # nothing allows it
    ("other", 53, "udp", 0, "default"),
    ("attacker", 443, "tcp", 0, "deny.attacker-net"),
    ("attacker", 53, "udp", 0, "deny.attacker-net"),
]


def _probe(host: str, family: str, port: int, proto: str, uid: int = 0) -> Probe:
    return Probe(HOSTS[host][FAMILIES[family]], port, proto, uid)


def _expect_pass(counter: str) -> bool:
    return counter.startswith("allow.")


@pytest.fixture
def enforced(topology: Topology) -> Topology:
    topology.add_addresses(*ALL_ADDRESSES)
    topology.apply(POLICY)
    return topology


@pytest.mark.parametrize("family", list(FAMILIES))
def test_allowed_flows_pass_and_all_others_are_dropped(enforced: Topology, family: str) -> None:
    probes = [_probe(h, family, port, proto, uid) for h, port, proto, uid, _c in FLOWS]
    before = enforced.counters()
    outcomes = enforced.probe(probes)
    moved = deltas(before, enforced.counters())

    wrong = [f"{p}: {o}, expected {'pass' if _expect_pass(c) else 'drop'}"
             for p, o, (*_x, c) in zip(probes, outcomes, FLOWS, strict=True)
             if o not in (PASSED if _expect_pass(c) else DROPPED)]
    assert not wrong, "\n".join(wrong)
    expected: dict[str, int] = {}
    for *_x, counter in FLOWS:
        expected[counter] = expected.get(counter, 0) + 1
    assert moved == expected, "one packet per flow, on the counter of the rule that decides"


def test_status_json_counters_move_for_the_rules_hit(enforced: Topology) -> None:
    assert enforced.passes(_probe("web", "ipv4", 443, "tcp"), _probe("web", "ipv6", 80, "tcp"),
                           _probe("attacker", "ipv6", 22, "tcp"),
                           _probe("other", "ipv4", 53, "udp")) == [True, True, False, False]
    status = enforced.status_cli()
    assert status["applied"] and status["table_present"] and status["mode"] == "enforce"
    packets = {k: v["packets"] for k, v in status["counters"].items()}
    assert packets == {"allow:web": 2, "deny:attacker-net": 1, "default": 1, "allow:dns": 0,
                       "allow:backup-nobody": 0, "allow:overlap": 0}
    assert status["counters"]["allow:web"]["bytes"] > 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_deny_beats_allow_for_the_same_address(enforced: Topology, family: str) -> None:
    addr = HOSTS["overlap"][FAMILIES[family]]
    ruleset = lower(load_text(POLICY))
    decision = decide(ruleset, Flow(dst=addr, port=443, proto="tcp", uid=0))
    assert (decision.action, decision.rule) == ("deny", "deny:attacker-net")

    before = enforced.counters()
    assert enforced.probe([Probe(addr, 443, "tcp")]) == ["timeout"]
    moved = deltas(before, enforced.counters())
    assert moved == {"deny.attacker-net": 1}, "the deny rule decides; allow.overlap stays at 0"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_for_user_nobody_is_checked_with_real_processes(enforced: Topology, family: str) -> None:
    """The same flows from a process running as nobody (uid/gid 65534) and from root."""
    flows = [("backup", 873, NOBODY, "allow.backup-nobody"), ("backup", 873, 0, "default"),
             ("web", 443, NOBODY, "allow.web"), ("backup", 22, NOBODY, "default")]
    for host, port, uid, counter in flows:  # one at a time: each moved counter is that flow's
        before = enforced.counters()
        [outcome] = enforced.probe([_probe(host, family, port, "tcp", uid)])
        moved = deltas(before, enforced.counters())
        where = f"tcp {host}:{port} as uid {uid}"
        assert outcome in (PASSED if _expect_pass(counter) else DROPPED), f"{where}: {outcome}"
        assert moved == {counter: 1}, where


def test_nobody_and_root_probes_run_at_once(enforced: Topology) -> None:
    """Mixed uids in one call: the nobody child and the root thread run concurrently."""
    probes = [_probe("backup", f, 873, "tcp", uid) for f in FAMILIES for uid in (0, NOBODY)]
    assert enforced.passes(*probes) == [False, True, False, True]


def test_ipv6_is_closed_like_ipv4(topology: Topology) -> None:
    """Each IPv4 flow and its IPv6 twin get the same verdict; and a policy that names only
    IPv4 destinations leaves no IPv6 path open (the link's own peer address included)."""
    topology.add_addresses(*ALL_ADDRESSES)
    topology.apply(POLICY)
    # forget the neighbours learnt before the policy: IPv6 neighbour discovery must now pass
    # outguard's output chain for any IPv6 flow to work
    ns.run(topology.server, ["ip", "neigh", "flush", "dev", LINK])
    flows = [(h, port, proto) for h, port, proto, _u, _c in FLOWS]
    v4 = topology.passes(*[_probe(h, "ipv4", port, proto) for h, port, proto in flows])
    v6 = topology.passes(*[_probe(h, "ipv6", port, proto) for h, port, proto in flows])
    assert None not in v4 + v6
    assert v4 == v6, [f for f, a, b in zip(flows, v4, v6, strict=True) if a != b]

    topology.apply(POLICY.replace(', "2001:db8:10::10"', "").replace(', "2001:db8:53::53"', ""))
    v6_targets = [Probe(a, port, proto) for a in (*[h[1] for h in HOSTS.values()], "2001:db8::1")
                  for port, proto in ((80, "tcp"), (443, "tcp"), (53, "udp"), (22, "tcp"))]
    before = topology.counters()
    outcomes = topology.probe(v6_targets)
    opened = [f"{p}: {o}" for p, o in zip(v6_targets, outcomes, strict=True) if o not in DROPPED]
    assert not opened, "IPv6 flows passed a policy that allows only IPv4:\n" + "\n".join(opened)
    moved = deltas(before, topology.counters())
    assert set(moved) == {"default", "deny.attacker-net"}
    assert topology.passes(_probe("web", "ipv4", 443, "tcp")) == [True]


def test_audit_mode_passes_everything_and_logs_what_it_would_block(topology: Topology) -> None:
    """Audit: every flow passes; flows the policy would block move `default` / the deny counter
    and are logged to NFLOG group 0 with the rule in the prefix (read with a netlink socket)."""
    topology.add_addresses(*ALL_ADDRESSES)
    topology.apply(POLICY.replace("mode: enforce", "mode: audit"))
    log = NflogReader(topology.server, group=0)
    try:
        probes = [_probe(h, f, port, proto, uid) for f in FAMILIES
                  for h, port, proto, uid, _c in FLOWS]
        probes.append(_probe("backup", "ipv4", 873, "tcp", NOBODY))
        before = topology.counters()
        outcomes = topology.probe(probes)
        moved = deltas(before, topology.counters())
        records = log.collect(until=1.0)
    finally:
        log.close()

    blocked = [f"{p}: {o}" for p, o in zip(probes, outcomes, strict=True) if o not in PASSED]
    assert not blocked, "audit mode must not block:\n" + "\n".join(blocked)
    would_block = [(p, c) for f in FAMILIES for (h, port, proto, uid, c) in FLOWS
                   for p in [_probe(h, f, port, proto, uid)] if not _expect_pass(c)]
    assert moved == {"allow.web": 4, "allow.dns": 2, "allow.backup-nobody": 1,
                     "default": sum(c == "default" for _p, c in would_block),
                     "deny.attacker-net": sum(c != "default" for _p, c in would_block)}

    logged = sorted((r.prefix, r.dst or "") for r in records)
    expected = sorted(("og:default audit" if c == "default" else "og:deny:attacker-net audit",
                       p.addr)
                      for p, c in would_block)
    assert logged == expected, "exactly the flows audit mode would block are logged, once each"
    assert {r.uid for r in records} == {0}


def test_reject_default_answers_at_once_and_counts(topology: Topology) -> None:
    """`default_action: reject`: a blocked TCP connect fails after its first retransmit (~1 s:
    the first SYN is held back so that the monitor can attribute the socket; then a RST, which a
    socket cannot tell from the peer's, so the counter tells: two packets), a blocked UDP send
    gets EPERM then an ICMP error; allowed flows still pass."""
    topology.add_addresses(*ALL_ADDRESSES)
    topology.apply(POLICY + "  default_action: reject\n")
    probes = [_probe("other", f, 80, "tcp") for f in FAMILIES]
    probes += [_probe("other", f, 53, "udp") for f in FAMILIES]
    probes += [_probe("web", f, 443, "tcp") for f in FAMILIES]
    before = topology.counters()
    outcomes = topology.probe(probes, timeout=2.0)
    moved = deltas(before, topology.counters())
    assert outcomes == ["refused", "refused", "rejected:EHOSTUNREACH", "rejected:EACCES",
                        "refused", "refused"]
    assert moved == {"default": 6, "allow.web": 2}
