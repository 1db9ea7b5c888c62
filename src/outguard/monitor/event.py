"""The typed records that flow through the monitor, from the NFLOG decoder to the store.

decode (nflog) → BlockedPacket → attribute → Attribution → classify → Classification
→ aggregate → Incident → store / alerts. Pure data; every stage takes and returns these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class BlockedPacket:
    """One NFLOG message, decoded. `prefix` is the rule's log prefix: og:deny:<rule> | og:default."""

    time: datetime  # aware UTC; kernel timestamp when present, else receive time
    prefix: str
    family: int  # 4 or 6
    proto: str  # tcp | udp | icmp | icmpv6 | other:<n>
    src: str
    dst: str
    sport: int | None
    dport: int | None
    uid: int | None = None
    gid: int | None = None
    tcp_flags: int | None = None
    ifindex_out: int | None = None
    hook: str = "output"  # output | forward

    @property
    def rule(self) -> str:
        """`deny:<name>`, `default`, or the raw prefix if it is not one of ours."""
        if self.prefix.startswith("og:"):
            return self.prefix[3:]
        return self.prefix


@dataclass(frozen=True)
class Attribution:
    pid: int | None = None
    exe: str | None = None
    cmdline: tuple[str, ...] = ()
    user: str | None = None
    uid: int | None = None
    ppid: int | None = None
    parent_exe: str | None = None
    unit: str | None = None  # systemd unit, from the cgroup path
    cgroup: str | None = None
    container: str | None = None
    failure: str | None = None  # why attribution failed, when it did


@dataclass(frozen=True)
class Classification:
    signature: str  # id, e.g. "jndi-callback"
    title: str  # "possible JNDI callback (Log4Shell)"
    severity: str  # info | low | medium | high | critical


@dataclass
class Event:
    packet: BlockedPacket
    attribution: Attribution
    classifications: list[Classification] = field(default_factory=list)
    names: tuple[str, ...] = ()  # DNS names that resolved to dst, if known
    # False when no outguard resolver runs: then "no name behind this address" is not known
    names_known: bool = True
    feed: str | None = None  # feed name when the drop came from a feed set
