"""`outguard run` with a `proxy:` section: the agent starts the proxy (its child, as
outguard-proxy), refusals become incidents through the monitor's pipeline (stored with the
client's uid and user, classified, alerted), every decision is counted per rule in the metrics
and in the agent's report for `outguard status`, and a new policy applies to new requests
while an open tunnel goes on.

The agent runs in-process on its own thread (`AgentHandle`) in the server namespace of
tests/kernel/topology.py; the origin and the namespace's hosts file are the fixture of
tests/kernel/test_proxy_kernel.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from outguard.agentstate import status_lines
from outguard.kernel import netns as ns
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.store import Query
from tests.kernel.test_proxy_kernel import HOSTS, NOBODY, OTHER4, POLICY, Lab, lab

pytestmark = pytest.mark.kernel
__all__ = ["lab"]  # the fixture, shared with tests/kernel/test_proxy_kernel.py

# a client that keeps one TLS connection through a CONNECT tunnel: one request now, one more
# after a line on stdin (the agent reloads in between)
HOLDER = r'''
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n")
assert b" 200 " in s.recv(4096)
tls = ssl.create_default_context(cafile=sys.argv[1]).wrap_socket(s, server_hostname="api.example.test")
def get():
    tls.sendall(b"GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
    got = tls.recv(65536)
    while b"hello" not in got:  # the head and the body come in two writes
        more = tls.recv(65536)
        if not more:
            break  # the tunnel was closed
        got += more
    print(got.split(b"\r\n")[0].decode(), got.rsplit(b"\r\n", 1)[-1].decode(), flush=True)
get()
sys.stdin.readline()
get()
'''


# a client that asks for a name no rule allows and keeps its connection open for a while
ASKER = r'''
import socket, time
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(b"GET http://held.example.test/ HTTP/1.1\r\nHost: held.example.test\r\n\r\n")
print(s.recv(200).split(b"\r\n")[0].decode(), flush=True)
time.sleep(5)
'''


def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_run_serves_the_proxy_records_refusals_and_reloads_without_dropping_tunnels(
        lab: Lab) -> None:
    (Path("/etc/netns") / lab.topo.server / "hosts").write_text(
        HOSTS + f"{OTHER4} other.example.test\n")
    path = lab.tmp / "policy.yaml"
    path.write_text(POLICY + "alerts:\n  - stdout: json\n")
    path.chmod(0o644)
    opts = AgentOptions(policy=path, state_dir=lab.topo.state_dir, netns=lab.topo.server)
    with AgentHandle(opts) as agent:
        records = agent.running.live.proxy_records
        until(lambda: records.running)
        via = ("-x", "http://127.0.0.1:3128")
        assert lab.curl(*via, "http://api.example.test/").stdout.startswith("hello from api")
        refused = lab.curl(*via, "http://other.example.test/")
        assert "X-Outguard-Rule: default" in refused.stderr
        found = agent.wait_for_incidents(1, timeout=10, query=Query(rule="proxy:default"))
        assert len(found) == 1, agent.incidents()
        incident = found[0]
        assert (incident.dst, incident.dport, incident.uid) == ("other.example.test", 80, NOBODY)
        assert incident.user == "nobody" and incident.action == "refused"
        assert any(a.get("rule") == "proxy:default" for a in agent.alerts), agent.alerts
        # another user's client: the proxy (its own user) cannot see the process; the agent
        # (root) finds it while the client's connection is still open
        held = subprocess.Popen(ns.exec_argv(lab.topo.server, [
            "setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
            sys.executable, "-c", ASKER]), stdout=subprocess.PIPE, text=True)
        try:
            assert held.stdout is not None and "403" in held.stdout.readline()
            found = agent.wait_for_incidents(1, timeout=10, query=Query(rule="proxy:default",
                                                                        process="python"))
            assert [(i.dst, i.uid, i.pid) for i in found] == [
                ("held.example.test", NOBODY, held.pid)], agent.incidents()
        finally:
            held.kill()
            held.wait()
        metrics = agent.running.metrics
        assert metrics.value("outguard_proxy_requests_total", decision="allowed",
                             rule="allow:api") == 1
        assert metrics.value("outguard_proxy_requests_total", decision="refused",
                             rule="default") == 2
        assert metrics.value("outguard_proxy_up") == 1
        report = agent.running.agent.report()
        assert report.proxy is not None and report.proxy["requests"] == {"allowed": 1,
                                                                         "refused": 2}
        lines = status_lines({}, {"pid": 1, "updated": time.time(), **report.__dict__})
        assert any("proxy: listening on 127.0.0.1:3128, [::1]:3128;" in line and
                   "requests allowed 1, refused 2" in line for line in lines), lines

        holder = subprocess.Popen(ns.exec_argv(lab.topo.server, [
            "setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
            sys.executable, "-c", HOLDER, str(lab.tmp / "cert.pem")]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline().startswith("HTTP/1.1 200 OK hello from api")
            path.write_text(POLICY.replace("[api.example.test]",
                                           "[api.example.test, other.example.test]"))
            agent.reload()
            assert agent.wait_for_reloads(1).ok == 1
            until(lambda: lab.curl(*via, "http://other.example.test/").stdout.startswith(
                "hello from other"))
            holder.stdin.write("again\n")
            holder.stdin.flush()
            assert holder.stdout.readline().startswith("HTTP/1.1 200 OK hello from api")
        finally:
            holder.kill()
            holder.wait()
        assert records.counts["allowed", "allow:api"] >= 2
    assert not records.running
