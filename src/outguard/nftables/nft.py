"""IR → the nftables table `inet outguard`, as data (`Compiled`): counters, sets, chains, rules.

Layout, chosen so that a new connection costs a handful of lookups however many rules there are:

    output (hook)   ct established,related accept · oif lo accept · ICMPv6 ND accept
                    · [a lockdown: meta time < end jump lockdown (`nft_lockdown`)]
                    · [dns: the resolver's uid to its upstreams accept] · jump deny
                    · [dns: other DNS goto v_default] · [proxy: `nft_proxy`] · jump allow
                    · counter "default" goto v_default
    nat_output      [proxy: transparent: redirect into the proxy (`nft_proxy`)]
    deny / allow    `ip daddr vmap @m_…` for the section's inline addresses (hash map for single
                    addresses, interval map for prefixes) → goto the address's group chain;
                    then the "loose" rules in order: list references (`ip daddr @l_…`) and rules
                    for every destination
    g_<s>_<hash>    the rules that can match one address group, in policy order: first match wins
    v_deny_<rule>   counter · jump log_gate · counter "log.deny.<rule>" + NFLOG prefix
                    og:deny:<rule> · verdict (v_default the same for the default)
    log_gate        per-flow log limit: returns for a packet to log, ends with the verdict for
                    one over its flow's rate; v_reject[_first] with `default_action: reject`
                    (all three in `nftables.nft_verdict`)

Deny is evaluated before allow and each section in order, exactly as `decide` does. Sets and maps
are named after their content digest, so an unchanged list is never loaded again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from outguard.errors import ResolverUserError
from outguard.nftables import nft_learn, nft_lockdown, nft_proxy
from outguard.nftables.model import (
    ADDR,
    BASE_CHAINS,
    Compiled,
    Expr,
    NftRule,
    NftSet,
    const,
    int_elements,
    match,
    meta,
    range_elem,
)
from outguard.nftables.nft_learn import dns_copy_rules, learn_rule
from outguard.nftables.nft_lockdown import Lockdown
from outguard.nftables.nft_verdict import Verdicts
from outguard.policy.targets import text_to_int
from outguard.ruleset.intervals import merge, net_to_range, partition
from outguard.ruleset.ir import IRRule, Match, Ruleset, Section
from outguard.ruleset.keys import DEFAULT, SetName, Stage, dns_ports, short_hash

_ND_TYPES = ["nd-router-solicit", "nd-neighbor-solicit", "nd-neighbor-advert",
             "mld-listener-report", "mld2-listener-report"]


Ports = tuple[tuple[int, int], ...]
PortSetNamer = Callable[[Ports], str]
CgroupSetNamer = Callable[[str], str]


def port_items(ports: Ports) -> list[Any]:
    return [lo if lo == hi else {"range": [lo, hi]} for lo, hi in ports]


def _port_value(ports: Ports, port_set: PortSetNamer | None) -> Any:
    items = port_items(ports)
    if len(items) == 1:
        return items[0]
    # An anonymous set per rule costs libnftables ~0.25 ms to evaluate (most of a 1,000-rule
    # apply); a named set shared by every rule with the same ports costs it once.
    return f"@{port_set(ports)}" if port_set is not None else {"set": items}


def conditions(m: Match, port_set: PortSetNamer | None = None,
               cgroup_set: CgroupSetNamer | None = None) -> list[Expr]:
    """Everything but the destination address, as nftables expressions. With `cgroup_set`
    (the compiler's), a cgroup is matched through a set named for its path, which apply
    fills with the cgroup if it exists; without, by the path itself (nft then needs it to
    exist under /sys/fs/cgroup when the rule is added)."""
    out: list[Expr] = []
    if m.until is not None:
        # nft takes `meta time` as whole seconds since the epoch (UTC) and hands the kernel
        # nanoseconds itself: a number in nanoseconds here overflowed into the year 2213
        out.append(match(meta("time"), int(m.until.timestamp()), "<"))
    if m.proto in ("tcp", "udp"):
        if m.ports:
            out.append(match({"payload": {"protocol": m.proto, "field": "dport"}},
                              _port_value(m.ports, port_set)))
        else:
            out.append(match(meta("l4proto"), m.proto))
    elif m.proto == "icmp":
        out.append(match(meta("l4proto"), {"set": ["icmp", "ipv6-icmp"]}))
    elif m.ports:
        out.append(match(meta("l4proto"), {"set": ["tcp", "udp"]}))
        out.append(match({"payload": {"protocol": "th", "field": "dport"}},
                          _port_value(m.ports, port_set)))
    if m.uid is not None:
        out.append(match(meta("skuid"), m.uid))
    if m.gid is not None:
        out.append(match(meta("skgid"), m.gid))
    if m.cgroup is not None:
        out.append(match({"socket": {"key": "cgroupv2", "level": m.cgroup_level}},
                          f"@{cgroup_set(m.cgroup)}" if cgroup_set is not None else m.cgroup))
    return out


class _Builder:
    def __init__(self, rs: Ruleset, lockdown: Lockdown | None = None,
                 default: bool = True) -> None:
        self.rs, self.lockdown, self.default = rs, lockdown, default
        self.out = Compiled()
        self.verdicts = Verdicts(rs, self.out)
        # a rule is written into every group chain its addresses reach: build its tail once
        self.port_sets: dict[Ports, str] = {}
        self.tails: dict[tuple[str, int], tuple[list[Expr], list[Expr]]] = {}

    def rule_verdict(self, rule: IRRule) -> list[Expr]:
        if rule.section == "allow":
            return [{"counter": rule.key.counter}, {"accept": None}]
        name = f"v_deny_{rule.name}"
        if name not in self.out.chains:
            self.verdicts.chain(name, rule.key, [NftRule([{"counter": rule.key.counter}])])
        return [{"goto": {"target": name}}]

    def port_set(self, ports: Ports) -> str:
        if ports not in self.port_sets:
            elems = port_items(ports)
            name = str(SetName.ports(repr(elems)))
            self.out.sets[name] = NftSet(name, "inet_service", True, False, const(elems), len(elems))
            self.port_sets[ports] = name
        return self.port_sets[ports]

    def cgroup_set(self, path: str) -> str:
        name = str(SetName.cgroup(path))
        if name not in self.out.sets:
            self.out.sets[name] = NftSet(name, "cgroupsv2", False, False, const([path]),
                                         cgroup=path)
        return name

    def list_set(self, key: str, version: int, kind: str) -> str | None:
        source = self.rs.sources[key]
        key_type = ADDR[version][1]
        name = str(SetName.list_set(key, source.digest, version, kind == "n"))
        if name in self.out.sets:
            return name

        def elements() -> list[Any]:
            if bulk is not None:
                return int_elements(bulk(), version, kind == "n")
            el = source.elements
            if kind == "a":
                return list(el.v4 if version == 4 else el.v6)
            nets = el.v4_nets if version == 4 else el.v6_nets
            return [range_elem(a, b, version) for a, b in merge(net_to_range(n, version) for n in nets)]

        bulk: Callable[[], list[int] | list[tuple[int, int]]] | None = None
        if source.bulk is not None:
            content = source.bulk

            def bulk() -> list[int] | list[tuple[int, int]]:
                got = content()
                return got.singles(version) if kind == "a" else got.ranges(version)

        self.out.sets[name] = NftSet(name, key_type, kind == "n", False, elements,
                                     fixed=source.bulk is None, bulk=bulk, version=version)
        return name

    def entries(self, rule: IRRule, bare: bool) -> list[NftRule]:
        """The rule's kernel rules: `bare` when the address was already matched by a map."""
        tail_key = (rule.section, rule.index)
        if tail_key not in self.tails:
            self.tails[tail_key] = (conditions(rule.match, self.port_set, self.cgroup_set),
                                    self.rule_verdict(rule))
        cond, verdict = self.tails[tail_key]
        comment = rule.comment
        if bare or rule.any_destination:
            return [NftRule([*cond, *verdict], comment)]
        out = []
        if rule.fqdn_set is not None:
            for version in (4, 6):
                fqdn = str(SetName.fqdn(rule.fqdn_set, version))
                self.out.sets[fqdn] = NftSet(fqdn, ADDR[version][1], False, False, const([]),
                                             timeout=True)
                left = {"payload": {"protocol": ADDR[version][0], "field": "daddr"}}
                out.append(NftRule([match(left, f"@{fqdn}"), *cond, *verdict], comment))
        for key in rule.lists:
            for version in (4, 6):
                proto = ADDR[version][0]
                for kind in ("a", "n"):
                    if f"{version}{kind}" not in self.rs.sources[key].kinds:
                        continue
                    name = self.list_set(key, version, kind)
                    left = {"payload": {"protocol": proto, "field": "daddr"}}
                    out.append(NftRule([match(left, f"@{name}"), *cond, *verdict], comment))
        return out

    def section(self, section: Stage, rules: tuple[IRRule, ...]) -> None:
        if not rules:
            return
        stage = self.out.chain(section)
        loose = [r for r in rules if r.lists or r.any_destination or r.fqdn_set]
        by_index = {r.index: r for r in rules}
        groups: dict[tuple[int, ...], str] = {}

        def group_chain(owners: tuple[int, ...]) -> str:
            if owners not in groups:
                picked = set(owners) | {r.index for r in loose}
                members = [by_index[i] for i in sorted(picked)]
                name = f"g_{section[0]}_{short_hash(repr([(r.name, r.index in owners) for r in members]))}"
                groups[owners] = name
                chain = self.out.chain(name)
                for r in members:
                    chain.rules.extend(self.entries(r, bare=r.index in owners))
            return groups[owners]

        for version in (4, 6):
            proto, key_type = ADDR[version]
            singles: dict[int, set[int]] = {}
            ranges: list[tuple[int, int, int]] = []
            for r in rules:
                if r.inline is None:
                    continue
                el = self.rs.sources[r.inline].elements
                for text in el.v4 if version == 4 else el.v6:
                    singles.setdefault(text_to_int(text, version), set()).add(r.index)
                for text in el.v4_nets if version == 4 else el.v6_nets:
                    ranges.append((*net_to_range(text, version), r.index))
            segments = partition(ranges)
            map_a = [(addr, tuple(sorted(owners | {o for lo, hi, os in segments if lo <= addr <= hi
                                                  for o in os})))
                     for addr, owners in sorted(singles.items())]
            for kind, items in (("a", [(range_elem(a, a, version), o) for a, o in map_a]),
                                ("n", [(range_elem(lo, hi, version), o) for lo, hi, o in segments])):
                if not items:
                    continue
                elems = [[key, {"goto": {"target": group_chain(owners)}}] for key, owners in items]
                name = str(SetName.vmap(section, version, kind == "n", repr(elems)))
                self.out.sets[name] = NftSet(name, key_type, kind == "n", True,
                                             const(elems), len(elems), fixed=True)
                stage.rules.append(NftRule([{"vmap": {
                    "key": {"payload": {"protocol": proto, "field": "daddr"}}, "data": f"@{name}"}}]))
        for r in loose:
            stage.rules.extend(self.entries(r, bare=False))

    def hook_chain(self, name: str, hook: str) -> None:
        chain = self.out.chain(name, hook)
        # conntrack first: most packets of a connection (and 2 of the 3 a short TCP connection
        # sends) are established ones; both rules accept, so their order changes no verdict
        chain.rules.append(NftRule([match({"ct": {"key": "state"}}, ["established", "related"], "in"),
                                    {"accept": None}]))
        if hook == "output":
            chain.rules.append(NftRule([match(meta("oif"), "lo"), {"accept": None}]))
        if hook == "output":
            chain.rules.append(NftRule([match({"payload": {"protocol": "icmpv6", "field": "type"}},
                                               {"set": _ND_TYPES}), {"accept": None}],
                                       "IPv6 neighbour discovery"))
            if self.rs.learn:  # before the lockdown: what a lockdown blocks is learned too
                chain.rules.append(learn_rule(self.rs.nflog_group))
        if self.lockdown is not None:
            chain.rules.append(nft_lockdown.entry(self.lockdown))
        if not self.default:  # a lockdown with no policy applied: nothing else is filtered
            return
        proxy = self.rs.proxy if hook == "output" else None
        if proxy is not None:
            chain.rules.extend(nft_proxy.redirected_in(proxy))
        for section in ("deny", "allow"):
            if hook == "output":
                chain.rules.extend(self.dns_rules(before=section))
            if proxy is not None and section == "allow":
                chain.rules.extend(nft_proxy.own_and_only(proxy))
            if section in self.out.chains:
                chain.rules.append(NftRule([{"jump": {"target": section}}]))
        chain.rules.append(NftRule([{"counter": DEFAULT.counter}, {"goto": {"target": "v_default"}}]))

    def dns_rules(self, before: Section) -> list[NftRule]:
        """With `dns:`, DNS (53, 853) leaves only from the resolver's uid to its upstreams.

        Before deny: the resolver's own packets to its upstreams (exact address, port and uid)
        are accepted, so that no deny rule or threat feed covering an upstream can cut every
        name resolution on the host (the policy and feed checks refuse such entries too; this
        holds whatever they miss). Before allow: every other DNS packet goes to the default
        verdict (loopback, where the resolver listens, was accepted before)."""
        dns = self.rs.dns
        if dns is None:
            return []
        if dns.uid is None:
            raise ResolverUserError(f"dns.user {dns.user!r} does not exist yet: `outguard apply`"
                                    " (or `outguard run`) creates it")
        tcp_udp = match(meta("l4proto"), {"set": ["tcp", "udp"]})
        dport = {"payload": {"protocol": "th", "field": "dport"}}
        if before == "deny":
            return [NftRule([tcp_udp, match(dport, port),
                             match({"payload": {"protocol": ADDR[6 if ":" in addr else 4][0],
                                                 "field": "daddr"}}, addr),
                             match(meta("skuid"), dns.uid), {"accept": None}],
                            "dns: outguard's resolver to its upstream")
                    for addr, port in dns.upstreams]
        ports = sorted(dns_ports(dns.upstreams))
        return [NftRule([tcp_udp, match(dport, {"set": ports}), {"counter": DEFAULT.counter},
                         {"goto": {"target": "v_default"}}],
                        "dns: only through outguard's resolver")]

    def build(self) -> Compiled:
        rs = self.rs
        self.section("deny", rs.deny)
        self.section("allow", rs.allow)
        if self.default:
            self.verdicts.chain("v_default", DEFAULT, [])  # counted where it is jumped to
        for hook in BASE_CHAINS:
            if hook == "output" or (hook == "forward" and rs.forward):
                self.hook_chain(hook, hook)
        if rs.proxy is not None and self.default:
            nft_proxy.nat_chain(self.out, rs.proxy)
        if rs.learn:
            nft_learn.build(self.out, rs.nflog_group)
            self.out.chain("input", "input").rules.extend(dns_copy_rules(rs.nflog_group))
        default = DEFAULT
        self.out.counters = [default.counter] + [r.key.counter for r in rs.rules()]
        self.out.counters += list(nft_learn.COUNTERS) if rs.learn else []
        self.out.counters += [k.log_counter for k in [default, *(r.key for r in rs.deny)]]
        if not self.default:
            self.out.counters = []
        if self.lockdown is not None:
            kept = set(self.lockdown.keep)
            self.section("keep", tuple(r for r in rs.allow if r.name in kept))
            nft_lockdown.build(self.out, self.verdicts,
                               self.dns_rules(before="deny") if self.default else [])
        self.out.needs_text = any(r.match.cgroup is not None for r in rs.rules())
        return self.out


def compile_ruleset(rs: Ruleset, lockdown: Lockdown | None = None) -> Compiled:
    """The whole table for a ruleset (with `lockdown`: and the lockdown, `nft_lockdown`).
    Pure; list elements are produced only when asked for."""
    return _Builder(rs, lockdown).build()


def compile_lockdown(lockdown: Lockdown, nflog_group: int, log_rate: tuple[int, str]) -> Compiled:
    """The table of a lockdown with no policy applied: loopback, established connections and
    neighbour discovery pass, every other new connection is dropped until the lockdown ends,
    and then nothing is filtered (there is no policy to fall back to)."""
    empty = Ruleset(mode="enforce", default_action="drop", nflog_group=nflog_group,
                    log_rate=log_rate, forward=False, sources={}, deny=(), allow=())
    return _Builder(empty, lockdown, default=False).build()
