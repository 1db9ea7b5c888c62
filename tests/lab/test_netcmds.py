"""Pure: the lab's topology data and the ip/sysctl/dnsmasq/openssl argv built from it."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from outguard.lab import dns, lifecycle, netcmds, runtime
from outguard.lab import topology as t

DOC_NETS = [ipaddress.ip_network(n) for n in
            ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


def test_every_lab_address_is_from_the_documentation_ranges() -> None:
    addrs = [t.SERVER_V4, t.SERVER_V6, t.ROUTER_V4, t.ROUTER_V6]
    addrs += [a for h in t.HOSTS for a in h.addresses]
    for a in addrs:
        ip = ipaddress.ip_address(a)
        assert any(ip in n for n in DOC_NETS if n.version == ip.version), a


def test_hosts_match_the_documented_topology() -> None:
    table = {h.fqdn: h.addresses for h in t.HOSTS}
    assert table == {
        "dns.example.test": ("192.0.2.53", "2001:db8::53"),
        "api.example.test": ("203.0.113.10", "2001:db8::10"),
        "mirror.example.test": ("203.0.113.20", "2001:db8::20"),
        "unlisted.example.test": ("203.0.113.30", "2001:db8::30"),
        "backup.example.test": ("203.0.113.12",),
        "ntp.example.test": ("203.0.113.40", "2001:db8::40"),
        "attacker.example.test": ("198.51.100.66", "2001:db8:bad::66"),
        "cloud-a.example.test": ("203.0.113.50",),
        "cloud-b.example.test": ("203.0.113.51",),
    }
    assert {x.label for x in t.SERVICE_LISTENERS} == {
        "api:80/http", "api:443/https", "mirror:80/http", "unlisted:80/http", "backup:80/http",
        "ntp:123/ntp", "attacker:1389/ldap", "attacker:8080/http", "cloud-a:80/http",
        "cloud-b:80/http",
    }


def test_on_link_v6() -> None:
    assert t.on_link_v6("2001:db8::10")
    assert t.on_link_v6("2001:db8::53")
    assert not t.on_link_v6("2001:db8:bad::66")
    assert not t.on_link_v6("192.0.2.53")


def test_small_builders() -> None:
    assert netcmds.addr_argv("192.0.2.2", 24, "eth0") == (
        "ip", "-4", "addr", "add", "192.0.2.2/24", "dev", "eth0")
    assert netcmds.addr_argv("2001:db8::2", 64, "eth0") == (
        "ip", "-6", "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
    assert netcmds.host_addr_argv("203.0.113.10") == (
        "ip", "-4", "addr", "add", "203.0.113.10/32", "dev", "lo")
    assert netcmds.host_addr_argv("2001:db8::10")[4] == "2001:db8::10/128"
    assert netcmds.default_route_argv("2001:db8::1", "eth0") == (
        "ip", "-6", "route", "add", "default", "via", "2001:db8::1", "dev", "eth0")
    assert netcmds.veth_argv("eth0", "eth0", "og-lab-inet") == (
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", "og-lab-inet")
    assert netcmds.sysctl_argv({"a.b": "1", "c": "0"}) == ("sysctl", "-qw", "a.b=1", "c=0")
    assert netcmds.proxy_neigh_argv("2001:db8::10", "eth0") == (
        "ip", "-6", "neigh", "add", "proxy", "2001:db8::10", "dev", "eth0")


def test_build_commands_order_and_scope() -> None:
    cmds = netcmds.build_commands()
    assert {c.ns for c in cmds} == {t.SERVER_NS, t.INET_NS}
    argvs = [c.argv for c in cmds]
    veth = argvs.index(netcmds.veth_argv("eth0", "eth0", t.INET_NS))
    # DAD is off before the veth exists (new interfaces copy `default`) ...
    assert all(a[0] == "sysctl" for a in argvs[:veth])
    # ... and both link ends come up before any address is added.
    first_addr = next(i for i, a in enumerate(argvs) if a[1:4] in (("-4", "addr", "add"),
                                                                      ("-6", "addr", "add")))
    ups = [i for i, c in enumerate(cmds) if c.argv == netcmds.link_up_argv("eth0")]
    assert len(ups) == 2 and all(veth < i < first_addr for i in ups)
    # Nothing ever runs outside the two lab namespaces or touches a firewall.
    assert not any(a[0] in ("nft", "iptables") for a in argvs)


def test_inet_gets_every_service_address_and_proxies_the_on_link_v6_ones() -> None:
    inet = [c.argv for c in netcmds.build_commands() if c.ns == t.INET_NS]
    for h in t.HOSTS:
        for a in h.addresses:
            assert netcmds.host_addr_argv(a) in inet
    proxied = {a[5] for a in inet if a[:5] == ("ip", "-6", "neigh", "add", "proxy")}
    assert proxied == {"2001:db8::53", "2001:db8::10", "2001:db8::20", "2001:db8::30",
                       "2001:db8::40"}
    sysctls = " ".join(" ".join(a) for a in inet if a[0] == "sysctl")
    assert "net.ipv6.conf.eth0.proxy_ndp=1" in sysctls
    assert "net.ipv6.conf.all.forwarding=1" in " ".join(
        " ".join(c.argv) for c in netcmds.build_commands() if c.ns == t.INET_NS)


def test_server_routes_and_addresses() -> None:
    server = [c.argv for c in netcmds.build_commands() if c.ns == t.SERVER_NS]
    assert netcmds.addr_argv("192.0.2.2", 24, "eth0") in server
    assert netcmds.addr_argv("2001:db8::2", 64, "eth0") in server
    assert netcmds.default_route_argv("192.0.2.1", "eth0") in server
    assert netcmds.default_route_argv("2001:db8::1", "eth0") in server
    assert netcmds.link_up_argv("lo") in server


def test_dnsmasq_argv() -> None:
    paths = t.LabPaths(Path("/run/x"))
    argv = dns.dnsmasq_argv(paths)
    assert argv[0] == "dnsmasq"
    for opt in ("--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--log-queries",
                "--bind-interfaces", "--pid-file=/run/x/dnsmasq.pid",
                "--log-facility=/run/x/dnsmasq.log", "--listen-address=192.0.2.53",
                "--listen-address=2001:db8::53", "--auth-zone=example.test",
                "--host-record=api.example.test,203.0.113.10,2001:db8::10",
                "--host-record=backup.example.test,203.0.113.12"):
        assert opt in argv
    assert not any(a.startswith("--server") for a in argv)  # never forwards anywhere


def test_openssl_and_services_argv() -> None:
    paths = t.LabPaths(Path("/run/x"))
    argv = runtime.openssl_argv(paths)
    assert argv[:3] == ["openssl", "req", "-x509"]
    assert "subjectAltName=DNS:api.example.test,IP:203.0.113.10,IP:2001:db8::10" in argv
    assert argv[-4:] == ["-keyout", "/run/x/tls/api.key", "-out", "/run/x/tls/api.crt"]
    assert lifecycle.services_argv(paths) == [
        sys.executable, "-m", "outguard.lab.services", "--runtime-dir", "/run/x"]
    assert lifecycle.dnsmasq_marker(paths) == "--pid-file=/run/x/dnsmasq.pid"


def test_resolv_conf_points_at_the_lab_dns_only() -> None:
    assert t.RESOLV_CONF.splitlines()[0] == "nameserver 192.0.2.53"
    assert t.RESOLV_CONF.count("nameserver") == 1
    assert t.netns_etc_dir(t.SERVER_NS) == Path("/etc/netns/og-lab-server")
