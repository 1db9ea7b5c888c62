"""The names a ruleset gives things in the kernel and in its answers, as value types.

Place in the data flow: `lower` and `decide` name decisions (`RuleKey`), the nftables backend
names its counters, sets and maps after them (`RuleKey.counter`, `SetName`) in our one table
(`TABLE`), the DNS resolver and the feed sync find sets by name, `plan` and `status` read
counters back. Each name is rendered and parsed here only, so that no module slices strings:

    decision key   deny:web · allow:web · default · lockdown · builtin:loopback · dns:<rule>
                   (a refused query)
    counter        deny.web · allow.web · default · lockdown  (':' is no nft identifier);
                   log.deny.web
    set / map      l_<list>_<digest12>_<4|6><a|n>   a named list's addresses (a) or networks (n)
                   f_<hash12>_<4|6>                 a rule's DNS-filled set (`dns:`)
                   m_<d|a|k>_<4|6><a|n>_<hash12>    a section's verdict map of inline addresses
                                                    (k: the allow rules a lockdown keeps)
                   p_<hash12> · c_<hash12>          shared port sets, cgroup sets
                   fl_<kind>_<hash12>               the packet path's own (per-flow log limits)

The NFLOG prefix that carries a decision key to the monitor is `events.LogPrefix`: the monitor's
records sit below this package.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

DNS_PORTS = (53, 853)  # DNS and DNS over TLS: with `dns:`, only the resolver sends to them

# Learning (`learn: true`, `outguard learn`): the kernel counts every new outbound flow in
# LEARN_COUNTER, and each flow again either in a counting set (`nftables.nft_learn`) or, one
# message per flow, in LEARN_LOGGED with LEARN_PREFIX to the group after the policy's; the
# first flow of a counting set's key is logged with LEARN_KEY_PREFIX (attribution only,
# counted in LEARN_KEYS); DNS answers the host receives go to the group after (`learn_groups`).
LEARN_COUNTER = "learn.new"
LEARN_LOGGED = "learn.logged"
LEARN_KEYS = "learn.keys"
LEARN_PREFIX = "og:learn"
LEARN_KEY_PREFIX = "og:learn-key"


def learn_groups(nflog_group: int) -> tuple[int, int]:
    """(new flows, DNS answers): the NFLOG groups of learning, next to the policy's group."""
    return (nflog_group + 1) & 0xFFFF, (nflog_group + 2) & 0xFFFF


def dns_ports(upstreams: Iterable[tuple[str, int]]) -> frozenset[int]:
    """The ports only the resolver may send to with `dns:`: DNS_PORTS and its upstreams'."""
    return frozenset((*DNS_PORTS, *(port for _addr, port in upstreams)))


class Table(NamedTuple):
    family: str
    name: str


TABLE = Table("inet", "outguard")  # the one nftables table outguard owns

Section = Literal["deny", "allow"]
# the chains the compiler fills with rules of a section: `keep` holds the allow rules a
# lockdown keeps (`nftables.nft_lockdown`)
Stage = Literal["deny", "allow", "keep"]


@dataclass(frozen=True)
class RuleKey:
    """Which decision: a rule of a section, the default, or one outguard makes itself."""

    kind: Literal["deny", "allow", "default", "lockdown", "builtin", "dns"]
    name: str = ""

    @classmethod
    def rule(cls, section: Section, name: str) -> RuleKey:
        return cls(section, name)

    @classmethod
    def parse(cls, text: str) -> RuleKey:
        """`deny:web` → RuleKey("deny", "web"); `default` → RuleKey("default"). ValueError for
        anything else."""
        if text in ("default", "lockdown"):
            return cls(text)  # type: ignore[arg-type]
        kind, sep, name = text.partition(":")
        if not sep or not name or kind not in ("deny", "allow", "builtin", "dns"):
            raise ValueError(f"{text!r} is not a decision key")
        return cls(kind, name)  # type: ignore[arg-type]

    @classmethod
    def of_counter(cls, counter: str) -> RuleKey:
        """The key of a kernel counter's name: `deny.web` → deny:web. ValueError for a counter
        that counts no decision (`log.…`)."""
        kind, sep, name = counter.partition(".")
        if counter in ("default", "lockdown"):
            return cls.parse(counter)
        if not sep or kind not in ("deny", "allow"):
            raise ValueError(f"{counter!r} is no decision's counter")
        return cls.parse(f"{kind}:{name}")

    def __str__(self) -> str:
        return self.kind if self.kind in ("default", "lockdown") else f"{self.kind}:{self.name}"

    @property
    def counter(self) -> str:
        """The nft counter this decision counts in: `deny.web`, `default`, `lockdown`."""
        return self.kind if self.kind in ("default", "lockdown") else f"{self.kind}.{self.name}"

    @property
    def log_counter(self) -> str:
        """The counter of the packets a blocking decision sent to NFLOG: `log.deny.web`."""
        return "log." + self.counter

    @property
    def logged(self) -> bool:
        """A blocking decision of the ruleset's: the default, a deny rule, the lockdown."""
        return self.kind in ("default", "deny", "lockdown")


# The socket mark of `outguard verify`'s probes ("og" 0001): the log gate lets a marked packet
# take its verdict unlogged, so a probe moves its rule's counter (what verify reads) without
# becoming an incident and an alert. Only a process with CAP_NET_ADMIN can set a mark.
PROBE_MARK = 0x6F670001

DEFAULT = RuleKey("default")  # the verdict of what no rule decides
LOCKDOWN = RuleKey("lockdown")  # what a lockdown drops (`outguard lockdown`)


def short_hash(text: str) -> str:
    """12 hex digits naming a set after what defines it."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


SetKind = Literal["l", "f", "m", "p", "c", "fl"]
_LIST = re.compile(r"l_(\w+)_([0-9a-f]{12})_([46])([an])")
_FQDN = re.compile(r"f_([0-9a-f]{12})_([46])")
_MAP = re.compile(r"m_([dak])_([46])([an])_([0-9a-f]{12})")
_SHARED = re.compile(r"(p|c)_([0-9a-f]{12})")
_FLOW = re.compile(r"fl_(\w+)_([0-9a-f]{12})")


@dataclass(frozen=True)
class SetName:
    """The name of one of our sets or maps (see the module docstring). `owner` is a list's key
    as an identifier (l_), a section's initial (m_ `d`/`a`) or a flow kind (fl_); `version` and
    `interval` say what a list set or map holds."""

    kind: SetKind
    digest: str  # 12 hex digits
    owner: str = ""
    version: int = 0
    interval: bool = False

    @classmethod
    def list_set(cls, list_key: str, digest: str, version: int, interval: bool) -> SetName:
        """A named list's set of addresses or networks of one IP version (`list:<name>`)."""
        return cls("l", digest[:12], identifier(list_key.removeprefix("list:")), version,
                   interval)

    @classmethod
    def fqdn(cls, base: str, version: int) -> SetName:
        """One IP version's set of a rule's DNS-filled addresses (`base`: `fqdn_base`)."""
        return cls.parse(f"{base}_{version}")

    @staticmethod
    def fqdn_base(section: str, rule: str, names: list[str]) -> str:
        """`f_<hash>`: new when the rule's names change (a name taken out stops at once)."""
        return "f_" + short_hash("\n".join([section, rule, *sorted(names)]))

    @classmethod
    def vmap(cls, section: Stage, version: int, interval: bool, content: str) -> SetName:
        return cls("m", short_hash(content), section[0], version, interval)

    @classmethod
    def ports(cls, content: str) -> SetName:
        return cls("p", short_hash(content))

    @classmethod
    def cgroup(cls, path: str) -> SetName:
        return cls("c", short_hash(path))

    @classmethod
    def flow(cls, kind: str, declaration: str) -> SetName:
        return cls("fl", short_hash(declaration), kind)

    @classmethod
    def parse(cls, text: str) -> SetName:
        """ValueError for a name no outguard set has."""
        if m := _LIST.fullmatch(text):
            return cls("l", m[2], m[1], int(m[3]), m[4] == "n")
        if m := _FQDN.fullmatch(text):
            return cls("f", m[1], "", int(m[2]))
        if m := _MAP.fullmatch(text):
            return cls("m", m[4], m[1], int(m[2]), m[3] == "n")
        if m := _SHARED.fullmatch(text):
            return cls(m[1], m[2])  # type: ignore[arg-type]
        if m := _FLOW.fullmatch(text):
            return cls("fl", m[2], m[1])
        raise ValueError(f"{text!r} is not the name of an outguard set")

    @classmethod
    def of(cls, text: str) -> SetName | None:
        """`parse`, or None for a name that is not ours."""
        try:
            return cls.parse(text)
        except ValueError:
            return None

    @staticmethod
    def kind_of(text: str) -> SetKind | None:
        """The kind of a name the kernel lists in our table, by its prefix when it is not quite
        ours (a set made by hand, by an older outguard): how to delete it, how to write it."""
        got = SetName.of(text)
        if got is not None:
            return got.kind
        prefix = text.partition("_")[0]
        return prefix if prefix in ("l", "f", "m", "p", "c", "fl") else None  # type: ignore[return-value]

    def __str__(self) -> str:
        if self.kind == "l":
            return f"l_{self.owner}_{self.digest}_{self.set_kind}"
        if self.kind == "f":
            return f"f_{self.digest}_{self.version}"
        if self.kind == "m":
            return f"m_{self.owner}_{self.set_kind}_{self.digest}"
        if self.kind == "fl":
            return f"fl_{self.owner}_{self.digest}"
        return f"{self.kind}_{self.digest}"

    @property
    def set_kind(self) -> str:
        """`4a`, `4n`, `6a`, `6n`: the IP version, and addresses or networks."""
        return f"{self.version}{'n' if self.interval else 'a'}"

    def of_list(self, list_key: str) -> bool:
        """Is this a set of the list with key `list_key` (`list:<name>`), of any content?"""
        return self.kind == "l" and self.owner == identifier(list_key.removeprefix("list:"))


def identifier(text: str) -> str:
    """`text` with everything but letters and digits as `_`: a part of an nft name."""
    return "".join(c if c.isalnum() else "_" for c in text)
