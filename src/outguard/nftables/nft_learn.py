"""The rules of learning mode (`learn: true`, `outguard learn`), as nftables JSON.

Place in the data flow: `nft` puts `learn_rule` into the output chain — after the accepts of
established traffic, loopback and IPv6 neighbour discovery, before DNS, deny and allow, so every
new outbound flow is seen whatever the policy then decides — and `dns_copy_rules` into an input
chain of its own. `monitor.learn` reads both NFLOG groups (`ruleset.keys.learn_groups`).

    output  ct state new · counter "learn.new" · log prefix "og:learn" group G+1
    input   meta l4proto {tcp, udp} th sport 53 · log prefix "og:learn-dns" group G+2

No rate limit on either: the learner must see every flow (and every answer that names one), and
the named counter is the kernel's side of its books (counted = recorded + lost). Neither rule
has a verdict: the packet goes on to the policy's rules (output) or is accepted by the input
chain's policy, so learning blocks nothing and lets nothing through that the policy would not.
"""

from __future__ import annotations

from outguard.nftables.model import NftRule, match, meta
from outguard.ruleset.keys import LEARN_COUNTER, LEARN_PREFIX, learn_groups

LEARN_DNS_PREFIX = "og:learn-dns"


def learn_rule(nflog_group: int) -> NftRule:
    """Count and log the first packet of every new outbound flow."""
    group, _dns = learn_groups(nflog_group)
    return NftRule([match({"ct": {"key": "state"}}, "new", "in"),
                    {"counter": LEARN_COUNTER},
                    {"log": {"prefix": LEARN_PREFIX, "group": group}}],
                   "learn: every new outbound flow")


def dns_copy_rules(nflog_group: int) -> list[NftRule]:
    """Copy every DNS answer the host receives (from any resolver) to the learner."""
    _flows, group = learn_groups(nflog_group)
    return [NftRule([match(meta("l4proto"), {"set": ["tcp", "udp"]}),
                     match({"payload": {"protocol": "th", "field": "sport"}}, 53),
                     {"log": {"prefix": LEARN_DNS_PREFIX, "group": group}}],
                    "learn: DNS answers, for the names behind addresses")]
