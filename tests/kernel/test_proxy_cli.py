"""`outguard proxy serve` as the README tells a newcomer, in a private namespace, with real
curl clients as root and as nobody, over IPv4 and IPv6, HTTP and HTTPS (CONNECT).

The namespace's /etc/hosts (`/etc/netns/NAME/hosts`, bind-mounted by `ip netns exec`) maps
the test names to documentation addresses on its lo, where a small origin serves HTTP and
HTTPS (a self-signed certificate for api.example.test). The proxy resolves through the system's
resolver (no `dns:` in this policy), binds as root and serves as outguard-proxy.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from outguard.kernel import netns as ns
from outguard.proxy.resolve import SYSTEM_TTL

pytestmark = pytest.mark.kernel

ORIGIN = r'''
import http.server, ssl, socket, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {self.headers['Host']}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-At", self.connection.getsockname()[0])
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S6(http.server.ThreadingHTTPServer): address_family = socket.AF_INET6
servers = [http.server.ThreadingHTTPServer(("198.51.100.10", 80), H), S6(("2001:db8::10", 80), H)]
for family, addr in ((http.server.ThreadingHTTPServer, "198.51.100.10"), (S6, "2001:db8::10")):
    tls = family((addr, 443), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    servers.append(tls)
for s in servers: threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''
POLICY = """
version: 1
allow:
  - name: api
    to: [api.example.test, api6.example.test]
    ports: [80, 443]
  - name: files-for-nobody
    to: [files.example.test]
    ports: [80]
    for: {user: nobody}
proxy:
  listen: ["127.0.0.1:3128", "[::1]:3128"]
"""
HOSTS = """127.0.0.1 localhost
198.51.100.10 api.example.test files.example.test other.example.test
2001:db8::10 api6.example.test
"""


Lab = tuple[str, Path, "subprocess.Popen[str]"]


@pytest.fixture
def lab(netns: str) -> Iterator[Lab]:
    # a directory the proxy's user can read after the drop (pytest's tmp_path is root's only)
    tmp_path = Path(tempfile.mkdtemp(prefix="og-proxy-test-"))
    for argv in (["ip", "addr", "add", "198.51.100.10/32", "dev", "lo"],
                 ["ip", "addr", "add", "2001:db8::10/128", "dev", "lo", "nodad"]):
        ns.run(netns, argv)
    etc = Path("/etc/netns") / netns
    etc.mkdir(parents=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        (etc / "hosts").write_text(HOSTS)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=api.example.test", "-addext",
                        "subjectAltName=DNS:api.example.test,DNS:api6.example.test",
                        "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                       check=True, capture_output=True)
        (tmp_path / "cert.pem").chmod(0o644)
        tmp_path.chmod(0o755)
        (tmp_path / "policy.yaml").write_text(POLICY)
        (tmp_path / "policy.yaml").chmod(0o644)
        origin = subprocess.Popen(ns.exec_argv(netns, [sys.executable, "-c", ORIGIN,
                                                       str(tmp_path / "cert.pem"),
                                                       str(tmp_path / "key.pem")]),
                                  stdout=subprocess.PIPE, text=True)
        procs.append(origin)
        assert origin.stdout is not None and origin.stdout.readline().strip() == "ready"
        outguard = str(Path(sys.executable).parent / "outguard")
        proxy = subprocess.Popen(ns.exec_argv(netns, [outguard, "proxy", "serve",
                                                      str(tmp_path / "policy.yaml"),
                                                      "--metrics-listen", "127.0.0.1:9128"]),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proxy)
        assert proxy.stderr is not None
        line = proxy.stderr.readline()
        assert "listening on 127.0.0.1:3128, [::1]:3128 as outguard-proxy" in line, line
        yield netns, tmp_path, proxy
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(tmp_path, ignore_errors=True)


def curl(netns: str, *args: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["curl", "-sS", "-v", "--max-time", "10", *args]
    if uid is not None:
        argv = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", *argv]
    return subprocess.run(ns.exec_argv(netns, argv), capture_output=True, text=True,
                          timeout=30, check=False)


def test_allowed_names_over_http_and_https_on_ipv4_and_ipv6(lab: Lab) -> None:
    netns, tmp, _proxy = lab
    ca = str(tmp / "cert.pem")
    for proxy in ("http://127.0.0.1:3128", "http://[::1]:3128"):
        got = curl(netns, "-x", proxy, "http://api.example.test/")
        assert got.returncode == 0 and got.stdout == "hello from api.example.test", got.stderr
        got = curl(netns, "-x", proxy, "--cacert", ca, "https://api.example.test/")
        assert got.returncode == 0 and got.stdout == "hello from api.example.test", got.stderr
        got = curl(netns, "-x", proxy, "--cacert", ca, "https://api6.example.test/")
        assert got.returncode == 0 and got.stdout == "hello from api6.example.test", got.stderr
        # HTTPS_PROXY in the environment, as services get it
        env_argv = ["env", f"https_proxy={proxy}", "curl", "-sS", "--cacert", ca,
                    "https://api.example.test/"]
        got = subprocess.run(ns.exec_argv(netns, env_argv), capture_output=True, text=True,
                             timeout=30, check=False)
        assert got.stdout == "hello from api.example.test", got.stderr


def test_an_unlisted_name_is_403_naming_the_default(lab: Lab) -> None:
    netns, tmp, _proxy = lab
    got = curl(netns, "-x", "http://127.0.0.1:3128", "http://other.example.test/")
    assert "< HTTP/1.1 403 Forbidden" in got.stderr and "< X-Outguard-Rule: default" in got.stderr
    got = curl(netns, "-x", "http://[::1]:3128", "--cacert", str(tmp / "cert.pem"),
               "https://other.example.test/")
    assert got.returncode != 0 and "< X-Outguard-Rule: default" in got.stderr
    assert "CONNECT tunnel failed, response 403" in got.stderr


def test_a_per_user_rule_nobody_allowed_root_refused(lab: Lab) -> None:
    netns, _tmp, _proxy = lab
    got = curl(netns, "-x", "http://127.0.0.1:3128", "http://files.example.test/", uid=65534)
    assert got.stdout == "hello from files.example.test", got.stderr
    got = curl(netns, "-x", "http://[::1]:3128", "http://files.example.test/", uid=65534)
    assert got.stdout == "hello from files.example.test", got.stderr
    got = curl(netns, "-x", "http://127.0.0.1:3128", "http://files.example.test/")
    assert "< HTTP/1.1 403 Forbidden" in got.stderr and "< X-Outguard-Rule: default" in got.stderr


def test_a_fronted_sni_is_refused(lab: Lab) -> None:
    """curl --connect-to: CONNECT to the allowed name, TLS to another."""
    netns, tmp, _proxy = lab
    got = curl(netns, "-x", "http://127.0.0.1:3128", "--cacert", str(tmp / "cert.pem"),
               "--connect-to", "other.example.test:443:api.example.test:443",
               "https://other.example.test/")
    assert got.returncode != 0 and "unrecognized name" in got.stderr, got.stderr


def test_sighup_reloads_the_policy_for_new_requests(lab: Lab) -> None:
    netns, tmp, proxy = lab
    url = "http://other.example.test/"
    assert "< X-Outguard-Rule: default" in curl(netns, "-x", "http://127.0.0.1:3128", url).stderr
    (tmp / "policy.yaml").write_text(POLICY.replace("api6.example.test]",
                                                    "api6.example.test, other.example.test]"))
    proxy.send_signal(signal.SIGHUP)
    assert proxy.stderr is not None
    assert "policy reloaded" in proxy.stderr.readline()
    got = curl(netns, "-x", "http://127.0.0.1:3128", url)
    assert got.stdout == "hello from other.example.test", got.stderr
    (tmp / "policy.yaml").write_text("version: 1\nallow: [{nme: x}]\n")
    proxy.send_signal(signal.SIGHUP)
    assert "reload failed, the previous policy stays" in proxy.stderr.readline()
    assert curl(netns, "-x", "http://127.0.0.1:3128", url).stdout == "hello from other.example.test"


def test_sigterm_with_open_connections_stops_cleanly(lab: Lab) -> None:
    netns, _tmp, proxy = lab
    hold = ("import socket, time; s = socket.create_connection(('127.0.0.1', 3128));"
            " s.sendall(b'CONNECT api.example.test:443 HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n');"
            " s.recv(100); print('open', flush=True); time.sleep(30)")
    holders = [subprocess.Popen(ns.exec_argv(netns, [sys.executable, "-c", hold]),
                                stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        proxy.send_signal(signal.SIGTERM)
        _out, err = proxy.communicate(timeout=20)
        assert proxy.returncode == 0
        assert "Traceback" not in err and "CancelledError" not in err, err
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def test_metrics_count_requests_by_decision_and_rule(lab: Lab) -> None:
    netns, _tmp, _proxy = lab
    for url in ("http://api.example.test/", "http://api.example.test/",
                "http://other.example.test/"):
        curl(netns, "-x", "http://127.0.0.1:3128", url)
    got = curl(netns, "http://127.0.0.1:9128/metrics")
    assert 'outguard_proxy_requests_total{decision="allowed",rule="allow:api"} 2.0' in got.stdout
    assert 'outguard_proxy_requests_total{decision="refused",rule="default"} 1.0' in got.stdout
    assert "outguard_proxy_connections 0.0" in got.stdout


def test_a_moving_address_is_followed_by_name_and_a_move_into_private_space_refused(
        lab: Lab) -> None:
    """The cloud case: the name's address changes between two requests (the system resolver
    reads the namespace's hosts file afresh); the proxy follows it by name once its
    answer's time is out (`SYSTEM_TTL`: getaddrinfo tells no TTL). When the answer moves to a
    private or loopback address, the request is refused at connect time."""
    netns, _tmp, _proxy = lab
    hosts = Path("/etc/netns") / netns / "hosts"

    def served_at() -> str:
        time.sleep(SYSTEM_TTL + 0.1)  # the proxy's last answer has expired
        got = curl(netns, "-x", "http://127.0.0.1:3128", "-D", "-", "http://api.example.test/")
        line = next((x for x in got.stdout.splitlines() if x.lower().startswith("x-served-at:")), "")
        return line.split(":", 1)[1].strip() if line else got.stdout + got.stderr

    assert served_at() == "198.51.100.10"
    hosts.write_text(HOSTS.replace("198.51.100.10 api.example.test", "198.51.100.10")
                     + "2001:db8::10 api.example.test\n")
    assert served_at() == "2001:db8::10"
    for inside in ("127.0.0.1", "10.0.0.7", "169.254.169.254", "::ffff:127.0.0.1"):
        hosts.write_text(HOSTS.replace("198.51.100.10 api.example.test", "198.51.100.10")
                         + f"{inside} api.example.test\n")
        time.sleep(SYSTEM_TTL + 0.1)
        got = curl(netns, "-x", "http://127.0.0.1:3128", "http://api.example.test/")
        assert "< X-Outguard-Rule: proxy:never-reach" in got.stderr, (inside, got.stderr)
