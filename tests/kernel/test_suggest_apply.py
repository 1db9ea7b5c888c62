"""A suggested policy, applied for real: every flow of the learned workload passes (IPv4 and
IPv6, TCP and UDP, a `for: {user: nobody}` rule with a real nobody process), and what was
classified while learning, or never seen, is dropped. The policy the kernel gets is the one
`outguard suggest` printed, through `outguard check`'s loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.journey.render import render
from outguard.journey.suggest import suggest
from tests.journey.flows import flow
from tests.kernel.topology import NOBODY, Probe, Topology

pytestmark = pytest.mark.kernel

ROOT = {"user": "root", "uid": 0}
WORKLOAD = [
    flow("203.0.113.10", 443, exe="/usr/bin/curl", **ROOT),
    flow("2001:db8:10::10", 443, exe="/usr/bin/curl", **ROOT),
    flow("203.0.113.12", 873, exe="/usr/bin/rsync", user="nobody", uid=NOBODY),
    flow("203.0.113.30", 123, "udp", exe="/usr/sbin/chronyd", **ROOT),
    flow("2001:db8:30::30", 123, "udp", exe="/usr/sbin/chronyd", **ROOT),
    *(flow("203.0.113.40", p, exe="/opt/app/bin/app", **ROOT) for p in (8000, 8001, 8002)),
    flow("2001:db8:40::40", 8001, exe="/opt/app/bin/app", **ROOT),
]
CLASSIFIED = flow("198.51.100.7", 1389, exe="/usr/bin/java", signature="jndi-callback",
                  severity="critical", **ROOT)


def test_the_suggested_policy_blocks_nothing_of_the_learned_workload(
        topology: Topology, tmp_path: Path) -> None:
    text = render(suggest([*WORKLOAD, CLASSIFIED]))
    assert "198.51.100.7" not in text.split("# seen, not allowed")[0]
    policy = tmp_path / "suggested.yaml"
    policy.write_text(text)
    topology.add_addresses(*{f.dst for f in WORKLOAD}, CLASSIFIED.dst)
    topology.apply(policy)

    learned = [Probe(f.dst, f.port or 0, f.proto, f.uid or 0) for f in WORKLOAD]
    outcomes = topology.passes(*learned)
    assert outcomes == [True] * len(learned), list(zip(learned, outcomes, strict=True))
    never = [Probe(CLASSIFIED.dst, 1389),  # the JNDI callback
             Probe("203.0.113.40", 8003),  # a port never seen: not in the range
             Probe("203.0.113.12", 873),  # rsync's rule is for nobody, this is root
             Probe("203.0.113.10", 443, "tcp", NOBODY),  # curl's is root's
             Probe("203.0.113.30", 123, "tcp")]  # NTP was UDP
    assert topology.passes(*never) == [False] * len(never)


def test_a_suggested_policy_with_names_works_through_outguard_s_resolver(
        topology: Topology) -> None:
    """Names learned → name rules and a `dns:` section whose upstream is the server the host
    asked; applied with the real resolver, every learned name resolves and connects (IPv4 and
    IPv6), the classified destination's name is refused and its address dropped."""
    from tests.kernel.dnsenv import UPSTREAM, addresses, connect, dns_world

    records = {"api.example.test": ["203.0.113.10", "2001:db8:10::10"],
               "a.cdn.example.test": ["203.0.113.21"], "b.cdn.example.test": ["203.0.113.22"],
               "c.cdn.example.test": ["203.0.113.23"], "evil.example.test": ["198.51.100.7"]}
    learned = [flow(a, 80, names=(n,), **ROOT) for n, addrs in records.items() for a in addrs
               if not n.startswith("evil")]
    learned.append(flow(UPSTREAM, 53, "udp", exe="/usr/lib/systemd/systemd-resolved", **ROOT))
    jndi = flow("198.51.100.7", 1389, exe="/usr/bin/java", names=("evil.example.test",),
                signature="jndi-callback", severity="critical", **ROOT)
    text = render(suggest([*learned, jndi]))
    policy_part = text.split("# seen, not allowed")[0]
    assert f'upstreams: ["{UPSTREAM}"]' in policy_part
    assert "203.0.113." not in policy_part and "2001:db8" not in policy_part  # names only
    assert "*.example.test" not in policy_part  # a refused name lies below it
    with dns_world(topology) as w:
        w.set_hosts(records, reload=False)
        w.start_dnsmasq(ttl=60)
        w.apply(text)
        w.start_resolver()
        for name, addrs in records.items():
            if name.startswith("evil"):
                continue
            got = addresses(w.ask(name)) + addresses(w.ask(name, "AAAA"))
            assert sorted(got) == sorted(addrs), name
            for addr in addrs:
                assert connect(topology, addr, 80) == "refused", (name, addr)  # the peer's RST
        assert addresses(w.ask("evil.example.test")) == []
        assert connect(topology, "198.51.100.7", 1389) == "timeout"
        assert connect(topology, "203.0.113.21", 443) == "timeout"  # a port never seen
