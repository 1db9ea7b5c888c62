"""The rules of learning mode (`learn: true`, `outguard learn`), as nftables JSON.

Place in the data flow: `nft` puts `learn_rule` into the output chain — after the accepts of
established traffic, loopback and IPv6 neighbour discovery, before DNS, deny and allow, so every
new outbound flow is seen whatever the policy then decides —, `build` adds the chains, sets and
counters it jumps to, and `dns_copy_rules` go into an input chain of their own.
`monitor.learn` reads both NFLOG groups (`ruleset.keys.learn_groups`) and, through
`kernel.learnsets`, the counting sets.

    output     ct state new · jump learn
    learn      counter "learn.new"
               ipv4 tcp/udp · update @count4 {daddr . l4proto . dport . skuid counter} · goto key4
               ipv6 tcp/udp · update @count6 {...}                                  · goto key6
               counter "learn.logged" · log "og:learn" group G+1
    key4/6     daddr . l4proto . dport . skuid @keys4 · return
               add @keys4 {...} · counter "learn.keys" · log "og:learn-key" group G+1
    input      meta l4proto {tcp, udp} th sport 53 · log prefix "og:learn-dns" group G+2

Why the kernel counts: logging every new flow costs an NFLOG message and a Python decode per
flow (measured: learning cut a flood of short connections to 0.41-0.81 of the policy alone).
Most new flows repeat a key the learner already knows (the same user to the same destination
and port): the counting set counts them per key in the kernel, and only the first flow of a
key (per `KEY_TIMEOUT`, so a key still in use is attributed again now and then) is logged, to
name its process. The learner reads the counters with a dump that resets them
(`kernel.learnsets`): each flow is counted once, none twice, even when two CPUs log the same new
key at once (the message carries no count).

Every flow is counted, and the books stay exact:

    learn.new == Σ counting sets' counts read + learn.logged              (the kernel's)
    learn.logged + learn.keys == messages received + lost (gaps) + malformed   (the group's)

A flow the sets cannot take — not TCP/UDP, no local socket (no uid), or its counting set full
(`COUNT_SIZE`) — falls to the last rule: counted in `learn.logged` and logged one by one, as
before. Nothing is lost silently when a set is full: `update` fails and the rule does not match.

Bounds: a counting set holds `COUNT_SIZE` keys per IP version; a key leaves it `COUNT_TIMEOUT`
after its last flow (`update` renews it), by which time the learner (reading every second) has
read all it counted. The key sets only decide what is logged: full, a new key's flows are still
counted, recorded without a process. Neither rule group has a verdict: the packet goes back to
the output chain and the policy (input: the chain's accept policy), so learning blocks nothing
and lets nothing through that the policy would not.
"""

from __future__ import annotations

from outguard.nftables.model import ADDR, Compiled, Expr, NftRule, NftSet, const, match, meta
from outguard.ruleset.keys import (
    LEARN_COUNTER,
    LEARN_KEY_PREFIX,
    LEARN_KEYS,
    LEARN_LOGGED,
    LEARN_PREFIX,
    SetName,
    learn_groups,
)

LEARN_DNS_PREFIX = "og:learn-dns"
COUNT_SIZE = 65536  # keys per IP version counted in the kernel; more are logged one by one
COUNT_TIMEOUT = 600  # seconds after a key's last flow; the learner reads every second
KEY_SIZE = 65536
KEY_TIMEOUT = 5  # a key in use is logged (attributed) again after this many seconds
_KEY_TYPE = ("inet_proto", "inet_service", "uid")
CHAIN = "learn"
COUNTERS = (LEARN_COUNTER, LEARN_LOGGED, LEARN_KEYS)


def _declaration(kind: str, version: int) -> tuple[str, tuple[str, ...], int, int]:
    size, timeout = (COUNT_SIZE, COUNT_TIMEOUT) if kind == "count" else (KEY_SIZE, KEY_TIMEOUT)
    key_type = (ADDR[version][1], *_KEY_TYPE)
    name = str(SetName.flow(f"learn{kind[0]}{version}", repr((key_type, size, timeout))))
    return name, key_type, size, timeout


def count_sets() -> dict[int, str]:
    """IP version -> name of its counting set (what `kernel.learnsets` reads)."""
    return {version: _declaration("count", version)[0] for version in (4, 6)}


def learn_rule(nflog_group: int) -> NftRule:
    """The output chain's entry to learning: every new outbound flow."""
    del nflog_group  # the groups are in the chains `build` adds
    return NftRule([match({"ct": {"key": "state"}}, "new", "in"), {"jump": {"target": CHAIN}}],
                   "learn: every new outbound flow")


def _key(version: int) -> Expr:
    daddr = {"payload": {"protocol": ADDR[version][0], "field": "daddr"}}
    return {"concat": [daddr, meta("l4proto"), {"payload": {"protocol": "th", "field": "dport"}},
                       meta("skuid")]}


def build(out: Compiled, nflog_group: int) -> None:
    """The learn chain, its key chains and the four sets (the counters: `COUNTERS`)."""
    group, _dns = learn_groups(nflog_group)
    chain = out.chain(CHAIN)
    chain.rules.append(NftRule([{"counter": LEARN_COUNTER}]))
    for version in (4, 6):
        sets = {}
        for kind in ("count", "key"):
            name, key_type, size, timeout = _declaration(kind, version)
            out.sets[name] = NftSet(name, key_type, False, False, const([]), capacity=size,
                                    element_timeout=timeout, version=version)
            sets[kind] = name
        key, key_chain = _key(version), f"{CHAIN}_key{version}"
        chain.rules.append(NftRule([
            match(meta("nfproto"), f"ipv{version}"),
            match(meta("l4proto"), {"set": ["tcp", "udp"]}),
            {"set": {"op": "update", "elem": key, "set": f"@{sets['count']}",
                     "stmt": [{"counter": None}]}},
            {"goto": {"target": key_chain}}]))
        out.chain(key_chain).rules.extend([
            NftRule([match(key, f"@{sets['key']}"), {"return": None}]),
            NftRule([{"set": {"op": "add", "elem": key, "set": f"@{sets['key']}"}},
                     {"counter": LEARN_KEYS},
                     {"log": {"prefix": LEARN_KEY_PREFIX, "group": group}}],
                    "learn: the first flow of a key, for its process")])
    chain.rules.append(NftRule([{"counter": LEARN_LOGGED},
                                {"log": {"prefix": LEARN_PREFIX, "group": group}}],
                               "learn: what no counting set takes, one message per flow"))


def dns_copy_rules(nflog_group: int) -> list[NftRule]:
    """Copy every DNS answer the host receives (from any resolver) to the learner."""
    _flows, group = learn_groups(nflog_group)
    return [NftRule([match(meta("l4proto"), {"set": ["tcp", "udp"]}),
                     match({"payload": {"protocol": "th", "field": "sport"}}, 53),
                     {"log": {"prefix": LEARN_DNS_PREFIX, "group": group}}],
                    "learn: DNS answers, for the names behind addresses")]
