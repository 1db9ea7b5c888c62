"""The backend-neutral intermediate form of a policy: what every backend compiles from.

`lower` produces it from a `Policy` (lists expanded, host names resolved, users resolved to ids,
expired rules dropped); `decide` evaluates it; `nft` (and later iptables, ufw, cloud exporters)
translate it. Destinations are grouped in `Sources`: a rule's own inline destinations, or a named
list shared by every rule that refers to it, so that a big list is one kernel set, loaded once.
"""

from __future__ import annotations

import hashlib
import os.path
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Literal, Protocol, runtime_checkable

from outguard.policy.addresses import AddrSet
from outguard.policy.dnsconf import DEFAULT_USER, DnsConfig, parse_endpoint
from outguard.policy.targets import Target
from outguard.ruleset.keys import RuleKey

Section = Literal["deny", "allow"]
Proto = Literal["tcp", "udp", "icmp", "any"]


@dataclass(frozen=True)
class Elements:
    """Canonical destination texts of one source, by kind."""

    v4: tuple[str, ...] = ()
    v6: tuple[str, ...] = ()
    v4_nets: tuple[str, ...] = ()
    v6_nets: tuple[str, ...] = ()

    @classmethod
    def of(cls, targets: list[Target], resolved: dict[str, list[Target]]) -> Elements:
        v4: dict[str, None] = {}
        v6: dict[str, None] = {}
        n4: dict[str, None] = {}
        n6: dict[str, None] = {}
        for target in targets:
            for item in resolved.get(target.value, []) if target.kind == "host" else [target]:
                if item.kind == "addr":
                    (v4 if item.version == 4 else v6)[item.value] = None
                elif item.kind == "net":
                    (n4 if item.version == 4 else n6)[item.value] = None
        return cls(tuple(v4), tuple(v6), tuple(n4), tuple(n6))

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6 or self.v4_nets or self.v6_nets)

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.v4, self.v6, self.v4_nets, self.v6_nets):
            h.update("\n".join(part).encode())
            h.update(b"\0")
        return h.hexdigest()

    def addrset(self) -> AddrSet:
        out = AddrSet()
        for text in self.v4 + self.v6:
            out.add_text(text)
        for text in self.v4_nets:
            out.add(Target("net", text, 4))
        for text in self.v6_nets:
            out.add(Target("net", text, 6))
        return out


class IntContent(Protocol):
    """A big list as integers (a feed's `FeedSet`): per IP version, sorted single addresses and
    sorted disjoint closed ranges. Apply loads such sets over netlink, not as JSON."""

    def singles(self, version: int) -> list[int]: ...

    def ranges(self, version: int) -> list[tuple[int, int]]: ...


@dataclass
class Source:
    """A named group of destinations. Its elements are computed only when someone asks: a list
    whose kernel set already exists with the same digest is never parsed on re-apply."""

    key: str  # "list:<name>" for named lists, "rule:<section>:<name>" for inline destinations
    digest: str
    _elements: Callable[[], Elements] = field(repr=False)

    @cached_property
    def elements(self) -> Elements:
        return self._elements()

    @cached_property
    def addrset(self) -> AddrSet:
        return self.elements.addrset()

    @property
    def is_list(self) -> bool:
        return self.key.startswith("list:")

    known_kinds: frozenset[str] | None = None  # e.g. {"4a", "6n"}, remembered from an earlier apply
    # a feed: its content as integers, read only when a new set needs it (`elements` then
    # stays unread: the kernel sets are filled from these)
    bulk: Callable[[], IntContent] | None = field(default=None, repr=False)

    @property
    def kinds(self) -> frozenset[str]:
        """Which kernel sets this source fills: 4a, 4n, 6a, 6n (addresses, networks)."""
        if self.known_kinds is not None:
            return self.known_kinds
        el = self.elements
        found = zip(("4a", "4n", "6a", "6n"), (el.v4, el.v4_nets, el.v6, el.v6_nets), strict=True)
        return frozenset(kind for kind, items in found if items)


@runtime_checkable
class OwnSource(Protocol):
    """A policy list that makes its own `Source`: a threat feed (`feeds.policy.FeedList`), whose
    content comes as integers (`Source.bulk`) and fills all four kinds of set."""

    def source(self, key: str) -> Source: ...


@dataclass(frozen=True)
class Match:
    """Everything a rule checks besides the destination address."""

    proto: Proto = "any"
    ports: tuple[tuple[int, int], ...] = ()
    uid: int | None = None
    gid: int | None = None
    cgroup: str | None = None
    cgroup_level: int = 0
    until: datetime | None = None  # aware UTC; the kernel checks it too (`meta time`)


@dataclass(frozen=True)
class IRRule:
    section: Section
    index: int  # position within its section, as written
    name: str
    match: Match
    inline: str | None  # key of the rule's own Source, if it has inline addresses
    lists: tuple[str, ...]  # keys of list Sources it refers to
    any_destination: bool  # no `to`: every destination
    names: tuple[str, ...] = ()  # host names as written (a DNS answer for them is allowed)
    wildcards: tuple[str, ...] = ()  # "*.example.test"
    comment: str | None = None
    fqdn_set: str | None = None  # with `dns:`: base name of the sets the resolver fills (f_<hash>)

    @property
    def key(self) -> RuleKey:
        return RuleKey.rule(self.section, self.name)

    @property
    def counter(self) -> str:
        """The decision key as text: `deny:<name>`, `allow:<name>`."""
        return str(self.key)


@dataclass(frozen=True)
class DnsSettings:
    """The `dns:` section ready for the resolver and the compiler."""

    listen: tuple[str, int]
    upstreams: tuple[tuple[str, int], ...]
    min_ttl: int
    grace: int
    unlisted: Literal["refused", "nxdomain"]
    # the resolver's uid and gid; None while the default user does not exist yet (`apply`,
    # `run` and `dns serve` create it: `dns.user.ensure`)
    uid: int | None
    timeout: float
    blocklists: tuple[str, ...]  # absolute paths
    user: str = DEFAULT_USER  # as the policy names it (a name, or a uid as text)
    gid: int | None = None
    tunnel_names_per_minute: int = 100

    @classmethod
    def of(cls, config: DnsConfig, uid: int | None, base_dir: str | None = None,
           gid: int | None = None) -> DnsSettings:
        def absolute(path: str) -> str:
            return path if os.path.isabs(path) or base_dir is None else os.path.join(base_dir, path)

        return cls(parse_endpoint(config.listen), tuple(parse_endpoint(u) for u in config.upstreams),
                   config.min_ttl, config.grace, config.unlisted, uid, config.timeout,
                   tuple(absolute(p) for p in config.blocklists), str(config.user),
                   gid if gid is not None else uid, config.tunnel_names_per_minute)

    def set_timeout(self, ttl: int) -> int:
        """Seconds a kernel set entry lives for an answer with this TTL."""
        return max(ttl, self.min_ttl) + self.grace


@dataclass(frozen=True)
class ProxySettings:
    """The kernel's part of the `proxy:` section: who the proxy is, and which of other users'
    connections must go through it (`only_egress`: dropped; `transparent`: redirected)."""

    user: str  # as the policy names it
    uid: int | None  # None while the default user does not exist yet (apply creates it)
    only_egress: tuple[int, ...] = ()  # tcp ports only the proxy's uid may send to
    transparent: tuple[int, ...] = ()  # tcp ports whose connections are redirected to it
    transparent_port: int = 3129  # where they arrive, on 127.0.0.1 and ::1

    @property
    def kernel_rules(self) -> bool:
        """Does the ruleset hold rules about the proxy's uid?"""
        return bool(self.only_egress or self.transparent)

    @property
    def own_ports(self) -> tuple[int, ...]:
        """The ports the proxy's own connections go to without the allow rules: it decided
        them by name, and the kernel's addresses of a name may be older than the proxy's."""
        return tuple(sorted({*self.only_egress, *self.transparent}))


@dataclass
class Ruleset:
    mode: Literal["enforce", "audit"]
    default_action: Literal["drop", "reject"]
    nflog_group: int
    log_rate: tuple[int, str]
    forward: bool
    sources: dict[str, Source]
    deny: tuple[IRRule, ...]
    allow: tuple[IRRule, ...]
    policy_digest: str = ""
    resolved: dict[str, tuple[str, ...]] = field(default_factory=dict)  # host name → addresses
    dns: DnsSettings | None = None  # the policy's `dns:` section: names go to resolver-filled sets
    list_names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # list key → its names
    learn: bool = False  # log every new outbound flow and copy DNS answers (`learn: true`)
    proxy: ProxySettings | None = None  # the policy's `proxy:` section, as the kernel needs it

    def rules(self) -> tuple[IRRule, ...]:
        return self.deny + self.allow
