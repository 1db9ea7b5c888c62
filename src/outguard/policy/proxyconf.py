"""The policy's `proxy:` section (pydantic): outguard's egress proxy.

    proxy:
      listen: ["127.0.0.1:3128", "[::1]:3128"]   # the default
      user: outguard-proxy        # the uid it runs as after binding; created if missing; not root
      only_egress: false          # true: tcp 80/443 leave the host only from the proxy's user
      transparent: []             # [80, 443]: other users' connections to them go to the proxy
      transparent_port: 3129      # where redirected connections arrive (127.0.0.1 and ::1)
      limits:
        connections: 1024         # client connections at once; one more gets 503
        header_bytes: 16384       # a request's line and headers together
        header_timeout: 10        # seconds for a client to send a complete request head
        idle_timeout: 300         # seconds a kept-alive connection or tunnel may sit silent
        connect_timeout: 10       # seconds to connect to an upstream (per address)

Referred to by `policy.model.PolicyDoc.proxy`; `proxy.serve` reads it, and `ruleset.lower`
carries `only_egress` and `transparent` into the IR (`ProxySettings`): the kernel rules that
close the way around the proxy, or bend it into the proxy, are compiled from there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from outguard.errors import Problem
from outguard.policy import accounts
from outguard.policy.dnsconf import UserRef, parse_endpoint

DEFAULT_USER = "outguard-proxy"
DEFAULT_LISTEN = ("127.0.0.1:3128", "[::1]:3128")
TRANSPARENT_PORTS = (80, 443)
ONLY_EGRESS_PORTS = (80, 443)  # what `only_egress` closes to everyone but the proxy


class ProxyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    connections: int = Field(default=1024, ge=1, le=1_000_000, description=(
        "Client connections served at once; one more is answered 503 and closed."))
    header_bytes: int = Field(default=16384, ge=1024, le=1 << 20, description=(
        "Largest request line plus headers, in bytes (larger: 431 or 400)."))
    header_timeout: float = Field(default=10.0, gt=0, le=3600, description=(
        "Seconds a client has to send a complete request head."))
    idle_timeout: float = Field(default=300.0, gt=0, le=86400, description=(
        "Seconds a kept-alive connection or a tunnel may stay silent in both directions."))
    connect_timeout: float = Field(default=10.0, gt=0, le=300, description=(
        "Seconds to connect to one upstream address."))


class ProxyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: list[str] = Field(default_factory=lambda: list(DEFAULT_LISTEN), min_length=1,
                              description="Where clients connect: address:port entries.")
    user: UserRef = Field(default=DEFAULT_USER, description=(
        "The unprivileged user the proxy runs as after binding (outguard-proxy is created if"
        " missing; any other user must exist; never root)."))
    only_egress: bool = Field(default=False, description=(
        "Let TCP to ports 80 and 443 leave the host only from the proxy's user (a kernel rule):"
        " every other process must go through the proxy."))
    transparent: list[int] = Field(default_factory=list, description=(
        "Ports (80 for HTTP, 443 for TLS) whose outbound connections of every user but the"
        " proxy's are redirected into the proxy (nftables nat), decided by Host or TLS SNI."))
    transparent_port: int = Field(default=3129, ge=1, le=65535, description=(
        "The port on 127.0.0.1 and [::1] where redirected connections arrive."))
    limits: ProxyLimits = Field(default_factory=ProxyLimits, description=(
        "connections, header_bytes, header_timeout, idle_timeout, connect_timeout."))

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: list[str]) -> list[str]:
        for text in value:
            if not isinstance(text, str):
                raise ValueError(f"{text!r} is not an address:port text")
            addr, _port = parse_endpoint(text, default_port=3128)
            if ipaddress.ip_address(addr).is_unspecified:
                raise ValueError(f"{text!r}: listen on one address, not on every address"
                                 " (the proxy serves local clients: it finds who asks from"
                                 " their socket)")
        if len(set(value)) != len(value):
            raise ValueError("an address is listed twice")
        return value

    @field_validator("transparent")
    @classmethod
    def _transparent(cls, value: list[Any]) -> list[Any]:
        # the proxy learns the name from the bytes: a Host header on 80, a TLS server name on
        # 443; another port's protocol it could not read, so it is not redirected
        for port in value:
            if port not in TRANSPARENT_PORTS:
                raise ValueError(f"{port!r}: transparent takes 80 (HTTP) and 443 (TLS) only")
        if len(set(value)) != len(value):
            raise ValueError("a port is listed twice")
        return value

    @model_validator(mode="after")
    def _ports_apart(self) -> ProxyConfig:
        if self.transparent and any(port == self.transparent_port
                                    for _addr, port in listen_endpoints(self)):
            raise ValueError(f"transparent_port {self.transparent_port} is a `listen` port too:"
                             " redirected connections need a port of their own")
        return self


def listen_endpoints(config: ProxyConfig) -> list[tuple[str, int]]:
    return [parse_endpoint(text, default_port=3128) for text in config.listen]


def proxy_user_problem(config: ProxyConfig) -> str | None:
    """Why `proxy.user` cannot be used, or None (the missing default user is created later)."""
    found = accounts.user_ids(config.user)
    if found is None:
        return None if config.user == DEFAULT_USER else f"no user {config.user!r} on this machine"
    if found[0] == 0:
        return f"user {config.user!r} is uid 0: the proxy must not run as root"
    return None


def proxy_process_warnings(doc: Any, where: Callable[[str], tuple[int, int]],
                           source: str) -> list[Problem]:
    """Rules the proxy decides only for its own user's clients: `for: {group | unit | cgroup}`
    need the client's process, and the proxy, running as `proxy.user`, cannot read other
    users' /proc/PID/fd (a uid it always has, from sock_diag)."""
    out = []
    for section in ("deny", "allow"):
        for i, rule in enumerate(getattr(doc, section)):
            owner = rule.owner
            if owner is None or (owner.group is None and owner.unit is None
                                 and owner.cgroup is None):
                continue
            at = f"{section}[{i}].for"
            out.append(Problem(source, *where(at), at, (
                "through the proxy, a rule about the client's group, unit or cgroup needs its"
                " process, which the proxy (running as proxy.user) finds only for its own"
                " user's processes: other users' requests that this rule could match are"
                " refused (proxy:unattributed)")))
    return out
