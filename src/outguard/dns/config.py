"""The policy's `dns:` section (pydantic), and its parsed form for the resolver.

    dns:
      listen: "127.0.0.1:53"            # where clients ask (UDP and TCP)
      upstreams: ["192.0.2.53"]         # tried in order, with failover; "addr" or "addr:port"
      min_ttl: 300                      # floor of a kernel set entry's lifetime (seconds)
      unlisted: refused | nxdomain      # answer to names no rule allows (enforce mode)
      user: root                        # the resolver's uid: the only one allowed to reach upstreams
      blocklists: [domains.txt]         # hosts-file or plain lists of names answered NXDOMAIN

Lives in the `dns` package and is referred to by `policy.model.PolicyDoc.dns`; `lower` turns it
into `DnsSettings` (uid resolved, endpoints parsed) on the `Ruleset`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator

DNS_PORTS = (53, 853)


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
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (with an optional :port)") from None
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
    return value


Endpoint = Annotated[str, PlainValidator(_endpoint_text, json_schema_input_type=str)]
UserRef = Annotated[str | int, PlainValidator(_user, json_schema_input_type=str | int)]


class DnsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: Endpoint = "127.0.0.1:53"
    upstreams: list[Endpoint] = Field(min_length=1)
    min_ttl: int = Field(default=300, ge=0, le=7 * 86400)
    grace: int = Field(default=60, ge=0, le=86400)
    unlisted: Literal["refused", "nxdomain"] = "refused"
    user: UserRef = "root"
    timeout: float = Field(default=1.0, gt=0, le=30)  # per upstream attempt
    blocklists: list[str] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        addr, _ = parse_endpoint(value)
        if ipaddress.ip_address(addr).is_unspecified:
            raise ValueError(f"{value!r}: listen on one address, not on every address")
        return value


@dataclass(frozen=True)
class DnsSettings:
    """The `dns:` section ready for the resolver and the compiler."""

    listen: tuple[str, int]
    upstreams: tuple[tuple[str, int], ...]
    min_ttl: int
    grace: int
    unlisted: Literal["refused", "nxdomain"]
    uid: int
    timeout: float
    blocklists: tuple[str, ...]  # absolute paths

    @classmethod
    def of(cls, config: DnsConfig, uid: int, base_dir: str | None = None) -> DnsSettings:
        import os.path  # noqa: PLC0415

        def absolute(path: str) -> str:
            return path if os.path.isabs(path) or base_dir is None else os.path.join(base_dir, path)

        return cls(parse_endpoint(config.listen), tuple(parse_endpoint(u) for u in config.upstreams),
                   config.min_ttl, config.grace, config.unlisted, uid, config.timeout,
                   tuple(absolute(p) for p in config.blocklists))

    def set_timeout(self, ttl: int) -> int:
        """Seconds a kernel set entry lives for an answer with this TTL."""
        return max(ttl, self.min_ttl) + self.grace
