"""`decide(ruleset, flow)`: the one definition of what a compiled policy means.

`explain` and `simulate` call it, and the kernel tests check that nftables agrees with it case by
case. Which rules name a DNS name comes from `index.DecisionIndex`, the tables the DNS resolver's
`NamePolicy` is built from, so the resolver cannot answer differently (tests/ruleset/test_index.py
proves resolver ≡ decide ≡ table over random policies). Precedence, exactly as the kernel
evaluates it: loopback (127/8, ::1 and the host's own addresses, given as `local`: the kernel's
`oif lo`) and established traffic are accepted; with `dns:`, the resolver's own queries to its
upstreams; with `proxy: {transparent}`, other users' connections to those ports (redirected
into the proxy, which decides them by name); then the first matching deny rule; then other DNS
(dropped: it must go through the resolver); with `proxy: {only_egress}`, TCP to 80/443 (the
proxy's uid: accepted, it decided by name; anyone else: the default); then the first matching
allow rule; then the default (enforce: drop or reject; audit: accept, logged).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from outguard.policy.addresses import packet_address
from outguard.ruleset.index import index_of, normalize
from outguard.ruleset.ir import IRRule, ProxySettings, Ruleset
from outguard.ruleset.keys import RuleKey, dns_ports

FlowProto = Literal["tcp", "udp", "icmp", "other"]
PROXY = "builtin:proxy"  # what the proxy sends, and what is redirected into it


@dataclass(frozen=True)
class Flow:
    """One outbound attempt. `dst` is an address; `name` alone asks about a DNS name."""

    dst: str | None = None
    port: int | None = None
    proto: FlowProto = "tcp"
    uid: int | None = None
    gid: int | None = None
    cgroup: str | None = None
    name: str | None = None
    established: bool = False


@dataclass(frozen=True)
class Decision:
    action: Literal["allow", "deny"]
    verdict: Literal["accept", "drop", "reject"]  # what the kernel does with the packet
    rule: str  # counter / log key: "deny:<name>", "allow:<name>", "default", "builtin:<what>"
    reason: str

    @property
    def logged(self) -> bool:
        return RuleKey.parse(self.rule).logged


def _name_matches(ruleset: Ruleset, rule: IRRule, name: str) -> bool:
    """Whether the rule names `name`: the ruleset's `DecisionIndex` says, the tables the
    resolver's `NamePolicy` is made of (own names, list entries, wildcards)."""
    return index_of(ruleset).names(rule, normalize(name))


def _destination(ruleset: Ruleset, rule: IRRule, flow: Flow, dst: tuple[int, int] | None) -> str | None:
    """Why the rule's destinations include the flow's, or None."""
    if rule.any_destination:
        return "it applies to every destination"
    if dst is None:
        if flow.name is not None and _name_matches(ruleset, rule, flow.name):
            return f"{flow.name} is one of its names"
        return None
    value, version = dst
    if rule.inline is not None and ruleset.sources[rule.inline].addrset.contains(value, version):
        name = index_of(ruleset).resolved_from(ruleset.resolved, rule, flow.dst)
        via = f" (resolved from {name})" if name is not None else ""
        return f"{flow.dst} is in its destinations{via}"
    for key in rule.lists:
        if ruleset.sources[key].addrset.contains(value, version):
            return f"{flow.dst} is in list @{key.split(':', 1)[1]}"
    if rule.fqdn_set is not None and flow.name is not None and \
            _name_matches(ruleset, rule, flow.name):
        return (f"{flow.dst} is an address of {flow.name}, one of its names (outguard's resolver"
                f" puts it in @{rule.fqdn_set}_{version})")
    return None


def _dns(ruleset: Ruleset, flow: Flow, dst: tuple[int, int] | None) -> Decision | None:
    """With `dns:`, DNS leaves only from the resolver's uid to its upstreams."""
    dns = ruleset.dns
    if dns is None or flow.proto not in ("tcp", "udp") or \
            flow.port not in dns_ports(dns.upstreams):
        return None
    if dns.uid is not None and flow.uid == dns.uid and dst is not None and any(
            packet_address(a) == dst and p == flow.port for a, p in dns.upstreams):
        return Decision("allow", "accept", "builtin:dns",
                        f"outguard's resolver (uid {dns.uid}) asks its upstream {flow.dst}")
    return None


def _proxy_redirect(proxy: ProxySettings, flow: Flow) -> Decision | None:
    """`transparent`: the kernel redirects other users' TCP to these ports into the proxy."""
    if flow.proto == "tcp" and flow.port in proxy.transparent and flow.uid != proxy.uid:
        return Decision("allow", "accept", PROXY,
                        f"tcp port {flow.port} is redirected into outguard's proxy (transparent),"
                        " which decides by the Host header or TLS server name")
    return None


def _proxy_only(proxy: ProxySettings, flow: Flow, blocked: Literal["accept", "drop", "reject"],
                audit: str) -> Decision | None:
    """The proxy's own connections to its ports are accepted (`only_egress`, `transparent`);
    with `only_egress`, TCP to 80/443 leaves from no other uid."""
    if flow.proto != "tcp" or flow.port not in proxy.own_ports:
        return None
    if proxy.uid is not None and flow.uid == proxy.uid:
        return Decision("allow", "accept", PROXY,
                        f"outguard's proxy (uid {proxy.uid}) connects to port {flow.port}: it"
                        " decided the request by name itself")
    if flow.port not in proxy.only_egress:
        return None
    return Decision("deny", blocked, "default",
                    f"tcp port {flow.port} leaves only through outguard's proxy (proxy:"
                    f" only_egress){audit}")


def _other_conditions(rule: IRRule, flow: Flow, now: datetime) -> str | None:
    """None when every non-address condition holds; else the first that does not."""
    m = rule.match
    if m.proto not in ("any", flow.proto):
        return f"proto {flow.proto} is not {m.proto}"
    if m.ports:
        if flow.proto not in ("tcp", "udp") or flow.port is None:
            return "it needs a tcp or udp port"
        if not any(lo <= flow.port <= hi for lo, hi in m.ports):
            return f"port {flow.port} is not among its ports"
    if m.uid is not None and flow.uid != m.uid:
        return f"it is only for uid {m.uid}"
    if m.gid is not None and flow.gid != m.gid:
        return f"it is only for gid {m.gid}"
    if m.cgroup is not None and not (
            flow.cgroup is not None and (flow.cgroup.strip("/") + "/").startswith(m.cgroup + "/")):
        return f"it is only for cgroup {m.cgroup}"
    if m.until is not None and now >= m.until:
        return f"it expired at {m.until.isoformat()}"
    return None


def rule_matches(ruleset: Ruleset, rule: IRRule, flow: Flow, now: datetime) -> str | None:
    """The reason the rule matches the flow, or None."""
    dst = packet_address(flow.dst) if flow.dst is not None else None
    why = _destination(ruleset, rule, flow, dst)
    if why is None or _other_conditions(rule, flow, now) is not None:
        return None
    details = [why]
    if rule.match.ports and flow.port is not None:
        details.append(f"port {flow.port}/{flow.proto} is one of its ports")
    if rule.match.uid is not None:
        details.append(f"the socket belongs to uid {rule.match.uid}")
    return "; ".join(details)


def _is_loopback(dst: tuple[int, int] | None, local: Collection[tuple[int, int]]) -> bool:
    """Whether the kernel sends a packet to `dst` out of `lo`: 127/8, ::1, and the host's own
    addresses (`local`), which the kernel routes through `lo` too (the `oif lo` accept)."""
    if dst is None:
        return False
    value, version = dst
    return (value >> 24 == 127 if version == 4 else value == 1) or dst in local


def decide(ruleset: Ruleset, flow: Flow, now: datetime | None = None, *,
           local: Collection[str] = ()) -> Decision:
    """What the kernel does with `flow` under `ruleset` at `now` (default: the wall clock).

    `local` is the host's own addresses (every interface's, as `ip -o addr` lists them in the
    namespace the policy is applied in): the kernel accepts traffic to them on `oif lo` like
    127.0.0.1, so `decide` must know them to say so. Without them only 127/8 and ::1 are
    loopback, and a flow to one of the host's own addresses is decided by the rules (what the
    kernel does with the same packet when it leaves through another interface)."""
    now = now or datetime.now(UTC)
    dst = packet_address(flow.dst) if flow.dst is not None else None
    own = {a for a in map(packet_address, local) if a is not None}
    if _is_loopback(dst, own):
        return Decision("allow", "accept", "builtin:loopback",
                        "loopback traffic (127/8, ::1 and the host's own addresses) is always"
                        " allowed")
    if flow.established:
        return Decision("allow", "accept", "builtin:established",
                        "replies and related packets of allowed connections are accepted")
    blocked: Literal["accept", "drop", "reject"] = (
        "accept" if ruleset.mode == "audit" else ruleset.default_action)
    audit = " (audit mode: logged, not blocked)" if ruleset.mode == "audit" else ""
    # the resolver's own queries to its upstreams come before deny: a deny rule or feed that
    # covers an upstream must not cut every name resolution of the host
    if ruleset.proxy is not None and (bent := _proxy_redirect(ruleset.proxy, flow)) is not None:
        return bent
    if ruleset.dns is not None and (dns := _dns(ruleset, flow, dst)) is not None:
        return dns
    for rule in ruleset.deny:
        why = rule_matches(ruleset, rule, flow, now)
        if why is not None:
            return Decision("deny", blocked, rule.counter,
                            f"deny rule {rule.name!r} matches: {why}; deny beats allow{audit}")
    if ruleset.dns is not None and flow.proto in ("tcp", "udp") and \
            flow.port in dns_ports(ruleset.dns.upstreams):
        return Decision("deny", blocked, "default",
                        f"DNS goes through outguard's resolver at {ruleset.dns.listen[0]}, and only"
                        f" it reaches upstream servers{audit}")
    if ruleset.proxy is not None and \
            (only := _proxy_only(ruleset.proxy, flow, blocked, audit)) is not None:
        return only
    for rule in ruleset.allow:
        why = rule_matches(ruleset, rule, flow, now)
        if why is not None:
            return Decision("allow", "accept", rule.counter, f"allow rule {rule.name!r} matches: {why}")
    return Decision("deny", blocked, "default",
                    f"no allow rule matches, so the default applies{audit}")
