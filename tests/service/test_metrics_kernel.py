"""The agent's Prometheus endpoint with everything it watches: the kernel's counters, the DNS
resolver, a feed, incidents of both kinds.

Trial run: refused DNS queries were incidents but not in `outguard_incidents_total`; an internal
`sink="memory"` showed in `outguard_alerts_total`; there were no resolver or feed-freshness
metrics, and `outguard_drops_total` counted what the monitor saw, not what the kernel dropped.
Real pieces: the agent in the server namespace, dnsmasq as the upstream, NFLOG, nftables.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import dns.exception
import dns.rcode
import pytest

from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from tests.kernel.conftest import kernel_skip_reason, new_netns
from tests.kernel.dnsenv import UPSTREAM, DnsWorld, addresses, connect, dns_world
from tests.kernel.topology import Topology, build

pytestmark = pytest.mark.kernel

POLICY = f"""
version: 1
dns:
  listen: "127.0.0.1:53"
  upstreams: ["{UPSTREAM}"]
allow:
  - name: api
    to: [api.example.test]
    ports: [80]
deny:
  - name: intel
    to: ["@feed:local-bad"]
feeds:
  local-bad: {{file: bad.txt, format: plain, category: botnet-c2}}
alerts:
  - stdout: json
"""


@pytest.fixture
def topology() -> Iterator[Topology]:
    if reason := kernel_skip_reason():
        pytest.skip(reason)
    with build(new_netns) as topo:
        yield topo


def _ready(w: DnsWorld) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            w.ask("api.example.test", timeout=0.3)
            return
        except (dns.exception.Timeout, OSError):
            assert time.monotonic() < deadline, "the agent's resolver did not start"
            time.sleep(0.1)


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _sep, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_count_what_they_say(topology: Topology) -> None:
    (topology.state_dir.parent / "bad.txt").write_text("203.0.113.77\n")
    topology.add_addresses("203.0.113.77", "203.0.113.66")
    with dns_world(topology) as w:
        w.set_hosts({"api.example.test": ["198.51.100.7"]}, reload=False)
        w.start_dnsmasq(ttl=60)
        opts = AgentOptions(policy=topology.write_policy(POLICY), state_dir=topology.state_dir,
                            netns=topology.server, metrics_listen="127.0.0.1:0")
        with AgentHandle(opts) as agent:
            _ready(w)
            assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
            assert w.ask("other.example.test").rcode() == dns.rcode.REFUSED
            assert connect(topology, "203.0.113.77", 443, timeout=0.5) == "timeout"  # feed
            assert connect(topology, "203.0.113.66", 80, timeout=0.5) == "timeout"  # default
            agent.wait_for_incidents(3, timeout=5.0)
            port = agent.running.metrics_server.port  # type: ignore[union-attr]
            deadline = time.monotonic() + 15  # the feed scheduler's first round
            while True:
                got = _scrape(port)
                if got.get('outguard_feed_last_good_timestamp_seconds{feed="local-bad"}', 0) > 0:
                    break
                assert time.monotonic() < deadline, "no feed freshness"
                time.sleep(0.2)
    # the refused query is an incident like the drops
    assert got['outguard_incidents_total{class="dns-blocked",severity="medium"}'] == 1
    assert got['outguard_incidents_total{class="threat-feed",severity="high"}'] == 1
    # the resolver: queries by outcome, answers by rcode
    assert got['outguard_dns_queries_total{outcome="blocked"}'] >= 1
    assert got['outguard_dns_queries_total{outcome="upstream"}'] >= 1
    assert got['outguard_dns_answers_total{rcode="REFUSED"}'] >= 1
    # the feed's copy is fresh and was never refused
    assert 0 <= got['outguard_feed_age_seconds{feed="local-bad"}'] < 60
    assert got['outguard_feed_consecutive_failures{feed="local-bad"}'] == 0
    # the kernel's counters: what was blocked, logged, not logged
    for rule in ("default", "deny:intel"):
        blocked = got[f'outguard_kernel_drops_total{{rule="{rule}"}}']
        logged = got[f'outguard_kernel_logged_total{{rule="{rule}"}}']
        assert blocked >= 1 and logged == blocked
        assert got[f'outguard_not_logged_total{{rule="{rule}"}}'] == 0
        assert got[f'outguard_logged_drops_total{{rule="{rule}"}}'] == logged
    # only the policy's sink, never the agent's internal one
    sinks = {k for k in got if k.startswith("outguard_alerts_total{")}
    assert sinks and all('sink="stdout:json"' in k for k in sinks)
