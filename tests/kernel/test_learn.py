"""Learning in a real kernel: every new outbound flow recorded, attributed and named, with the
kernel's count of new flows balancing the books.

The server namespace runs the agent with learning on; the peer runs dnsmasq (authoritative for
example.test) and TCP listeners. A client in the server namespace, running as `nobody`, asks
dnsmasq *directly* (`dig @upstream`: not outguard's resolver, which is not even running) and
then connects over IPv4 and IPv6: its flows must carry the names from the passive copy of the
answers, its executable and its user.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from outguard.events import LearnedFlow
from outguard.kernel.netns import NetnsThread
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.store.sqlite import SQLiteStore
from tests.kernel.dnsenv import UPSTREAM, dns_world
from tests.kernel.topology import NOBODY, Probe, Topology

pytestmark = pytest.mark.kernel

API4, API6, NTP, BLOCKED = "198.51.100.7", "2001:db8::7", "203.0.113.123", "203.0.113.66"
POLICY = f"""
version: 1
learn: true
allow:
  - name: dns
    to: [{UPSTREAM}]
    ports: [53]
  - name: api
    to: [{API4}, {API6}]
    ports: [443]
    proto: tcp
  - name: ntp
    to: [{NTP}]
    ports: [123]
    proto: udp
"""
# dig asks the upstream directly; then python connects to each address and holds the socket
CLIENT = """
import socket, subprocess, sys, time
held = []
for qtype in ("A", "AAAA"):
    out = subprocess.run(["dig", "+short", "+time=2", "+tries=1", "@" + sys.argv[1],
                          "api.example.test", qtype], capture_output=True, text=True).stdout
    for addr in out.split():
        held.append(socket.create_connection((addr, 443), timeout=2))
time.sleep(0.5)
print(len(held))
"""


@contextlib.contextmanager
def listeners(topo: Topology, *addrs: str, port: int) -> Iterator[None]:
    """TCP listeners in the peer: the kernel completes the handshakes, the sockets stay."""
    thread = NetnsThread(topo.peer)
    socks = []
    try:
        for addr in addrs:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            s = thread.call(socket.socket, fam, socket.SOCK_STREAM)
            s.bind((addr, port))
            s.listen(64)
            socks.append(s)
        yield
    finally:
        for s in socks:
            s.close()
        thread.close()


def run_client(topo: Topology) -> int:
    argv = ["ip", "netns", "exec", topo.server, "setpriv", f"--reuid={NOBODY}",
            f"--regid={NOBODY}", "--clear-groups", sys.executable, "-c", CLIENT, UPSTREAM]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return int(out.stdout.strip())


def udp_hold(topo: Topology, addr: str, port: int) -> None:
    def go() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((addr, port))
            s.send(b"ntp?")
            time.sleep(0.3)
    topo.thread.call(go)


def by_dst(flows: list[LearnedFlow]) -> dict[tuple[str, int | None, str], LearnedFlow]:
    return {(f.dst, f.port, f.proto): f for f in flows}


def test_learned_flows_carry_process_user_and_names_from_another_resolver(
        topology: Topology) -> None:
    with dns_world(topology) as w:
        w.set_hosts({"api.example.test": [API4, API6]}, reload=False)
        w.start_dnsmasq(ttl=60)
        topology.add_addresses(NTP, BLOCKED)
        policy = topology.write_policy(POLICY)
        opts = AgentOptions(policy=policy, state_dir=topology.state_dir, netns=topology.server)
        with listeners(topology, API4, API6, port=443), AgentHandle(opts) as agent:
            assert run_client(topology) == 2
            udp_hold(topology, NTP, 123)
            assert topology.probe([Probe(BLOCKED, 80)]) == ["timeout"]  # dropped, learned
            time.sleep(0.3)
        running = agent.running
        flows = SQLiteStore(Path(opts.store_location()), readonly=True).flows()
    got = by_dst(flows)
    python = os.path.realpath(sys.executable)
    for addr in (API4, API6):
        flow = got[(addr, 443, "tcp")]
        assert flow.exe == python, flow
        assert (flow.user, flow.uid) == ("nobody", NOBODY)
        assert flow.names == ("api.example.test",)
        assert flow.decision == "allow:api"
        assert flow.count == 1
    # dig's queries: their sockets close as the answer comes (< 1 ms here), before any
    # lookup can find them; recorded all the same, with the user NFLOG tells
    dns_flows = [f for f in flows if f.dst == UPSTREAM and f.port == 53]
    assert sum(f.count for f in dns_flows) == 2
    assert {(f.user, f.uid, f.decision) for f in dns_flows} == {("nobody", NOBODY, "allow:dns")}
    ntp = got[(NTP, 123, "udp")]
    assert (ntp.exe, ntp.user, ntp.decision) == (python, "root", "allow:ntp")
    blocked = got[(BLOCKED, 80, "tcp")]
    assert blocked.decision == "default" and blocked.exe == python
    books = running.learn_books
    assert books is not None, "the learner did not report"
    assert books["balanced"], books
    assert books["kernel_new_flows"] == books["recorded"] == sum(f.count for f in flows)
    assert books["source"]["lost"] == 0 and books["dropped"] == 0
