"""Classification: what a blocked packet most likely means, from signatures kept as data.

Place in the data flow: attribute → **classify** → aggregate. `Classifier.classify(event)` is
pure: it looks only at the event (packet, attribution, DNS names, feed) and returns every
matching signature as a `Classification`, most severe first, or the fallback "blocked" one.

The built-in signatures live in `signatures.yaml` (package data) so users can read, extend and
override them with files of the same format (`load_classifier(extra_files)`): a user signature
with a built-in id replaces it; `disable: [id]` removes one. The condition language is in the
YAML file's header.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from outguard.errors import OutguardError
from outguard.events import Classification, Event, Severity, severity_rank

# the title says nothing of a verdict: in audit mode nothing was blocked (the incident's action)
FALLBACK = Classification("blocked", "outbound connection outside the policy", "low")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SignatureError(OutguardError):
    """A signature file that does not load; the message names the file and the path in it."""


def _port_range(value: Any) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a port")
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str) and value.replace("-", "", 1).isdigit():
        parts = [int(p) for p in value.split("-")]
        low, high = parts[0], parts[-1]
    else:
        raise ValueError(f"{value!r} is not a port or port range such as 6660-6669")
    if not 0 <= low <= high <= 65535:
        raise ValueError(f"{value!r} is not a port range within 0-65535")
    return low, high


class When(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    process: list[str] | None = None
    not_process: list[str] | None = None
    parent: list[str] | None = None
    user: list[str | int] | None = None
    ports: list[tuple[int, int]] | None = None
    proto: Literal["tcp", "udp", "icmp", "icmpv6"] | None = None
    dst: list[Network] | None = None
    not_dst: list[Network] | None = None
    rule: list[str] | None = None
    feed: list[str] | None = None
    resolved: bool | None = None
    resolver: bool | None = None
    attributed: bool | None = None
    failure: list[str] | None = None
    any: list[When] | None = None

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("'ports' is a list of ports or ranges")
        return [_port_range(v) for v in value]

    @field_validator("dst", "not_dst", mode="before")
    @classmethod
    def _nets(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("a list of addresses or networks")
        try:
            return [ipaddress.ip_network(str(v), strict=False) for v in value]
        except ValueError as exc:
            raise ValueError(str(exc)) from exc


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    title: str = Field(min_length=1, max_length=200)
    severity: Severity
    why: str = ""
    when: When


class SignatureFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    signatures: list[Signature] = Field(default_factory=list)
    disable: list[str] = Field(default_factory=list)


def _name(path: str | None) -> str | None:
    return os.path.basename(path) if path else None


@dataclass(frozen=True)
class _Facts:
    """What the conditions look at, computed once per event."""

    process: str | None
    parent: str | None
    users: frozenset[str]
    port: int | None
    proto: str
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    rule: str
    feed: str | None
    resolved: bool | None  # None: no resolver ran, whether a name was behind dst is unknown
    resolver: bool  # outguard's resolver runs
    attributed: bool
    failure: str | None  # why attribution failed (`Attribution.failure_kind`)
    uid: int | None
    user: str | None

    @classmethod
    def of(cls, event: Event) -> _Facts:
        pkt, att = event.packet, event.attribution
        process = _name(att.exe) or (_name(att.cmdline[0]) if att.cmdline else None)
        users = {str(u) for u in (att.user, att.uid, pkt.uid) if u is not None}
        try:
            dst: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(pkt.dst)
        except ValueError:
            dst = None
        if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped is not None:
            dst = dst.ipv4_mapped
        return cls(process, _name(att.parent_exe), frozenset(users), pkt.dport, pkt.proto, dst,
                   pkt.rule, event.feed, bool(event.names) if event.names_known else None,
                   event.names_known, att.pid is not None or att.exe is not None,
                   att.failure_kind, att.uid if att.uid is not None else pkt.uid, att.user)


def _glob(value: str | None, patterns: Sequence[str]) -> bool:
    return value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _in(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None, nets: Sequence[Network]) -> bool:
    return addr is not None and any(addr.version == n.version and addr in n for n in nets)


def matches(when: When, f: _Facts) -> bool:
    checks = (
        when.process is None or _glob(f.process, when.process),
        when.not_process is None or not _glob(f.process, when.not_process),
        when.parent is None or _glob(f.parent, when.parent),
        when.user is None or bool(f.users & {str(u) for u in when.user}),
        when.ports is None or (f.port is not None
                               and any(lo <= f.port <= hi for lo, hi in when.ports)),
        when.proto is None or f.proto == when.proto,
        when.dst is None or _in(f.dst, when.dst),
        when.not_dst is None or (f.dst is not None and not _in(f.dst, when.not_dst)),
        when.rule is None or _glob(f.rule, when.rule),
        when.feed is None or _glob(f.feed, when.feed),
        when.resolved is None or (f.resolved is not None and f.resolved == when.resolved),
        when.resolver is None or f.resolver == when.resolver,
        when.attributed is None or f.attributed == when.attributed,
        when.failure is None or _glob(f.failure, when.failure),
    )
    if not all(checks):
        return False
    return when.any is None or any(matches(w, f) for w in when.any)


def _title(title: str, f: _Facts) -> str:
    """A title's `{uid}` and `{user}`: whose socket it was, when no process could be named."""
    if "{" not in title:
        return title
    return title.replace("{uid}", "?" if f.uid is None else str(f.uid)).replace(
        "{user}", f.user or "?")


class Classifier:
    def __init__(self, signatures: Iterable[Signature]) -> None:
        self.signatures = list(signatures)

    def classify(self, event: Event) -> list[Classification]:
        """Every matching signature, most severe first (file order among equals)."""
        facts = _Facts.of(event)
        found = [Classification(s.id, _title(s.title, facts), s.severity)
                 for s in self.signatures if matches(s.when, facts)]
        found.sort(key=lambda c: -severity_rank(c.severity))
        return found or [FALLBACK]


def _where(err: dict[str, Any]) -> str:
    out = ""
    for part in err["loc"]:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_signatures(text: str, source: str) -> SignatureFile:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SignatureError(f"{source}: not valid YAML: {exc}") from exc
    try:
        return SignatureFile.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e)}: {e['msg']}" for e in exc.errors())  # type: ignore[arg-type]
        raise SignatureError(f"{source}: {problems}") from exc


def builtin_text() -> str:
    return resources.files("outguard.monitor").joinpath("signatures.yaml").read_text("utf-8")


def load_classifier(extra: Sequence[Path] = ()) -> Classifier:
    """The built-in signatures, then each extra file's (same id replaces; `disable` removes)."""
    by_id: dict[str, Signature] = {}
    for text, source in [(builtin_text(), "<built-in signatures>"),
                         *((_read(p), str(p)) for p in extra)]:
        doc = parse_signatures(text, source)
        for sig in doc.signatures:
            by_id.pop(sig.id, None)  # a replacement goes where the user put it
            by_id[sig.id] = sig
        for sig_id in doc.disable:
            if by_id.pop(sig_id, None) is None:
                raise SignatureError(f"{source}: disable: no signature {sig_id!r}")
    return Classifier(by_id.values())


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except OSError as exc:
        raise SignatureError(f"cannot read signature file {path}: {exc.strerror}") from exc
