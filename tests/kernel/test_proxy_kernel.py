"""The kernel around the proxy: `only_egress` closes ports 80/443 to everyone but the proxy's
user, `transparent` bends other users' connections into the proxy; real curl clients, real
`outguard apply` and `outguard proxy serve`, IPv4 and IPv6.

The topology of tests/kernel/topology.py: the policy is applied in the server namespace, the
origin (HTTP on 80, HTTPS on 443 with a certificate for api.example.test) listens in the peer
namespace on api.example.test's addresses and on a second, unnamed address (OTHER). The
server's /etc/netns/NAME/hosts names api.example.test; the proxy resolves it there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from outguard.kernel import netns as ns
from tests.kernel.topology import NOBODY, Topology

pytestmark = pytest.mark.kernel

API4, API6, OTHER4, OTHER6 = "203.0.113.10", "2001:db8:10::10", "203.0.113.20", "2001:db8:20::20"
ORIGIN = r'''
import http.server, ssl, socket, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a tunnel carries more than one request
    def do_GET(self):
        body = f"hello from {self.headers['Host']} at {self.connection.getsockname()[0]}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S6(http.server.ThreadingHTTPServer): address_family = socket.AF_INET6
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
for addr in sys.argv[3:]:
    for port in (80, 443):
        s = (S6 if ":" in addr else http.server.ThreadingHTTPServer)((addr, port), H)
        if port == 443:
            s.socket = ctx.wrap_socket(s.socket, server_side=True)
        threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''
POLICY = """version: 1
allow:
  - {name: api, to: [api.example.test], ports: [80, 443]}
proxy:
  listen: ["127.0.0.1:3128", "[::1]:3128"]
  only_egress: true
"""
PROXY_VARS = ("http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
HOSTS = f"127.0.0.1 localhost\n{API4} api.example.test\n{API6} api.example.test\n"


class Lab:
    def __init__(self, topo: Topology, tmp: Path) -> None:
        self.topo, self.tmp = topo, tmp
        self.procs: list[subprocess.Popen[str]] = []

    def start_proxy(self) -> subprocess.Popen[str]:
        outguard = str(Path(sys.executable).parent / "outguard")
        proxy = subprocess.Popen(ns.exec_argv(self.topo.server, [
            outguard, "proxy", "serve", str(self.tmp / "policy.yaml")]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proxy)
        assert proxy.stderr is not None
        line = proxy.stderr.readline()
        assert "listening on 127.0.0.1:3128" in line, line + proxy.stderr.read()
        return proxy

    def apply(self, text: str) -> None:
        path = self.tmp / "policy.yaml"
        path.write_text(text)
        path.chmod(0o644)
        self.topo.apply(path)

    def curl(self, *args: str, uid: int = NOBODY) -> subprocess.CompletedProcess[str]:
        # a client that knows no proxy: none in its environment either
        argv = ["env", *(f"--unset={v}" for v in PROXY_VARS),
                "setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
                "curl", "-sS", "-v", "--max-time", "4",
                "--cacert", str(self.tmp / "cert.pem"), *args]
        return subprocess.run(ns.exec_argv(self.topo.server, argv), capture_output=True,
                              text=True, timeout=30, check=False)


@pytest.fixture
def lab(topology: Topology) -> Iterator[Lab]:
    topology.add_addresses(API4, API6, OTHER4, OTHER6)
    tmp = Path(tempfile.mkdtemp(prefix="og-proxy-kernel-"))  # readable by the proxy's user
    etc = Path("/etc/netns") / topology.server
    etc.mkdir(parents=True)
    lab = Lab(topology, tmp)
    try:
        (etc / "hosts").write_text(HOSTS)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=api.example.test", "-addext",
                        "subjectAltName=DNS:api.example.test",
                        "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")],
                       check=True, capture_output=True)
        (tmp / "cert.pem").chmod(0o644)
        tmp.chmod(0o755)
        origin = subprocess.Popen(ns.exec_argv(topology.peer, [
            sys.executable, "-c", ORIGIN, str(tmp / "cert.pem"), str(tmp / "key.pem"),
            API4, API6, OTHER4, OTHER6]), stdout=subprocess.PIPE, text=True)
        lab.procs.append(origin)
        assert origin.stdout is not None and origin.stdout.readline().strip() == "ready"
        yield lab
    finally:
        for proc in lab.procs:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def test_only_egress_blocks_the_way_around_and_lets_the_proxy_through(lab: Lab) -> None:
    lab.apply(POLICY)
    lab.start_proxy()
    before = lab.topo.counters()
    for url in ("https://api.example.test/", "http://api.example.test/"):
        for family, proxy in (("-4", "127.0.0.1"), ("-6", "[::1]")):
            direct = lab.curl(family, url)
            assert direct.returncode == 28, direct.stderr  # dropped: the connect times out
            via = lab.curl(family, "-x", f"http://{proxy}:3128", url)
            assert via.returncode == 0, via.stderr
            assert via.stdout.startswith("hello from api.example.test at 2"), via.stdout
    assert lab.topo.counters()["default"] - before.get("default", 0) >= 4
    # an address an allow rule names is still closed on 443 to anyone but the proxy
    assert lab.curl(f"https://{API4}/", "-k").returncode == 28
    # the proxy itself refuses a name no rule allows
    assert "X-Outguard-Rule: default" in lab.curl(
        "-x", "http://127.0.0.1:3128", "http://other.example.test/").stderr


def test_transparent_curl_that_knows_no_proxy(lab: Lab) -> None:
    lab.apply(POLICY + "  transparent: [80, 443]\n")
    proxy = lab.start_proxy()
    for url in ("https://api.example.test/", "http://api.example.test/"):
        for family, at in (("-4", API4), ("-6", API6)):
            got = lab.curl(family, url)
            assert got.returncode == 0, got.stderr
            assert got.stdout == f"hello from api.example.test at {at}", got.stdout
            assert lab.curl(family, url, uid=0).returncode == 0  # root is redirected too
    # a name no rule allows: refused by the proxy (HTTP: 403; TLS: an alert)
    (Path("/etc/netns") / lab.topo.server / "hosts").write_text(
        HOSTS + f"{OTHER4} other.example.test\n")
    got = lab.curl("http://other.example.test/")
    assert "< HTTP/1.1 403" in got.stderr and "X-Outguard-Rule: default" in got.stderr
    got = lab.curl("-k", "https://other.example.test/")
    assert got.returncode != 0 and "access denied" in got.stderr.lower(), got.stderr
    # forged names: an allowed name sent to an address that is not the name's
    for target in (OTHER4, f"[{OTHER6}]"):
        got = lab.curl("--connect-to", f"api.example.test:443:{target}:443",
                       "https://api.example.test/")
        assert got.returncode != 0 and "access denied" in got.stderr.lower(), got.stderr
        got = lab.curl("-H", "Host: api.example.test", f"http://{target}/")
        assert "< HTTP/1.1 403" in got.stderr, got.stderr
        assert "X-Outguard-Rule: proxy:not-this-address" in got.stderr
    proxy.terminate()
    out, _err = proxy.communicate(timeout=10)
    assert '"decision": "refused"' in out and '"rule": "proxy:not-this-address"' in out
    assert f'"uid": {NOBODY}' in out and '"method": "TLS"' in out
