"""The verdict of a blocked packet in nftables: log it per flow, count it, drop or reject it.

Place in the data flow: part of compile (IR → nftables), used by `nftables.nft`'s builder for the
`v_deny_<rule>` chains and `v_default`. Each of them is

    [counter "deny.<rule>"] · [reject: a held SYN's retransmit → reset] · jump log_gate ·
    counter "log.deny.<rule>" + log prefix "og:deny:<rule>[ reject| audit]" group N · verdict

`log_gate` rate-limits the log per flow in kernel sets (a loud flow cannot hide a new one), and
gives the verdict itself to what it does not log: so the rule's counter minus its log counter
is what was not logged (`log_figures`, shown by `outguard status` and the agent's metrics).
The prefix says what the kernel does (nothing: drop), for `events` to read back (`events.render_prefix`). With
`default_action: reject` a logged TCP connect's first SYN is dropped and its retransmit reset
(`v_reject_first`): a reset would end the socket before the monitor could find its process.
"""

from __future__ import annotations

from outguard.events import render_prefix
from outguard.nftables.model import (
    ADDR,
    Compiled,
    Expr,
    NftChain,
    NftRule,
    NftSet,
    const,
    match,
    meta,
)
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.keys import PROBE_MARK, RuleKey, SetName


def log_figures(counters: dict[str, tuple[int, int]]) -> dict[str, dict[str, int]]:
    """Per blocking decision: packets the kernel blocked (audit: would have blocked), logged
    to NFLOG, and not logged (over their flow's log rate, or a held SYN's reset retransmit),
    from the table's named counters."""
    out: dict[str, dict[str, int]] = {}
    for name, (packets, _bytes) in counters.items():
        try:
            key = RuleKey.of_counter(name)
        except ValueError:
            continue  # a log counter
        if not key.logged:
            continue
        logged = counters.get(key.log_counter, (0, 0))[0]
        out[str(key)] = {"blocked": packets, "logged": logged,
                         "not_logged": max(0, packets - logged)}
    return out


# The per-flow log limit's sets (see `Verdicts.log_gate`), per address family. Measured on
# kernel 6.18: an element of a plain set takes ~130 bytes of slab, one with a limit ~250; all
# twelve sets full hold ~12 MB.
FLOW_SET_SIZE = 8192  # (destination, port, uid) flows of local sockets
OTHER_SET_SIZE = 4096  # (destination, port) and (destination, protocol) flows
SYN_SET_SIZE, SYN_TIMEOUT = 4096, 10  # reject: first SYNs held back, until their retransmit
_PER_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def log_timeout(rate: int, per: str) -> int:
    """How long a quiet flow's log limit is kept: until its bucket would be full again
    (rate + burst packets at `rate`), at least 10 s, at most an hour. A flow that keeps
    sending keeps its entry (`update` refreshes the timeout)."""
    refill = (rate + max(5, rate)) / rate * _PER_SECONDS[per]
    return int(min(3600, max(10, -(-refill // 1))))


def _payload(protocol: str, name: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": name}}


class Verdicts:
    """Builds the verdict chains (and the sets and chains they share) into `out`."""

    def __init__(self, rs: Ruleset, out: Compiled) -> None:
        self.rs, self.out = rs, out
        self.blocked = "accept" if rs.mode == "audit" else rs.default_action

    def verdict_tail(self, chain: NftChain, *, first: bool = False) -> None:
        """The blocked verdict. With reject, `first` (a packet that was logged) goes through
        `v_reject_first`: its connection's first SYN is dropped, the retransmit reset."""
        if self.blocked == "reject":
            chain.rules.append(NftRule([{"goto": {"target": self.reject_chain(first)}}]))
        else:
            chain.rules.append(NftRule([{self.blocked: None}]))

    def reject_chain(self, first: bool) -> str:
        if "v_reject" not in self.out.chains:
            chain = self.out.chain("v_reject")
            chain.rules.append(NftRule([match(meta("l4proto"), "tcp"),
                                        {"reject": {"type": "tcp reset"}}]))
            chain.rules.append(NftRule([{"reject": {"type": "icmpx", "expr": "admin-prohibited"}}]))
        if not first:
            return "v_reject"
        if "v_reject_first" not in self.out.chains:
            # A reset ends the socket before the monitor can look it up; a dropped SYN leaves it
            # in SYN_SENT until the retransmit (~1 s later), which `held` finds and resets. A
            # full set makes `add` fail: that packet is reset at once, as before.
            chain = self.out.chain("v_reject_first")
            for version in (4, 6):
                name, four = self.held_syns(version)
                chain.rules.append(NftRule([match(meta("l4proto"), "tcp"), {"set": {
                    "op": "add", "elem": four, "set": f"@{name}"}}, {"drop": None}],
                    "first SYN: dropped, so that its socket is attributed"))
            chain.rules.append(NftRule([{"goto": {"target": "v_reject"}}]))
        return "v_reject_first"

    def held_syns(self, version: int) -> tuple[str, Expr]:
        """The set of held-back SYNs of one family, and its key (the connection's 4-tuple)."""
        addr = ADDR[version][1]
        name = self.flow_set(f"rs{version}", (addr, "inet_service", addr, "inet_service"),
                             SYN_SET_SIZE, SYN_TIMEOUT)
        ip = ADDR[version][0]
        return name, {"concat": [_payload(ip, "saddr"), _payload("th", "sport"),
                                 _payload(ip, "daddr"), _payload("th", "dport")]}

    def held(self) -> list[NftRule]:
        """With reject: the retransmit of a held SYN is reset before the log gate: its
        connection was logged (and attributed) already; logged again, it would show as a
        second, unattributed incident (the reset closes the socket before the lookup)."""
        if self.blocked != "reject":
            return []
        out = []
        for version in (4, 6):
            name, four = self.held_syns(version)
            out.append(NftRule([match(meta("l4proto"), "tcp"), match(four, f"@{name}"),
                                {"goto": {"target": self.reject_chain(first=False)}}]))
        return out

    def log(self, key: RuleKey) -> list[Expr]:
        """Count and log a packet the gate let through (the prefix says the action)."""
        return [{"counter": key.log_counter},
                {"log": {"prefix": render_prefix(str(key), self.blocked),
                         "group": self.rs.nflog_group}}]

    def limit(self, *, over: bool = False) -> Expr:
        """The policy's log rate; `over`: true while a flow is above it."""
        rate, per = self.rs.log_rate
        body: dict[str, object] = {"rate": rate, "per": per, "burst": max(5, rate)}
        if over:
            body["inv"] = True
        return {"limit": body}

    def flow_set(self, kind: str, key: tuple[str, ...], size: int, timeout: int) -> str:
        """A set the packet path fills (log limits, first SYNs), named after its declaration."""
        name = str(SetName.flow(kind, repr((key, size, timeout))))
        if name not in self.out.sets:
            self.out.sets[name] = NftSet(name, key, False, False, const([]), capacity=size,
                                         element_timeout=timeout)
        return name

    def log_gate(self) -> str:
        """The chain every blocked packet jumps to before it is logged. A packet within its
        flow's log rate returns (and is logged); one over it gets the verdict here, unlogged
        (and counted: the verdict chain's counter minus its log counter).

        Flows, coarser at each level: TCP/UDP from a local socket by (destination, port, uid);
        TCP/UDP without one (forwarded, kernel-made) or whose level is full by (destination,
        port); anything else, or when that is full too, by (destination, protocol); when every
        level is full, one limit shared by the rest. A port scan fills the first two levels and
        is then one flow per host: another host still gets its own.

        Each level is two sets of the same keys. `seen` holds the flow (a plain update: it
        fails only when the set is full); `lim` its token bucket, updated with `limit rate
        over`, which matches while the flow is over the rate. A lookup in `lim` would not do:
        looking up an element runs its limit too (it takes a token, and fails when over).
        """
        if "log_gate" in self.out.chains:
            return "log_gate"
        chain = self.out.chain("log_gate")
        rate, per = self.rs.log_rate
        timeout = log_timeout(rate, per)
        quiet = self.quiet()
        chain.rules.append(NftRule([match(meta("mark"), PROBE_MARK), *quiet],
                                   "outguard verify's probe: counted, not logged"))
        ported = match(meta("l4proto"), {"set": ["tcp", "udp"]})
        for version in (4, 6):
            ip, addr = ADDR[version]
            daddr, dport = _payload(ip, "daddr"), _payload("th", "dport")
            flows: tuple[tuple[str, list[Expr], tuple[str, ...], list[Expr], int], ...] = (
                ("f", [ported], (addr, "inet_service", "uid"), [daddr, dport, meta("skuid")],
                 FLOW_SET_SIZE),
                ("n", [ported], (addr, "inet_service"), [daddr, dport], OTHER_SET_SIZE),
                ("o", [], (addr, "inet_proto"), [daddr, meta("l4proto")], OTHER_SET_SIZE),
            )
            for kind, pre, key_type, key, size in flows:
                seen = self.flow_set(f"{kind}{version}s", key_type, size, timeout)
                lim = self.flow_set(f"{kind}{version}l", key_type, size, timeout)
                elem = {"concat": key}
                known = match(elem, f"@{seen}")
                chain.rules.append(NftRule([*pre, {"set": {"op": "update", "elem": elem,
                                                           "set": f"@{seen}"}}]))
                chain.rules.append(NftRule([*pre, known, {"set": {
                    "op": "update", "elem": elem, "set": f"@{lim}",
                    "stmt": [self.limit(over=True)]}}, *quiet]))
                chain.rules.append(NftRule([*pre, known, {"return": None}]))
        chain.rules.append(NftRule([self.limit(over=True), *quiet],
                                   "every flow set full: one limit for the rest"))
        return "log_gate"

    def quiet(self) -> list[Expr]:
        """The verdict of a packet that is not logged."""
        if self.blocked == "reject":
            return [{"goto": {"target": self.reject_chain(first=False)}}]
        return [{self.blocked: None}]

    def chain(self, name: str, key: RuleKey, head: list[NftRule]) -> None:
        """A verdict chain: `head`, the log gate, count and log, the verdict."""
        chain = self.out.chain(name)
        chain.rules.extend(head)
        chain.rules.extend(self.held())
        chain.rules.append(NftRule([{"jump": {"target": self.log_gate()}}]))
        chain.rules.append(NftRule(self.log(key)))
        self.verdict_tail(chain, first=True)
