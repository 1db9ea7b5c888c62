"""The proxy's decision: a request (host, port, who asks) and the addresses it would reach.

Place in the data flow: `server` asks here twice per request: `decide_name` before resolving
(a name no rule allows is never even looked up), `decide_addresses` on what the resolver
answered (or on a literal address), before connecting. Pure: the ruleset, the request and the
client's identity in, a `Verdict` out. Every decision is `ruleset.decide` (the kernel's
meaning of the policy); nothing here matches rules itself.

The SSRF guard on top: an address in the never-reach set (loopback, link-local including the
cloud metadata services 169.254.169.254 and fd00:ec2::254, private, shared, multicast and other
special ranges) is refused unless a rule allows that address explicitly (an allow rule with
destinations, asked about the address alone, without the name: a name rule does not make
`internal.example -> 10.0.0.5` reachable, and neither does an allow rule without `to`). Every
facet of every answer is checked (an IPv4 address embedded in IPv6 too), and one bad answer
refuses the request: a name that resolves to a public and a private address is a rebinding
attempt, not a choice. The documentation ranges (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24, 2001:db8::/32) are not in the set: nothing real lives there, and outguard's own
tests and lab use them as "the internet".
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from outguard.proxy.target import IPAddress, facets
from outguard.ruleset.decide import Decision, Flow, decide, rule_matches
from outguard.ruleset.ir import Ruleset

NEVER_REACH = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "fc00::/7", "fe80::/10",
    "fec0::/10", "ff00::/8",
))


@dataclass(frozen=True)
class Who:
    """The client, as the kernel would see its packets."""

    uid: int | None = None
    gid: int | None = None
    cgroup: str | None = None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    rule: str  # the decision key that decided: allow:x, deny:x, default, proxy:never-reach
    reason: str
    audit: bool = False  # allowed only because the policy is in audit mode


_BY_VERSION = {v: tuple((int(n.network_address), int(n.netmask)) for n in NEVER_REACH
                        if n.version == v) for v in (4, 6)}


def never_reach(addr: IPAddress) -> bool:
    value = int(addr)  # integer masks: this runs for every facet of every answer
    return any(value & mask == net for net, mask in _BY_VERSION[addr.version])


def _verdict(d: Decision) -> Verdict:
    if d.verdict == "accept":
        return Verdict(True, d.rule, d.reason, audit=d.action == "deny")
    return Verdict(False, d.rule, d.reason)


def _flow(port: int, who: Who, dst: str | None = None, name: str | None = None) -> Flow:
    return Flow(dst=dst, port=port, proto="tcp", uid=who.uid, gid=who.gid, cgroup=who.cgroup,
                name=name)


def _unknown(ruleset: Ruleset, flow: Flow, now: datetime | None) -> Verdict | None:
    """A refusal when a rule about something the proxy could not learn of the client (its
    uid, gid or cgroup) would match the flow if that were the rule's: the request is not
    decided blind. A rule that could not match anyway does not matter."""
    for rule in (*ruleset.deny, *ruleset.allow):
        m = rule.match
        guess = [k for k, v, known in (("uid", m.uid, flow.uid), ("gid", m.gid, flow.gid),
                                       ("cgroup", m.cgroup, flow.cgroup))
                 if v is not None and known is None]
        if not guess:
            continue
        as_if = dataclasses.replace(flow, uid=flow.uid if flow.uid is not None else m.uid,
                                    gid=flow.gid if flow.gid is not None else m.gid,
                                    cgroup=flow.cgroup or m.cgroup)
        if rule_matches(ruleset, rule, as_if, now or datetime.now(UTC)) is not None:
            return Verdict(False, "proxy:unattributed",
                           f"rule {rule.name!r} depends on the client's {', '.join(guess)},"
                           " which the proxy could not find out")
    return None


def _decide(ruleset: Ruleset, flow: Flow, now: datetime | None) -> Decision | Verdict:
    return _unknown(ruleset, flow, now) or decide(ruleset, flow, now)


def decide_name(ruleset: Ruleset, name: str, port: int, who: Who,
                now: datetime | None = None) -> Verdict:
    """Whether `name:port` may be asked for at all (before any lookup)."""
    d = _decide(ruleset, _flow(port, who, name=name), now)
    return d if isinstance(d, Verdict) else _verdict(d)


def _explicit(ruleset: Ruleset, addr: IPAddress, port: int, who: Who,
              now: datetime | None) -> Decision | None:
    """The allow decision that names this address itself, or None."""
    d = decide(ruleset, _flow(port, who, dst=str(addr)), now)
    if d.action != "allow":
        return None
    rule = next((r for r in ruleset.allow if r.counter == d.rule), None)
    return d if rule is not None and not rule.any_destination else None


def decide_address(ruleset: Ruleset, addr: IPAddress, port: int, who: Who,
                   name: str | None = None, now: datetime | None = None) -> Verdict:
    """One address the proxy would connect to. With `name` (already allowed by
    `decide_name`), only deny rules, feeds and the never-reach set can refuse it; without,
    a literal address must be allowed by a rule as in the kernel."""
    verdict = Verdict(True, "proxy:address-ok", f"{addr} is no denied or never-reach address")
    every = facets(addr)
    for facet in every:  # the never-reach set first: it is the stronger reason
        if never_reach(facet) and _explicit(ruleset, facet, port, who, now) is None:
            where = f"{facet} (in {addr})" if facet != addr else str(facet)
            return Verdict(False, "proxy:never-reach",
                           f"{where} is a loopback, link-local, private or special address,"
                           " and no allow rule names it")
    for facet in every:
        where = f"{facet} (in {addr})" if facet != addr else str(facet)
        d = _decide(ruleset, _flow(port, who, dst=str(facet), name=name), now)
        if isinstance(d, Verdict):
            return d
        if d.verdict != "accept" and (name is None or d.rule != "default"):
            return Verdict(False, d.rule, f"{where}: {d.reason}")
        if name is None and facet == addr:
            verdict = _verdict(d)
    return verdict


def decide_addresses(ruleset: Ruleset, addrs: Sequence[IPAddress], port: int, who: Who,
                     name: str | None = None, now: datetime | None = None) -> Verdict:
    """Every address must pass (`decide_address`); the first refusal is the verdict."""
    if not addrs:
        return Verdict(False, "proxy:no-address", f"{name} has no address")
    last = None
    for addr in addrs:
        last = decide_address(ruleset, addr, port, who, name, now)
        if not last.allowed:
            return last
    assert last is not None
    return last


def for_proxy(ruleset: Ruleset) -> Ruleset:
    """The ruleset as the proxy decides with it: without the kernel's proxy rules, which say
    what happens around the proxy (redirected into it, or dropped unless it sends)."""
    return dataclasses.replace(ruleset, proxy=None) if ruleset.proxy is not None else ruleset


def needs_process(ruleset: Ruleset) -> bool:
    """Whether a rule needs more of the client than its socket's uid (its gid or cgroup)."""
    return any(r.match.gid is not None or r.match.cgroup is not None
               for r in (*ruleset.deny, *ruleset.allow))
