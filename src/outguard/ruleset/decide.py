"""`decide(ruleset, flow)`: the one definition of what a compiled policy means.

`explain` and `simulate` call it, the DNS resolver and the proxy will, and the kernel tests check
that nftables agrees with it case by case. Precedence, exactly as the kernel evaluates it:
loopback and established traffic are accepted; with `dns:`, the resolver's own queries to its
upstreams; then the first matching deny rule; then other DNS (dropped: it must go through the
resolver); then the first matching allow rule; then the default (enforce: drop or reject;
audit: accept, logged).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from outguard.policy.addresses import packet_address
from outguard.ruleset.ir import IRRule, Ruleset
from outguard.ruleset.keys import DNS_PORTS, RuleKey
from outguard.ruleset.names import normalize, rule_names

FlowProto = Literal["tcp", "udp", "icmp", "other"]


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
    """Whether the rule names `name`: in its own `to`, or in an entry of a list it uses (as
    the resolver's `NamePolicy` matches, so that both agree)."""
    name = normalize(name)
    names, wildcards = rule_names(ruleset, rule)
    if name in names:
        return True
    return any(name.endswith(w[1:]) and len(name) > len(w) - 1 for w in wildcards)


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
        names = [n for n in rule.names if flow.dst in ruleset.resolved.get(n, ())]
        via = f" (resolved from {names[0]})" if names else ""
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
    ports = {*DNS_PORTS, *(p for _a, p in dns.upstreams)} if dns is not None else set()
    if dns is None or flow.proto not in ("tcp", "udp") or flow.port not in ports:
        return None
    if dns.uid is not None and flow.uid == dns.uid and dst is not None and any(
            packet_address(a) == dst and p == flow.port for a, p in dns.upstreams):
        return Decision("allow", "accept", "builtin:dns",
                        f"outguard's resolver (uid {dns.uid}) asks its upstream {flow.dst}")
    return None


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


def _is_loopback(dst: str | None) -> bool:
    parsed = packet_address(dst) if dst is not None else None
    if parsed is None:
        return False
    value, version = parsed
    return value >> 24 == 127 if version == 4 else value == 1


def decide(ruleset: Ruleset, flow: Flow, now: datetime | None = None) -> Decision:
    now = now or datetime.now(UTC)
    if _is_loopback(flow.dst):
        return Decision("allow", "accept", "builtin:loopback", "loopback traffic is always allowed")
    if flow.established:
        return Decision("allow", "accept", "builtin:established",
                        "replies and related packets of allowed connections are accepted")
    blocked: Literal["accept", "drop", "reject"] = (
        "accept" if ruleset.mode == "audit" else ruleset.default_action)
    audit = " (audit mode: logged, not blocked)" if ruleset.mode == "audit" else ""
    # the resolver's own queries to its upstreams come before deny: a deny rule or feed that
    # covers an upstream must not cut every name resolution of the host
    if ruleset.dns is not None and (dns := _dns(ruleset, flow, packet_address(flow.dst)
                                                 if flow.dst is not None else None)) is not None:
        return dns
    for rule in ruleset.deny:
        why = rule_matches(ruleset, rule, flow, now)
        if why is not None:
            return Decision("deny", blocked, rule.counter,
                            f"deny rule {rule.name!r} matches: {why}; deny beats allow{audit}")
    if ruleset.dns is not None and flow.proto in ("tcp", "udp") and flow.port in (
            {*DNS_PORTS, *(p for _a, p in ruleset.dns.upstreams)}):
        return Decision("deny", blocked, "default",
                        f"DNS goes through outguard's resolver at {ruleset.dns.listen[0]}, and only"
                        f" it reaches upstream servers{audit}")
    for rule in ruleset.allow:
        why = rule_matches(ruleset, rule, flow, now)
        if why is not None:
            return Decision("allow", "accept", rule.counter, f"allow rule {rule.name!r} matches: {why}")
    return Decision("deny", blocked, "default",
                    f"no allow rule matches, so the default applies{audit}")
