"""What the lab looks like: namespaces, addresses, host names and listeners (pure data).

Place in the data flow: the single source of truth that every other lab module reads. `netcmds`
turns it into `ip` commands, `dns` into dnsmasq's zone, `services` into listening sockets,
`probe` into readiness checks and `workload` into the demo's requests. Tests and docs rely on
these exact names and addresses, so change them only together with those.

Every address is from the documentation ranges (RFC 5737, RFC 3849) and lives only inside the
lab's own namespaces.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SERVER_NS = "og-lab-server"
"""The protected host: outguard's rules are applied here."""
INET_NS = "og-lab-inet"
"""The lab's "internet": DNS and every service host live here."""
NAMESPACES = (SERVER_NS, INET_NS)

LINK_DEV = "eth0"
"""The veth end's name in both namespaces."""

SERVER_V4 = "192.0.2.2"
SERVER_V6 = "2001:db8::2"
ROUTER_V4 = "192.0.2.1"
ROUTER_V6 = "2001:db8::1"
LINK_V4_PREFIXLEN = 24
LINK_V6_PREFIXLEN = 64

ZONE = "example.test"
DNS_V4 = "192.0.2.53"
DNS_V6 = "2001:db8::53"
DNS_TTL = 60

RUNTIME_DIR = Path("/run/outguard-lab")
NETNS_ETC_DIR = Path("/etc/netns")

Kind = Literal["http", "https", "ldap", "dns", "ntp"]


@dataclass(frozen=True)
class Host:
    """One host on the lab's internet: a name in `ZONE` and its addresses on inet's `lo`."""

    name: str
    ipv4: str
    ipv6: str | None
    role: str

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{ZONE}"

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.ipv4,) if self.ipv6 is None else (self.ipv4, self.ipv6)


@dataclass(frozen=True)
class Listener:
    """A TCP (for DNS UDP+TCP, for NTP UDP) service on every address of one host."""

    host: str
    port: int
    kind: Kind

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}/{self.kind}"


HOSTS: tuple[Host, ...] = (
    Host("dns", DNS_V4, DNS_V6, "dnsmasq, authoritative for example.test"),
    Host("api", "203.0.113.10", "2001:db8::10", "web API, HTTP 80 and HTTPS 443"),
    Host("mirror", "203.0.113.20", "2001:db8::20", "package mirror, HTTP 80"),
    Host("unlisted", "203.0.113.30", "2001:db8::30", "HTTP 80, not in the policy"),
    Host("backup", "203.0.113.12", None, "HTTP 80, allowed for user nobody only"),
    Host("ntp", "203.0.113.40", "2001:db8::40", "NTP time server, UDP 123"),
    Host("attacker", "198.51.100.66", "2001:db8:bad::66", "LDAP 1389 and HTTP 8080 (JNDI)"),
    # the cloud API of the proxy demo: cloud.example.test moves from one to the other
    Host("cloud-a", "203.0.113.50", None, "a cloud API's address (cloud.example.test), HTTP 80"),
    Host("cloud-b", "203.0.113.51", None, "the same API's next address, HTTP 80"),
)
CLOUD = f"cloud.{ZONE}"  # not a --host-record: dnsmasq reads it from `LabPaths.cloud_hosts`

LISTENERS: tuple[Listener, ...] = (
    Listener("dns", 53, "dns"),
    Listener("api", 80, "http"),
    Listener("api", 443, "https"),
    Listener("mirror", 80, "http"),
    Listener("unlisted", 80, "http"),
    Listener("backup", 80, "http"),
    Listener("ntp", 123, "ntp"),
    Listener("attacker", 1389, "ldap"),
    Listener("attacker", 8080, "http"),
    Listener("cloud-a", 80, "http"),
    Listener("cloud-b", 80, "http"),
)

SERVICE_LISTENERS: tuple[Listener, ...] = tuple(x for x in LISTENERS if x.kind != "dns")
"""What the Python services process serves (dnsmasq serves the rest)."""


def host(name: str) -> Host:
    """The host called `name` (short name, without the zone)."""
    for h in HOSTS:
        if h.name == name:
            return h
    raise KeyError(name)


def on_link_v6(address: str) -> bool:
    """True if `address` falls inside the server's on-link IPv6 prefix.

    The server then asks for it by neighbour discovery instead of routing it through inet, and
    inet must answer for it (proxy NDP) although the address sits on its `lo`.
    """
    link = ipaddress.IPv6Network(f"{ROUTER_V6}/{LINK_V6_PREFIXLEN}", strict=False)
    addr = ipaddress.ip_address(address)
    return addr.version == 6 and addr in link


def url_host(address: str) -> str:
    """An address as it is written in a URL or a `host:port` pair."""
    return f"[{address}]" if ":" in address else address


@dataclass(frozen=True)
class LabPaths:
    """The runtime files of one lab: pid files, logs, generated config, outguard's state."""

    root: Path = RUNTIME_DIR

    @property
    def services_pid(self) -> Path:
        return self.root / "services.pid"

    @property
    def services_log(self) -> Path:
        return self.root / "services.log"

    @property
    def access_log(self) -> Path:
        """JSON lines, one per HTTP request any lab web host served."""
        return self.root / "access.log"

    @property
    def attacker_log(self) -> Path:
        """JSON lines, one per connection to attacker.example.test (LDAP and HTTP)."""
        return self.root / "attacker.log"

    @property
    def dnsmasq_pid(self) -> Path:
        return self.root / "dnsmasq.pid"

    @property
    def dnsmasq_log(self) -> Path:
        """dnsmasq's own log, with one `auth[TYPE] NAME from ADDR` line per query."""
        return self.root / "dnsmasq.log"

    @property
    def cloud_hosts(self) -> Path:
        """dnsmasq's `--addn-hosts` file: where cloud.example.test points now (SIGHUP reads it
        again: the proxy demo moves the name)."""
        return self.root / "cloud.hosts"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def tls_cert(self) -> Path:
        """Self-signed certificate of api.example.test; curl's `--cacert` for HTTPS."""
        return self.tls_dir / "api.crt"

    @property
    def tls_key(self) -> Path:
        return self.tls_dir / "api.key"

    @property
    def mirror_dir(self) -> Path:
        return self.root / "mirror"

    @property
    def java_dir(self) -> Path:
        return self.root / "java"

    @property
    def state_dir(self) -> Path:
        """outguard's own `--state-dir` for the lab's server."""
        return self.root / "state"


def netns_saved_resolv_conf(ns: str) -> Path:
    """Where `outguard dns install --netns NS` keeps the resolv.conf it replaced."""
    return NETNS_ETC_DIR / f"{ns}.resolv.conf.outguard-saved"


def netns_etc_dir(ns: str) -> Path:
    """The directory `ip netns exec NS` bind-mounts over `/etc`."""
    return NETNS_ETC_DIR / ns


RESOLV_CONF = f"nameserver {DNS_V4}\noptions timeout:2 attempts:2\n"
"""The server namespace's resolver: the lab DNS only."""
