"""The typed records that flow through the monitor, from the NFLOG decoder to the store.

decode (nflog) → BlockedPacket → attribute → Attribution → classify → Classification
→ aggregate → Incident → store / alerts. Pure data; every stage takes and returns these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# What the kernel did with a packet, by the word after the rule in its NFLOG prefix
# (`compile.nft_verdict.log_prefix`): none for drop, "reject", "audit" (logged, accepted).
DROPPED, REJECTED, LOGGED_ONLY, REFUSED = "dropped", "rejected", "logged-only", "refused"
_ACTIONS = {"": DROPPED, "reject": REJECTED, "audit": LOGGED_ONLY}
_PARSED: dict[str, tuple[str, str | None]] = {}  # prefix → (rule, action); few prefixes exist


def parse_prefix(prefix: str) -> tuple[str, str | None]:
    """(rule, action) of an NFLOG prefix: `og:deny:x reject` → ("deny:x", "rejected"). The rule
    of a prefix that is not outguard's is the prefix; its action is unknown (None). A refused
    DNS query (`og:dns:<rule>`, from the resolver) is "refused", or "logged-only" in audit."""
    got = _PARSED.get(prefix)
    if got is not None:
        return got
    if not prefix.startswith("og:"):
        got = (prefix, None)
    else:
        rule, _sep, word = prefix[3:].partition(" ")
        if rule.startswith("dns:"):
            got = (rule, LOGGED_ONLY if word == "audit" else REFUSED)
        else:
            got = (rule, _ACTIONS.get(word))
    if len(_PARSED) < 4096:
        _PARSED[prefix] = got
    return got


@dataclass(frozen=True)
class BlockedPacket:
    """One NFLOG message, decoded. `prefix` is the rule's log prefix: og:deny:<rule> | og:default,
    with the action after a space unless the packet was dropped (`parse_prefix`)."""

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
        return parse_prefix(self.prefix)[0]

    @property
    def action(self) -> str | None:
        """dropped | rejected | logged-only (audit) | refused (DNS); None if not known."""
        return parse_prefix(self.prefix)[1]


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
    # the kind of failure, from a fixed vocabulary (closed, no-socket, exited, ...): a metric
    # label
    failure_kind: str | None = None


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
