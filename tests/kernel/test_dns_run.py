"""`outguard run` with a `dns:` policy: the agent runs the resolver, fills the FQDN sets, tells
the monitor which names resolved to a blocked destination, and stores refused queries.

Real pieces only: the agent in the server namespace (`ogt-<hex>`), dnsmasq authoritative for
example.test in the peer namespace as the upstream, NFLOG, nftables, sockets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dns.exception
import dns.rcode
import pytest

from outguard.policy.load import load_policy
from outguard.ruleset.lower import lower
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.store import Query
from tests.kernel.dnsenv import UPSTREAM, DnsWorld, addresses, connect, dns_world
from tests.kernel.topology import Probe, Topology

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
alerts:
  - stdout: json
"""
RECORDS = {"api.example.test": ["198.51.100.7"], "other.example.test": ["203.0.113.66"]}


def _wait_for_resolver(w: DnsWorld, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"outguard run ended: {proc.communicate()}")
        try:
            w.ask("api.example.test", timeout=0.3)
            return
        except (dns.exception.Timeout, OSError):
            assert time.monotonic() < deadline, "the agent's resolver did not start"
            time.sleep(0.1)


def test_outguard_run_serves_dns_until_sigterm(topology: Topology) -> None:
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        policy = topology.write_policy(POLICY)
        argv = [sys.executable, "-m", "outguard", "run", str(policy), "--netns", topology.server,
                "--state-dir", str(topology.state_dir)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_resolver(w, proc)
            # an allowed name, resolved through the agent's resolver: its connect passes
            assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
            assert connect(topology, "198.51.100.7", 80) == "refused"  # reached the peer
            # an unlisted name is refused without asking upstream, and its address stays shut
            refused = w.ask("other.example.test")
            assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
            assert w.upstream_queries("other.example.test") == 0
            assert connect(topology, "203.0.113.66", 80, timeout=0.5) == "timeout"
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        # SIGTERM stopped the resolver too
        with pytest.raises((dns.exception.Timeout, OSError)):
            w.ask("api.example.test", timeout=0.5)
        # the refused query is an incident in the store (and an alert), beside the packet drop
        got = topology.cli("events", "--json", "--rule", "dns:default", timeout=30)
        assert got.returncode == 0, got.stderr
        (inc,) = [json.loads(line) for line in got.stdout.splitlines()]
        assert (inc["dst"], inc["proto"], inc["dport"]) == ("other.example.test", "dns", 53)
        assert inc["process"]["pid"] == os.getpid()  # the client, found by sock_diag
        alerts = [json.loads(line) for line in stdout.splitlines()]
        assert inc["id"] in {a["id"] for a in alerts}
        # and in the resolver's own log
        log = topology.cli("dns", "log", "--blocked", "--json", timeout=30)
        assert log.returncode == 0, log.stderr
        assert [json.loads(line)["qname"] for line in log.stdout.splitlines()] == [
            "other.example.test"]


def test_agent_knows_which_names_resolved_to_a_blocked_destination(topology: Topology) -> None:
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        policy = topology.write_policy(POLICY.replace("alerts:\n  - stdout: json\n", ""))
        opts = AgentOptions(policy=policy, state_dir=topology.state_dir, netns=topology.server)
        with AgentHandle(opts) as agent:
            _wait_for_resolver(w)
            assert agent.running.dns is not None
            assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
            # resolved, but port 443 is not allowed: blocked, with the name behind it
            assert connect(topology, "198.51.100.7", 443, timeout=0.5) == "timeout"
            # never resolved: a raw IP
            assert connect(topology, "203.0.113.66", 80, timeout=0.5) == "timeout"
            found = agent.wait_for_incidents(2, timeout=3.0)
        by_dst = {i.dst: i for i in found}
        resolved, raw = by_dst["198.51.100.7"], by_dst["203.0.113.66"]
        assert resolved.names == ("api.example.test",)
        assert "raw-ip-no-dns" not in {c.signature for c in resolved.classifications}
        assert raw.names == ()
        assert "raw-ip-no-dns" in {c.signature for c in raw.classifications}


FEED_POLICY = f"""
version: 1
dns:
  listen: "127.0.0.1:53"
  upstreams: ["{UPSTREAM}"]
allow:
  - name: api
    to: [api.example.test, "*.cdn.example.test"]
    ports: [80]
deny:
  - name: intel
    to: ["@feed:local-bad"]
feeds:
  local-bad: {{file: {{feed}}, format: plain}}
"""


def test_a_feed_listing_the_upstream_cannot_cut_dns_across_agent_restarts(
        topology: Topology) -> None:
    """After `dns install` the upstream is on no resolv.conf, so no never-block list may save it:
    the kernel's accept for the resolver's own queries comes before the feed's deny."""
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=1)
        feed = w.dir / "bad.txt"
        feed.write_text(f"{UPSTREAM}\n198.51.100.66\n")
        topology.add_addresses("198.51.100.66")
        policy = topology.write_policy(FEED_POLICY.replace("{feed}", str(feed)))
        opts = AgentOptions(policy=policy, state_dir=topology.state_dir, netns=topology.server)
        for _run in range(2):  # the agent started, then restarted
            with AgentHandle(opts) as agent:
                _wait_for_resolver(w)
                assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
                assert connect(topology, "198.51.100.7", 80) == "refused"
                assert agent.running.dns is not None
            time.sleep(1.1)  # TTL 1: the next run asks upstream again
        assert w.upstream_queries("api.example.test") >= 2  # asked again after the restart
        # the feed still blocks: the upstream for everyone else, its other entry for all
        nobody, root, other = topology.passes(Probe(UPSTREAM, 53, "udp", 65534),
                                              Probe(UPSTREAM, 53, "tcp", 0),
                                              Probe("198.51.100.66", 80, "tcp", 0))
        assert (nobody, root, other) == (False, False, False)


def test_dns_tunnelling_under_an_allowed_wildcard_is_an_incident(topology: Topology) -> None:
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        policy = topology.write_policy(POLICY.replace("to: [api.example.test]",
                                                      'to: [api.example.test, "*.cdn.example.test"]'))
        opts = AgentOptions(policy=policy, state_dir=topology.state_dir, netns=topology.server)
        with AgentHandle(opts) as agent:
            _wait_for_resolver(w)
            for i in range(150):  # a new chunk of data in each name: NXDOMAIN, still forwarded
                assert w.ask(f"{i:04x}c0ffee{i * 7919:06x}.cdn.example.test").rcode() == \
                    dns.rcode.NXDOMAIN
            found = agent.wait_for_incidents(1, timeout=5.0,
                                             query=Query(min_severity="high"))
        (inc,) = found
        assert (inc.dst, inc.rule, inc.proto) == ("*.cdn.example.test", "dns:allow:api", "dns")
        assert "dns-tunneling" in {c.signature for c in inc.classifications}
        assert inc.process is not None and inc.count >= 1
        assert w.upstream_queries("0001c0ffee001eef.cdn.example.test") == 1


def test_the_agent_restarts_a_dead_resolver_and_reloads_a_policy(topology: Topology) -> None:
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        policy = topology.write_policy(POLICY)
        opts = AgentOptions(policy=policy, state_dir=topology.state_dir, netns=topology.server)
        with AgentHandle(opts) as agent:
            _wait_for_resolver(w)
            handle = agent.running.dns
            assert handle is not None
            first = handle.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            deadline = time.monotonic() + 20
            while handle.pid in (None, first):
                assert time.monotonic() < deadline, "no new resolver process"
                time.sleep(0.1)
            _wait_for_resolver(w)
            assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
            assert handle.stats().restarts == 1
            # a new policy: other.example.test allowed, api.example.test no longer
            new = topology.write_policy(POLICY.replace("to: [api.example.test]",
                                                       "to: [other.example.test]"))
            topology.apply(new)
            ruleset = lower(load_policy(new))
            agent.call_soon(lambda: handle.reload(ruleset))
            deadline = time.monotonic() + 10
            while w.ask("other.example.test").rcode() != dns.rcode.NOERROR:
                assert time.monotonic() < deadline, "the reload did not reach the resolver"
                time.sleep(0.05)
            assert addresses(w.ask("other.example.test")) == ["203.0.113.66"]
            assert connect(topology, "203.0.113.66", 80) == "refused"
            assert w.ask("api.example.test").rcode() == dns.rcode.REFUSED
            assert handle.pid is not None and handle.stats().restarts == 1  # no restart needed


def test_sigterm_to_the_whole_group_stops_in_order(topology: Topology) -> None:
    """systemd's stop signals every process of the unit: the resolver process must not die
    first (the agent would take that for a crash and start another while stopping)."""
    with dns_world(topology) as w:
        w.set_hosts(RECORDS, reload=False)
        w.start_dnsmasq(ttl=60)
        policy = topology.write_policy(POLICY.replace("alerts:\n  - stdout: json\n", ""))
        argv = [sys.executable, "-m", "outguard", "run", str(policy), "--netns", topology.server,
                "--state-dir", str(topology.state_dir)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            _wait_for_resolver(w, proc)
            assert addresses(w.ask("api.example.test")) == ["198.51.100.7"]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            _stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert "ended" not in stderr and "new one" not in stderr, stderr
        assert "api.example.test" in (topology.state_dir / "dns-cache.json").read_text()
