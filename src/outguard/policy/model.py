"""The policy's typed model (pydantic): what a valid `policy.yaml` is.

Validation of shape and of each value lives here; checks across the document (unique names,
list references, users that exist) live in `load`. Unknown keys are errors everywhere.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    field_validator,
)

from outguard.policy.alertconf import AlertSpec
from outguard.policy.dnsconf import DnsConfig
from outguard.policy.feedconf import FeedDef
from outguard.policy.proxyconf import ProxyConfig
from outguard.policy.targets import Target, parse_target
from outguard.policy.webconf import WebConfig

RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
_RATE = re.compile(r"^\s*([1-9][0-9]{0,8})\s*/\s*(second|minute|hour|day)\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _port_range(value: Any) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a port or port range")
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", value):
        parts = [int(p) for p in value.split("-")]
        low, high = parts[0], parts[-1]
    else:
        raise ValueError(f"{value!r} is not a port or port range (e.g. 443 or 8000-8100)")
    for port in (low, high):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1-65535")
    if low > high:
        raise ValueError(f"port range {low}-{high} is reversed")
    return (low, high)


def port_overlaps(ports: list[tuple[int, int]]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Pairs of entries of one `ports` list that share a port (a duplicate counts)."""
    ordered = sorted(ports)
    out = []
    reach = ordered[0] if ordered else (0, 0)  # the entry reaching furthest so far
    for entry in ordered[1:]:
        if entry[0] <= reach[1]:
            out.append((reach, entry))
        if entry[1] > reach[1]:
            reach = entry
    return out


def merge_ports(ports: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping ranges joined, in ascending order."""
    out: list[tuple[int, int]] = []
    for low, high in sorted(ports):
        if out and low <= out[-1][1]:
            out[-1] = (out[-1][0], max(high, out[-1][1]))
        else:
            out.append((low, high))
    return out


_HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _char_name(c: str) -> str:
    return f"U+{ord(c):04X} ({unicodedata.name(c, 'unnamed')})" if c != '"' else "'\"'"


def _not_bool(value: Any) -> Any:
    # YAML's `true` is a Python bool, which pydantic would take as 1
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a boolean, not a number")
    return value


def _target(value: Any) -> Target:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not an IP address, network or host name")
    return parse_target(value)


# The schema describes what a policy file holds (json_schema_input_type), not the parsed types.
PortRange = Annotated[tuple[int, int], BeforeValidator(_port_range, json_schema_input_type=int | str)]
Dest = Annotated[Target, BeforeValidator(_target, json_schema_input_type=str)]


def _id_ref(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{value!r} is not a name or a numeric id")
    if isinstance(value, str) and (not value or any(ord(c) < 32 for c in value)):
        raise ValueError(f"{value!r} is not a user or group name")
    if isinstance(value, int) and not 0 <= value < 2**32:
        raise ValueError(f"{value} is not a valid numeric id")
    return value


# a date and time, or a date alone (midnight): both are what a policy file may hold
When = Annotated[datetime, BeforeValidator(lambda v: v, json_schema_input_type=datetime | date)]
IdRef = Annotated[str | int, PlainValidator(_id_ref, json_schema_input_type=str | int)]


class Owner(_Strict):
    """Whose traffic a rule covers (`for:`)."""

    user: IdRef | None = Field(default=None, description=(
        "Only sockets of this user (name or uid): nftables `meta skuid`."))
    group: IdRef | None = Field(default=None, description=(
        "Only sockets of this group (name or gid): nftables `meta skgid`."))
    unit: str | None = Field(default=None, description=(
        "Only processes of this systemd unit (e.g. nginx.service): its cgroup"
        " system.slice/UNIT."))
    cgroup: str | None = Field(default=None, description=(
        "Only processes in this cgroup v2 path (e.g. /system.slice/app.service); not with unit."))

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9:_.@\\-]+", value):
            raise ValueError(f"{value!r} is not a systemd unit name")
        return value

    @field_validator("cgroup")
    @classmethod
    def _cgroup(cls, value: str | None) -> str | None:
        if value is not None and (not re.fullmatch(r"[A-Za-z0-9:_.@/\\-]+", value)
                                  or ".." in value.split("/")):
            raise ValueError(f"{value!r} is not a cgroup path")
        return value


class Rule(_Strict):
    """One allow or deny rule: destinations, ports, protocol and whose traffic."""

    name: str = Field(description=(
        "Unique name (letters, digits, _ . -, at most 48): names the rule's counter and the"
        " NFLOG prefix og:deny:NAME."))
    to: list[Dest] | None = Field(default=None, description=(
        "Destinations: IPv4/IPv6 addresses and CIDRs, host names, *.wildcard names, @list and"
        " @feed:NAME references. Leave out to mean every destination."))
    ports: list[PortRange] | None = Field(default=None, description=(
        "Destination ports: 443 or \"8000-8100\". Leave out to mean every port. Overlapping"
        " entries are merged (with a warning)."))
    proto: Literal["tcp", "udp", "icmp", "any"] = Field(default="any", description=(
        "tcp, udp, icmp (ICMP and ICMPv6) or any; with ports, any means tcp and udp."))
    owner: Owner | None = Field(default=None, alias="for", description=(
        "Whose traffic: user, group, unit or cgroup (leave out: every process)."))
    comment: str | None = Field(default=None, max_length=200, description=(
        "Free text kept with the rule in the kernel (no control or format characters, no '\"')."))
    expires: When | None = Field(default=None, description=(
        "After this time the rule is gone (2026-12-31T00:00:00Z, or a date; without a zone:"
        " local time). The kernel checks it too."))

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not RULE_NAME.fullmatch(value):  # not `match`: `$` also matches before a final "\n"
            raise ValueError(f"{value!r} is not a valid rule name: letters, digits, '_', '.', '-'"
                             ", at most 48, starting with a letter or digit")
        return value

    @field_validator("to")
    @classmethod
    def _to(cls, value: list[Target] | None) -> list[Target] | None:
        if value is not None and not value:
            raise ValueError("'to' is empty: leave it out to mean every destination")
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        if value is not None and not value:
            raise ValueError("'ports' is empty: leave it out to mean every port")
        # the kernel refuses a port set whose intervals overlap ("conflicting intervals"):
        # merged here, so every consumer sees one set of ports; `load` warns about it
        return merge_ports(value) if value is not None and port_overlaps(value) else value

    @field_validator("expires")
    @classmethod
    def _expires(cls, value: datetime | None) -> datetime | None:
        # nftables' `meta time` counts int64 nanoseconds since 1970: it ends in April 2262
        if value is not None and value.year >= 2262:
            raise ValueError(f"{value.isoformat()} is too far away: expiry must be before 2262")
        if value is not None and value.tzinfo is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError(f"{value.isoformat()} is before the year 1 in UTC") from None
        return value

    @field_validator("comment")
    @classmethod
    def _comment(cls, value: str | None) -> str | None:
        # it reaches `nft list ruleset` and every log: nothing that hides or reorders text
        # (bidi overrides, zero-width and other format characters), no line breaks
        for c in value or "":
            if c == '"' or unicodedata.category(c) in _HIDDEN:
                raise ValueError(f"a comment cannot hold {_char_name(c)}: control, format and"
                                 " line-break characters and '\"' are refused")
        return value


def _file_name(value: Any) -> Any:
    if isinstance(value, str) and (not value or any(ord(c) < 32 for c in value)):
        raise ValueError(f"{value!r} is not a file name")
    return value


FileName = Annotated[str, BeforeValidator(_file_name)]


def _list_spec(value: Any) -> Any:
    return {"items": value} if isinstance(value, list) else value


class ListSpec(_Strict):
    """A named list: its entries inline, or a file of one entry per line."""

    items: list[Dest] | None = Field(default=None, description=(
        "The entries (the same as `name: [a, b]`): addresses, CIDRs, host names."))
    file: FileName | None = Field(default=None, description=(
        "A file of one address, CIDR or name per line, # comments; relative to the policy."))


ListDef = Annotated[ListSpec, BeforeValidator(_list_spec, json_schema_input_type=list[str] | ListSpec)]


class Options(_Strict):
    """How blocked traffic is handled and logged."""

    default_action: Literal["drop", "reject"] = Field(default="drop", description=(
        "What blocking does: drop, or reject (TCP reset / ICMP admin-prohibited)."))
    nflog_group: Annotated[int, BeforeValidator(_not_bool)] = Field(
        default=0, ge=0, le=65535, description="The NFLOG group blocked packets are logged to.")
    log_rate: str = Field(default="10/second", description=(
        "How many blocked packets per rule are logged: N/second, minute, hour or day."))
    forward: bool = Field(default=False, description=(
        "true: filter routed traffic (containers, VMs) the same way."))

    @field_validator("log_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        if not _RATE.match(value):
            raise ValueError(f"{value!r} is not a rate such as '10/second' (second, minute, hour, day)")
        return value

    def rate(self) -> tuple[int, str]:
        match = _RATE.match(self.log_rate)
        assert match is not None  # validated above
        return int(match.group(1)), match.group(2)


class PolicyDoc(_Strict):
    """An outguard egress policy (policy.yaml)."""

    version: Annotated[Literal[1], BeforeValidator(_not_bool)] = Field(
        description="The policy format's version: 1.")
    mode: Literal["enforce", "audit"] = Field(default="enforce", description=(
        "enforce: block what no rule allows; audit: log what would be blocked, block nothing."))
    allow: list[Rule] = Field(default_factory=list, description=(
        "Allowed outbound traffic; the first matching rule decides (after the deny rules)."))
    deny: list[Rule] = Field(default_factory=list, description=(
        "Blocked outbound traffic (logged); evaluated before allow: deny beats allow."))
    lists: dict[str, ListDef] = Field(default_factory=dict, description=(
        "Named lists of destinations, referred to as @NAME in `to`."))
    options: Options = Field(default_factory=Options, description=(
        "default_action, nflog_group, log_rate, forward."))
    feeds: dict[str, FeedDef] = Field(default_factory=dict, description=(
        "Your own threat feeds, referred to as @feed:NAME (next to the shipped registry)."))
    dns: DnsConfig | None = Field(default=None, description=(
        "outguard's DNS resolver: names are resolved through it and their addresses put in the"
        " kernel before the answer; DNS leaves only through it."))
    proxy: ProxyConfig | None = Field(default=None, description=(
        "outguard's egress proxy (`outguard proxy serve`): HTTP and CONNECT, decided by the"
        " same rules, by name and by who asks."))
    alerts: list[AlertSpec] = Field(default_factory=list, description=(
        "Where `outguard run` sends incidents: stdout, syslog, webhook, email."))
    web: WebConfig | None = Field(default=None, description=(
        "The dashboard `outguard run` serves: listen (loopback by default), tls_cert, tls_key."))
    learn: StrictBool = Field(default=False, description=(
        "Record every new outbound flow (process, user, unit, names) while enforcing, as"
        " `outguard learn` does: `outguard flows` lists them, `suggest` reads them."))
