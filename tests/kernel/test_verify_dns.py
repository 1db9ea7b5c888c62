"""verify and lockdown with a `dns:` policy and the agent's resolver running: during a lockdown
the resolver still reaches its upstream while the name's address stays shut (verify: blocked by
the lockdown); after it, a name rule is probed at the address outguard's resolver gave (which put
it in the rule's set) and reached.

Real pieces: the agent in the server namespace, dnsmasq in the peer as the upstream, the
server's /etc/netns/NAME/resolv.conf pointing at the agent's resolver (what `dns install` does).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from tests.kernel.dnsenv import UPSTREAM, connect, dns_world
from tests.kernel.test_dns_run import _wait_for_resolver
from tests.kernel.topology import Topology

pytestmark = pytest.mark.kernel

API = "198.51.100.7"
POLICY = f"""
version: 1
dns:
  listen: "127.0.0.1:53"
  upstreams: ["{UPSTREAM}"]
allow:
  - name: api
    to: [api.example.test]
    ports: [80]
"""


def test_verify_and_lockdown_with_outguards_resolver(topology: Topology) -> None:
    topo = topology
    etc = Path("/etc/netns") / topo.server
    assert topo.server.startswith("ogt-") and not etc.exists()
    with dns_world(topo) as w:
        w.set_hosts({"api.example.test": [API]}, reload=False)
        w.start_dnsmasq(ttl=60)
        topo.add_addresses(API)
        etc.mkdir(parents=True)
        try:
            (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
            # the lockdown first (no policy yet): the agent's apply carries it, and the
            # resolver's first query upstream is a new flow that must get through it
            proc = topo.cli("lockdown", "--for", "10m")
            assert proc.returncode == 0, proc.stderr
            opts = AgentOptions(policy=topo.write_policy(POLICY), state_dir=topo.state_dir,
                                netns=topo.server)
            with AgentHandle(opts):
                _wait_for_resolver(w)
                assert w.upstream_queries("api.example.test") >= 1
                assert connect(topo, API, 80, timeout=0.5) == "timeout"
                assert topo.counters()["lockdown"] >= 1
                proc = topo.cli("verify", "--json", "--timeout", "1")
                assert proc.returncode == 0, proc.stdout + proc.stderr
                (api,) = [p for p in json.loads(proc.stdout)["probes"]
                          if p["subject"] == "allow:api"]
                assert (api["dst"], api["outcome"], api["blocked_by"]) == (
                    API, "blocked by outguard", "lockdown")

                proc = topo.cli("lockdown", "--off")
                assert proc.returncode == 0, proc.stderr
                proc = topo.cli("verify", "--json", "--timeout", "1")
                assert proc.returncode == 0, proc.stdout + proc.stderr
                (api,) = [p for p in json.loads(proc.stdout)["probes"]
                          if p["subject"] == "allow:api"]
                assert (api["dst"], api["outcome"]) == (API, "reached")
                assert connect(topo, API, 80) == "refused"  # reached the peer
        finally:
            shutil.rmtree(etc)
