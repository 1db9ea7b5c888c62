"""The probe the cloud evaluators (aws, azure, gcp) take, and the matching helpers they share.

A probe is one outbound attempt of the protected machine: a destination address, a protocol,
a port, and the host name the client looked up (if any: it is what DNS-level firewalls see,
and what TLS SNI / HTTP Host carry to name-aware firewalls). `app` says whether the flow
speaks TLS or HTTP (what AWS Network Firewall domain lists and Azure Firewall application
rules can see); by default tcp/443 is TLS and tcp/80 is HTTP.

Each evaluator is a pure function `evaluate(files, probe) -> "allow" | "deny"` over the files
of one `Export` (file name → text), written from the vendor's documented semantics; the
module docstring of each says which.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["allow", "deny"]


@dataclass(frozen=True)
class Probe:
    dst: str
    port: int | None = None
    proto: Literal["tcp", "udp", "icmp"] = "tcp"
    name: str | None = None  # the host name the client resolved to reach dst
    app: Literal["tls", "http", "other"] | None = None  # None: from the port (443 tls, 80 http)

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.dst).version

    @property
    def layer7(self) -> str:
        if self.app is not None:
            return self.app
        if self.proto == "tcp" and self.port == 443:
            return "tls"
        if self.proto == "tcp" and self.port == 80:
            return "http"
        return "other"


def in_cidrs(addr: str, cidrs: Iterable[str]) -> bool:
    ip = ipaddress.ip_address(addr)
    for text in cidrs:
        if text in ("*", "Any", "any"):
            return True
        net = ipaddress.ip_network(text, strict=False)
        if net.version == ip.version and ip in net:
            return True
    return False


def in_port_texts(port: int | None, texts: Iterable[str]) -> bool:
    """Port specs as "80", "8000-8100" or "*"."""
    for text in texts:
        if text == "*":
            return True
        if port is None:
            continue
        lo, _, hi = str(text).partition("-")
        if int(lo) <= port <= int(hi or lo):
            return True
    return False


def name_is(name: str | None, pattern: str) -> bool:
    """Exact name, or `*.x` (any depth below x, not x itself), case-insensitive."""
    if name is None:
        return False
    name, pattern = name.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern
