"""The kernel's part of the egress proxy (`proxy: {only_egress, transparent}`) as nftables rules.

Place in the data flow: `nft` asks here for the rules of a ruleset with `ProxySettings` (from
`ruleset.lower`), and puts them where `decide` says they act:

    nat_output (type nat, hook output, priority -100; only with `transparent`)
        tcp dport {80, 443} skuid != PROXY oif != lo   redirect to :T   (127.0.0.1 / ::1)
    output
        … lockdown · tcp dport T ct status dnat daddr 127.0.0.1|::1 accept   (redirected in)
        · [dns] · jump deny
        · tcp dport {80, 443} skuid PROXY accept            (the proxy decided by name)
        · tcp dport {80, 443} counter "default" goto v_default   (`only_egress`: no way around)
        · jump allow · …

The redirect comes before our filter chain (nat at -100, filter at 0), so the filter sees the
packet already bent to the proxy's port: it is accepted there, deny rules and all, because the
proxy checks the original destination against them itself. A deny rule still drops the
proxy's own connections (deny beats everything but loopback and established traffic).
"""

from __future__ import annotations

from outguard.errors import ResolverUserError
from outguard.nftables.model import Compiled, NftRule, match, meta
from outguard.ruleset.ir import ProxySettings
from outguard.ruleset.keys import DEFAULT

NAT_CHAIN = "nat_output"  # a base chain of type nat on the output hook
NAT_PRIORITY = -100  # dstnat: before the filter chains at 0, as iptables' nat OUTPUT
_TCP = match(meta("l4proto"), "tcp")
_DPORT = {"payload": {"protocol": "th", "field": "dport"}}
_LOOPBACK = (("ip", "127.0.0.1"), ("ip6", "::1"))


def _uid(proxy: ProxySettings) -> int:
    if proxy.uid is None:
        raise ResolverUserError(f"proxy.user {proxy.user!r} does not exist yet: `outguard"
                                " apply` (or `outguard run`) creates it")
    return proxy.uid


def _ports(ports: tuple[int, ...]) -> object:
    return ports[0] if len(ports) == 1 else {"set": list(ports)}


def redirected_in(proxy: ProxySettings) -> list[NftRule]:
    """The output chain's accept for connections the nat chain bent into the proxy."""
    if not proxy.transparent:
        return []
    return [NftRule([_TCP, match(_DPORT, proxy.transparent_port),
                     match({"ct": {"key": "status"}}, "dnat", "in"),
                     match({"payload": {"protocol": family, "field": "daddr"}}, addr),
                     {"accept": None}], "proxy: redirected into outguard's proxy")
            for family, addr in _LOOPBACK]


def own_and_only(proxy: ProxySettings) -> list[NftRule]:
    """After deny: the proxy's own connections to its ports; with `only_egress`, nobody
    else's to 80/443 (the default verdict: logged, so a bypass attempt is an incident)."""
    if not proxy.kernel_rules:
        return []
    rules = [NftRule([_TCP, match(_DPORT, _ports(proxy.own_ports)),
                      match(meta("skuid"), _uid(proxy)), {"accept": None}],
                     "proxy: outguard's proxy decided by name")]
    if proxy.only_egress:
        rules.append(NftRule([_TCP, match(_DPORT, _ports(proxy.only_egress)),
                              {"counter": DEFAULT.counter}, {"goto": {"target": "v_default"}}],
                             "proxy: only_egress, no way around the proxy"))
    return rules


def nat_chain(out: Compiled, proxy: ProxySettings) -> None:
    """With `transparent`: the nat chain that redirects other users' connections."""
    if not proxy.transparent:
        return
    chain = out.chain(NAT_CHAIN, "output")
    chain.kind, chain.prio = "nat", NAT_PRIORITY
    chain.rules.append(NftRule([
        _TCP, match(_DPORT, _ports(proxy.transparent)),
        match(meta("skuid"), _uid(proxy), "!="), match(meta("oif"), "lo", "!="),
        {"redirect": {"port": proxy.transparent_port}}],
        "proxy: transparent, into outguard's proxy"))
