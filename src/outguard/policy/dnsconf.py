"""The policy's `dns:` section (pydantic), and its parsed form for the resolver.

    dns:
      listen: "127.0.0.1:53"            # where clients ask (UDP and TCP)
      upstreams: ["192.0.2.53"]         # tried in order, with failover; "addr" or "addr:port"
      min_ttl: 300                      # floor of a kernel set entry's lifetime (seconds)
      grace: 60                         # added to every set entry's lifetime (seconds)
      unlisted: refused | nxdomain      # answer to names no rule allows (enforce mode)
      user: outguard-dns                # the resolver's user: the only one that reaches upstreams
      timeout: 1.0                      # seconds per upstream attempt
      blocklists: [domains.txt]         # hosts-file or plain lists of names answered NXDOMAIN
      tunnel_names_per_minute: 100      # distinct names below one allowed wildcard: an incident

Referred to by `policy.model.PolicyDoc.dns`; `lower` turns it into `ruleset.ir.DnsSettings` (uid
resolved, endpoints parsed) on the `Ruleset`.

Addresses are checked here so that nothing odd reaches nftables or resolv.conf: no IPv6 scope
ids (`fe80::1%eth0` is no nft address, and a scope id is free text that could carry a newline
into resolv.conf), no IPv4-mapped IPv6 addresses (`::ffff:192.0.2.53` never matches an IPv4
packet in nftables; `[::ffff:0.0.0.0]` would listen on every IPv4 address).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator

from outguard.policy import accounts

DEFAULT_USER = "outguard-dns"  # created (useradd --system) by apply / run / dns serve if missing


def parse_endpoint(text: str, default_port: int = 53) -> tuple[str, int]:
    """"192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:53", "2001:db8::53" → (addr, port)."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not an address[:port]")
        if rest:
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p, text)
    if "%" in host:
        raise ValueError(f"{text!r}: IPv6 scope ids (%interface) are not supported; use a"
                         " global or unique-local address")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (with an optional :port)") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        raise ValueError(f"{text!r}: an IPv4-mapped IPv6 address; write the IPv4 address"
                         f" {addr.ipv4_mapped}")
    return str(addr), port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{whole!r}: port {text!r} is not in 1-65535")
    return int(text)


def _endpoint_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an address[:port] text")
    parse_endpoint(value)
    return value


def _user(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{value!r} is not a user name or uid")
    if value in (0, "root"):
        raise ValueError("the resolver must not run as root: every root process could then"
                         f" reach the upstreams directly (default: {DEFAULT_USER!r})")
    if isinstance(value, int) and not 0 < value < 2**32 - 1:
        raise ValueError(f"{value} is not a uid")
    return value


Endpoint = Annotated[str, PlainValidator(_endpoint_text, json_schema_input_type=str)]
UserRef = Annotated[str | int, PlainValidator(_user, json_schema_input_type=str | int)]


class DnsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: Endpoint = Field(default="127.0.0.1:53", description=(
        "Where clients ask, UDP and TCP: one address[:port], not every address."))
    upstreams: list[Endpoint] = Field(min_length=1, description=(
        "Servers the resolver asks, in order with failover: \"addr\" or \"addr:port\"."
        " Only the resolver's user reaches them (ports 53, 853 and theirs)."))
    min_ttl: int = Field(default=300, ge=0, le=7 * 86400, description=(
        "Floor, in seconds, of how long an answer's address stays in a rule's kernel set."))
    grace: int = Field(default=60, ge=0, le=86400, description=(
        "Seconds added to every set entry's lifetime (clients connect a little after the TTL)."))
    unlisted: Literal["refused", "nxdomain"] = Field(default="refused", description=(
        "The answer to a name no rule allows (enforce mode)."))
    user: UserRef = Field(default=DEFAULT_USER, description=(
        "The unprivileged user the resolver runs as, and the only one whose packets reach the"
        " upstreams. outguard-dns is created if missing; any other user must exist; never root."))
    timeout: float = Field(default=1.0, gt=0, le=30, description=(
        "Seconds to wait for one upstream before trying the next."))
    blocklists: list[str] = Field(default_factory=list, description=(
        "Files of names (hosts-file or one name a line) answered NXDOMAIN, with every name"
        " below them; relative to the policy file."))
    tunnel_names_per_minute: int = Field(default=100, ge=10, le=100_000, description=(
        "Distinct names below one allowed wildcard within a minute that make a DNS-tunnelling"
        " incident."))

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        addr, _ = parse_endpoint(value)
        if ipaddress.ip_address(addr).is_unspecified:
            raise ValueError(f"{value!r}: listen on one address, not on every address")
        return value


def resolver_ids(config: DnsConfig) -> tuple[int | None, int | None]:
    """The resolver's uid and gid: (None, None) while the default user is not created yet
    (`apply` creates it; `check`, `compile` and `plan` must not). KeyError for another user
    that does not exist, ValueError for one that is root under another name."""
    found = accounts.user_ids(config.user)
    if found is None:
        if config.user == DEFAULT_USER:
            return None, None
        raise KeyError(config.user)
    if found[0] == 0:
        raise ValueError(f"user {config.user!r} is uid 0: the resolver must not run as root")
    return found
