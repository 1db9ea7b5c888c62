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

from outguard.monitor.runner import AgentHandle, AgentOptions
from tests.kernel.dnsenv import UPSTREAM, DnsWorld, addresses, connect, dns_world
from tests.kernel.topology import Topology

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
