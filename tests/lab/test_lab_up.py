"""Lab: after `up`, with no policy applied, every service answers from og-lab-server, v4 and v6."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from outguard.kernel import netns
from outguard.lab import topology as t
from outguard.lab import workload

from .conftest import java_skip_reason

pytestmark = pytest.mark.lab


def in_server(argv: Sequence[str], timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(netns.exec_argv(t.SERVER_NS, argv), capture_output=True, text=True,
                          timeout=timeout, check=False)


def curl(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return in_server(["curl", "-q", "-sS", "--noproxy", "*", "--connect-timeout", "2",
                      "--max-time", "5", *extra, url])


def wait_for_line(path: Path, needle: str, timeout: float = 3.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [ln for ln in path.read_text().splitlines() if needle in ln]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


HTTP_TARGETS = [
    (lst.host, addr, lst.port)
    for lst in t.SERVICE_LISTENERS if lst.kind == "http"
    for addr in t.host(lst.host).addresses
]


def test_addresses_and_routes(lab: t.LabPaths) -> None:
    addrs = json.loads(in_server(["ip", "-j", "addr", "show", "dev", "eth0"]).stdout)[0]
    have = {f"{a['local']}/{a['prefixlen']}" for a in addrs["addr_info"]}
    assert {"192.0.2.2/24", "2001:db8::2/64"} <= have
    for family, gw in (("-4", "192.0.2.1"), ("-6", "2001:db8::1")):
        routes = json.loads(in_server(["ip", family, "-j", "route", "show", "default"]).stdout)
        assert [r["gateway"] for r in routes] == [gw]


def test_server_resolver_is_the_lab_dns(lab: t.LabPaths) -> None:
    assert (t.netns_etc_dir(t.SERVER_NS) / "resolv.conf").read_text() == t.RESOLV_CONF
    assert in_server(["cat", "/etc/resolv.conf"]).stdout == t.RESOLV_CONF


@pytest.mark.parametrize(("host", "addr", "port"), HTTP_TARGETS,
                         ids=[f"{h}-{a}-{p}" for h, a, p in HTTP_TARGETS])
def test_http_by_address(lab: t.LabPaths, host: str, addr: str, port: int) -> None:
    proc = curl(f"http://{t.url_host(addr)}:{port}/")
    assert proc.returncode == 0, proc.stderr
    if host == "mirror":
        assert 'href="Release"' in proc.stdout
    else:
        assert json.loads(proc.stdout) == {"ok": True, "service": host, "port": port}


@pytest.mark.parametrize("host", ["api", "mirror", "unlisted", "backup"])
def test_http_by_name_through_the_lab_dns(lab: t.LabPaths, host: str) -> None:
    proc = curl(f"http://{host}.example.test/", "-w", "\n%{remote_ip}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] in t.host(host).addresses


@pytest.mark.parametrize("family", ["-4", "-6"])
def test_https_verifies_with_the_lab_certificate(lab: t.LabPaths, family: str) -> None:
    proc = curl("https://api.example.test/", family, "--cacert", str(lab.tls_cert))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["port"] == 443


def dig(server: str, name: str, qtype: str) -> subprocess.CompletedProcess[str]:
    return in_server(["dig", "+time=2", "+tries=1", "+norecurse", f"@{server}", name, qtype])


@pytest.mark.parametrize("server", [t.DNS_V4, t.DNS_V6])
def test_dnsmasq_answers_the_zone_authoritatively(lab: t.LabPaths, server: str) -> None:
    for h in t.HOSTS:
        for qtype, want in (("A", h.ipv4), ("AAAA", h.ipv6)):
            out = dig(server, h.fqdn, qtype).stdout
            assert "status: NOERROR" in out and " aa" in out, out
            answers = [ln.split()[-1] for ln in out.splitlines()
                       if ln and not ln.startswith(";") and f"\t{qtype}\t" in ln]
            assert answers == ([want] if want else [])
    assert "status: NXDOMAIN" in dig(server, "nope.example.test", "A").stdout
    assert "status: REFUSED" in dig(server, "example.com", "A").stdout


def test_dnsmasq_logs_queries(lab: t.LabPaths) -> None:
    dig(t.DNS_V4, "mirror.example.test", "AAAA")
    lines = wait_for_line(lab.dnsmasq_log, "auth[AAAA] mirror.example.test from 192.0.2.2")
    assert lines, lab.dnsmasq_log.read_text()[-2000:]


def test_dnsmasq_listens_only_on_its_two_addresses(lab: t.LabPaths) -> None:
    out = netns.run(t.INET_NS, ["ss", "-Hlntu", "sport", "= :53"]).stdout
    # Columns: Netid State Recv-Q Send-Q Local Peer
    local = {(ln.split()[0], ln.split()[4].rsplit(":", 1)[0]) for ln in out.splitlines()}
    assert local == {(proto, addr) for proto in ("tcp", "udp")
                     for addr in ("192.0.2.53", "[2001:db8::53]")}


def test_access_log_records_requests(lab: t.LabPaths) -> None:
    curl("http://unlisted.example.test/logged-path")
    lines = wait_for_line(lab.access_log, "/logged-path")
    event = json.loads(lines[-1])
    assert (event["host"], event["status"], event["event"]) == ("unlisted", 404, "http-request")
    assert event["peer"] in (t.SERVER_V4, t.SERVER_V6)


@pytest.mark.parametrize("addr", t.host("attacker").addresses)
def test_ldap_listener_logs_a_bare_connect(lab: t.LabPaths, addr: str) -> None:
    def connect() -> tuple[str, int]:
        with socket.create_connection((addr, 1389), timeout=2) as s:
            name = s.getsockname()
            return str(name[0]), int(name[1])

    with netns.NetnsThread(t.SERVER_NS) as thread:
        _ip, port = thread.call(connect)
    lines = wait_for_line(lab.attacker_log, f'"peer_port": {port}')
    assert lines, lab.attacker_log.read_text()
    event = json.loads(lines[0])
    assert event["event"] == "connect" and event["service"] == "ldap"
    assert event["local"] == f"{t.url_host(addr)}:1389" and event["time"]


def test_real_jndi_lookup_reaches_the_ldap_listener(lab: t.LabPaths) -> None:
    if reason := java_skip_reason():
        pytest.skip(reason)
    workload.compile_java(lab)
    step = next(s for s in workload.demo_steps(lab) if s.key == "jndi")
    result = workload.run_step(step, workload.ns_runner())
    assert result.observed is workload.Outcome.ALLOWED, result.detail  # no policy applied
    assert "NameNotFoundException" in result.detail  # answered, not timed out
    events = [json.loads(ln) for ln in lab.attacker_log.read_text().splitlines()]
    searches = [e for e in events if e["event"] == "ldap-search" and e["peer"] == t.SERVER_V4]
    assert searches and searches[-1]["dn"] == "x"
