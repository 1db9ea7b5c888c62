"""The typed records that cross the layers: the monitor's from the NFLOG decoder to the store,
severities, and the feeds' alerts.

decode (kernel.nflog_decode) → BlockedPacket → attribute → Attribution → classify →
Classification → aggregate → Incident → store / alerts. A feed update that is refused or fails
says so in a FeedAlert (feeds → the CLI, the agent's sinks). Pure data at the bottom of the
layers (it imports nothing of outguard): every stage takes and returns these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")


def severity_rank(severity: str) -> int:
    """0 (info) .. 4 (critical); unknown severities rank as info."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


# The NFLOG prefix of a logged decision: `og:<decision key>[ <word>]`, the word saying what the
# kernel does with the packet: none for drop, "reject", "audit" (logged, accepted). The kernel
# writes it (`nftables.nft_verdict`), the resolver's events too for a refused query
# (`og:dns:<rule>`, `monitor.dns_incidents`); the monitor reads it back here. Written and read
# only by `render_prefix` and `parse_prefix`.
PREFIX = "og:"
_WORDS = {"drop": "", "reject": "reject", "accept": "audit"}  # the kernel's verdict → its word
DROPPED, REJECTED, LOGGED_ONLY, REFUSED = "dropped", "rejected", "logged-only", "refused"
_ACTIONS = {"": DROPPED, "reject": REJECTED, "audit": LOGGED_ONLY}
_PARSED: dict[str, tuple[str, str | None]] = {}  # prefix → (rule, action); few prefixes exist


def render_prefix(key: str, verdict: Literal["drop", "reject", "accept"]) -> str:
    """The NFLOG prefix of decision `key` (`deny:x`, `default`, `dns:x`) whose packet gets
    `verdict`: `og:deny:x`, `og:default reject`, `og:deny:x audit` (audit mode: accepted)."""
    word = _WORDS[verdict]
    return f"{PREFIX}{key} {word}" if word else f"{PREFIX}{key}"


def parse_prefix(prefix: str) -> tuple[str, str | None]:
    """(rule, action) of an NFLOG prefix: `og:deny:x reject` → ("deny:x", "rejected"). The rule
    of a prefix that is not outguard's is the prefix; its action is unknown (None). A refused
    DNS query (`og:dns:<rule>`, from the resolver) or proxy request (`og:proxy:<rule>`) is
    "refused", or "logged-only" in audit."""
    got = _PARSED.get(prefix)
    if got is not None:
        return got
    if not prefix.startswith(PREFIX):
        got = (prefix, None)
    else:
        rule, _sep, word = prefix[len(PREFIX):].partition(" ")
        if rule.startswith(("dns:", "proxy:")):  # a refused query or proxy request
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
    # the kind of failure, from a fixed vocabulary (no-socket, exited, ...): a metric label
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


Key = tuple[str, int | None, str, int | None, str]  # (process, uid, dst, dport, rule)


@dataclass
class Incident:
    """The blocked packets of one flow — (process, user, destination, port, rule) — within a
    window of each other, as `monitor.aggregate` joins them: what is stored and alerted."""

    id: str
    process: str  # exe path, else argv[0], else "uid:N", else "?"
    dst: str
    dport: int | None
    rule: str
    proto: str
    signature: str
    title: str
    severity: str
    first_seen: datetime
    last_seen: datetime
    count: int = 1
    pid: int | None = None
    uid: int | None = None
    user: str | None = None
    cmdline: tuple[str, ...] = ()
    unit: str | None = None
    container: str | None = None
    names: tuple[str, ...] = ()
    feed: str | None = None
    attribution_failure: str | None = None
    classifications: list[Classification] = field(default_factory=list)
    alerts: int = 0  # alerts sent about it so far
    action: str | None = None  # what the kernel did: dropped | rejected | logged-only | refused
    ppid: int | None = None
    parent: str | None = None  # the parent process's exe

    @property
    def key(self) -> Key:
        return (self.process, self.uid, self.dst, self.dport, self.rule)

    def to_json(self) -> dict[str, Any]:
        """The form alerts, `events --json` and the webhook body share."""
        return {
            "id": self.id, "severity": self.severity, "signature": self.signature,
            "title": self.title, "count": self.count,
            "first_seen": self.first_seen.isoformat(), "last_seen": self.last_seen.isoformat(),
            "process": {"exe": self.process, "pid": self.pid, "uid": self.uid, "user": self.user,
                        "cmdline": list(self.cmdline), "unit": self.unit,
                        "container": self.container, "ppid": self.ppid, "parent": self.parent,
                        "attribution_failure": self.attribution_failure},
            "dst": self.dst, "dport": self.dport, "proto": self.proto, "rule": self.rule,
            "action": self.action,
            "names": list(self.names), "feed": self.feed,
            "classifications": [{"signature": c.signature, "title": c.title,
                                 "severity": c.severity} for c in self.classifications],
        }


@dataclass(frozen=True)
class FeedAlert:
    """A feed update refused, entries removed, a fetch or a sync that failed (`feeds`)."""

    severity: Literal["error", "warning", "info"]
    feed: str
    kind: str  # refused | removed | bad-lines | fetch-failed | sync-failed | round-failed
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.severity}: feed {self.feed}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LearnedFlow:
    """One learned outbound flow, aggregated (issue 16): what `outguard learn` records, `flows`
    lists, and `suggest` and `simulate` read. The key is (exe, user, unit, container, dst, port,
    proto); `count`, `first_seen`, `last_seen` and `names` aggregate over it.

    `names`: every DNS name seen answering with `dst` (the resolver's, or a passive copy of the
    host's DNS answers), lower-case, no trailing dot. `decision`: what the policy in force when
    it was last seen decided ("allow:<rule>", "deny:<rule>", "default", "builtin:<what>", or ""
    with no policy). `signature`/`severity`: the classifier's verdict when it is medium or worse
    (a flow that must never be suggested as allowed), else None."""

    exe: str | None  # the process's executable ("uid:N" when it could not be attributed)
    cmdline: tuple[str, ...]  # one example command line
    user: str | None
    uid: int | None
    unit: str | None  # systemd unit
    cgroup: str | None
    container: str | None
    dst: str  # the destination address, canonical text
    port: int | None  # None for ICMP and other protocols
    proto: str  # tcp | udp | icmp | other
    names: tuple[str, ...]
    count: int
    first_seen: datetime  # aware UTC
    last_seen: datetime
    decision: str = ""
    signature: str | None = None
    severity: str | None = None

    @property
    def key(self) -> tuple[str | None, str | None, str | None, str | None, str, int | None, str]:
        """The aggregation key: (exe, user, unit, container, dst, port, proto)."""
        return (self.exe, self.user, self.unit, self.container, self.dst, self.port, self.proto)

    def to_json(self) -> dict[str, Any]:
        """The JSON form `outguard flows --json` prints and `--flows FILE` reads (one object a
        line): times as ISO 8601 UTC, tuples as lists."""
        out = asdict(self)
        out["cmdline"] = list(self.cmdline)
        out["names"] = list(self.names)
        out["first_seen"] = self.first_seen.isoformat()
        out["last_seen"] = self.last_seen.isoformat()
        return out

    @classmethod
    def from_json(cls, data: Any) -> LearnedFlow:
        """The flow `to_json` wrote; ValueError naming the field when `data` is not one."""
        if not isinstance(data, dict):
            raise ValueError("a flow must be a JSON object")
        try:
            first = _aware(datetime.fromisoformat(str(data["first_seen"])))
            last = _aware(datetime.fromisoformat(str(data["last_seen"])))
            port = data.get("port")
            count = data["count"]
            if port is not None and not (isinstance(port, int) and 0 <= port <= 65535):
                raise ValueError(f"port: {port!r} is not 0..65535")
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"count: {count!r} is not a positive integer")
            uid = data.get("uid")
            return cls(
                exe=_opt_str(data.get("exe")),
                cmdline=tuple(str(a) for a in data.get("cmdline") or ()),
                user=_opt_str(data.get("user")),
                uid=int(uid) if uid is not None else None,
                unit=_opt_str(data.get("unit")),
                cgroup=_opt_str(data.get("cgroup")),
                container=_opt_str(data.get("container")),
                dst=str(data["dst"]),
                port=port,
                proto=str(data["proto"]),
                names=tuple(str(n) for n in data.get("names") or ()),
                count=count,
                first_seen=first,
                last_seen=last,
                decision=str(data.get("decision") or ""),
                signature=_opt_str(data.get("signature")),
                severity=_opt_str(data.get("severity")),
            )
        except KeyError as exc:
            raise ValueError(f"a flow needs {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a flow: {exc}") from None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _aware(moment: datetime) -> datetime:
    # A time without an offset is taken as UTC: what a hand-written flows file means.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
