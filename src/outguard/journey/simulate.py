"""`simulate`: the recorded flows replayed through a policy (issue 16 §3).

Place in the data flow: learned flows (store or `--flows` file) + the policy's lowered
`Ruleset` → `decide()`, the same pure function `explain` uses and the kernel tests hold nftables
to → a decision per flow and a summary of what would be blocked, per process.

Names decide too, as in the kernel: with `dns:`, an address is in a name rule's set when the
resolver answered one of the rule's names with it, so a flow is tried with each of its names
(and with none): a deny rule that matches any of them wins, else an allow that matches any of
them, else the decision for the bare address. Without `dns:`, name rules hold the addresses
the names had at apply time: `lower_flows_resolver` gives `lower` the addresses the names had
when they were learned, so no DNS is asked.

With `dns:` the host asks outguard's resolver (after `dns install`) instead of the servers it
asked while learning: a DNS flow to one of `dns.upstreams` is the resolver's work then
(`builtin:dns`), not a blocked flow.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from outguard.events import LearnedFlow, severity_rank
from outguard.policy.addresses import packet_address
from outguard.ruleset.decide import Decision, Flow, FlowProto, decide
from outguard.ruleset.ir import IRRule, Ruleset
from outguard.ruleset.keys import DNS_PORTS

_PROTOS: dict[str, FlowProto] = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmp"}
MEDIUM = severity_rank("medium")


def recorded_allowed(flow: LearnedFlow) -> bool:
    """Whether the flow got out when it was learned: no policy (learning alone blocks
    nothing), one that allowed it, or one in audit mode that would have blocked it (the
    learner records "default audit", "deny:x audit", as the kernel's log prefix says). A
    classified flow got out too when this says so: the classifier only names it."""
    d = flow.decision
    return d == "" or d.startswith(("allow:", "builtin:")) or d.endswith(" audit")


def classified(flow: LearnedFlow) -> bool:
    return flow.severity is not None and severity_rank(flow.severity) >= MEDIUM


@dataclass(frozen=True)
class Outcome:
    """One flow's replay."""

    flow: LearnedFlow
    decision: Decision
    name: str | None  # the name the decision came through, if one did

    @property
    def blocked(self) -> bool:
        return self.decision.verdict != "accept"

    @property
    def got_out(self) -> bool:
        """It would be blocked now and got out when learned (classified or not)."""
        return self.blocked and recorded_allowed(self.flow)

    @property
    def regression(self) -> bool:
        """It got out when learned, is not classified, and would be blocked now: something
        that worked would break (a classified flow blocked is what the policy is for)."""
        return self.got_out and not classified(self.flow)

    def to_json(self) -> dict[str, Any]:
        f = self.flow
        return {"exe": f.exe, "user": f.user, "unit": f.unit, "container": f.container,
                "dst": f.dst, "names": list(f.names), "port": f.port, "proto": f.proto,
                "count": f.count, "recorded": f.decision, "signature": f.signature,
                "severity": f.severity, "action": self.decision.action,
                "verdict": self.decision.verdict, "blocked": self.blocked,
                "rule": self.decision.rule, "name": self.name, "reason": self.decision.reason,
                "got_out": recorded_allowed(f), "regression": self.regression}


@dataclass
class Blocked:
    """What would be blocked of one process."""

    flows: int = 0
    connections: int = 0
    got_out: int = 0
    regressions: int = 0
    destinations: dict[str, set[str]] = field(default_factory=dict)  # "dst proto/port" → rules


@dataclass
class Summary:
    flows: int = 0
    blocked: int = 0
    got_out: int = 0  # blocked now, and got out when learned
    regressions: int = 0  # of those, not classified: what would break
    classified_blocked: int = 0
    by_process: dict[str, Blocked] = field(default_factory=dict)

    def add(self, o: Outcome) -> None:
        self.flows += 1
        if o.blocked:
            f = o.flow
            self.add_blocked(f.exe, f.names, f.dst, f.port, f.proto, o.decision.rule, 1, f.count,
                             recorded_allowed(f), classified(f))

    def add_blocked(self, exe: str | None, names: Sequence[str], dst: str, port: int | None,
                    proto: str, rule: str, n: int, connections: int, got_out: bool,
                    is_classified: bool) -> None:
        """`n` blocked flows alike (the store's summary groups them; `flows` is not counted).
        Each process lists its 50 smallest destinations, whatever order the flows came in."""
        regression = got_out and not is_classified
        self.blocked += n
        self.got_out += n * got_out
        self.regressions += n * regression
        self.classified_blocked += n * is_classified
        got = self.by_process.setdefault(exe or "?", Blocked())
        got.flows += n
        got.connections += connections
        got.got_out += n * got_out
        got.regressions += n * regression
        where = f"{names[0] if names else dst} {proto}{'' if port is None else f'/{port}'}"
        shown = got.destinations
        if where not in shown:
            if len(shown) >= 50:
                largest = max(shown)
                if where > largest:
                    return
                del shown[largest]
            shown[where] = set()
        shown[where].add(rule)

    def to_json(self) -> dict[str, Any]:
        return {"flows": self.flows, "blocked": self.blocked, "got_out": self.got_out,
                "regressions": self.regressions,
                "classified_blocked": self.classified_blocked,
                "by_process": {exe: {"flows": b.flows, "connections": b.connections,
                                     "got_out": b.got_out, "regressions": b.regressions,
                                     "destinations": {d: sorted(r) for d, r in
                                                      sorted(b.destinations.items())}}
                               for exe, b in sorted(self.by_process.items())}}


class LearnedNames:
    """The names the learned table saw for each address, and the reverse: a flow that reached an
    address without resolving it itself (a cached answer, another process's lookup) still gets
    through a name rule while the name's answer holds the address, as in the kernel."""

    def __init__(self, flows: Iterable[LearnedFlow]) -> None:
        self.addresses: dict[str, dict[str, None]] = {}
        self.names: dict[str, tuple[str, ...]] = {}
        self.add((flow.dst, flow.names) for flow in flows)

    def add(self, pairs: Iterable[tuple[str, Sequence[str]]]) -> LearnedNames:
        """Take in (address, names) pairs (`flowfile.read_names` reads them fast)."""
        of: dict[str, dict[str, None]] = {dst: dict.fromkeys(n) for dst, n in self.names.items()}
        for dst, names in pairs:
            for name in names:
                self.addresses.setdefault(name, {})[dst] = None
                of.setdefault(dst, {})[name] = None
        self.names = {dst: tuple(sorted(names)) for dst, names in of.items()}
        return self

    def resolver(self, name: str) -> list[str]:
        """A `lower` resolver: each name's addresses as learned (no DNS is asked)."""
        return list(self.addresses.get(name.lower().rstrip("."), ()))


def learned_resolver(flows: Iterable[LearnedFlow]) -> Callable[[str], list[str]]:
    """A `lower` resolver that answers each name with the addresses it had when learned."""
    return LearnedNames(flows).resolver


class Replayer:
    """decide() per flow, remembered per distinct question (a million flows ask far fewer)."""

    def __init__(self, ruleset: Ruleset, now: datetime | None = None,
                 names: LearnedNames | None = None, narrow: bool = True) -> None:
        self.ruleset = ruleset
        self.narrow = narrow
        self._names = {} if names is None else names.names
        self.now = now
        self._cache: dict[tuple[Any, ...], tuple[Decision, str | None]] = {}
        self._views: dict[tuple[int | None, str | None], Ruleset] = {}
        dns = ruleset.dns
        self._upstreams = set() if dns is None else {
            (packet_address(a), p) for a, p in dns.upstreams}
        self._dns_ports = set() if dns is None else {*DNS_PORTS, *(p for _a, p in dns.upstreams)}

    def replay(self, flow: LearnedFlow) -> Outcome:
        decision, name = self.decision(flow)
        return Outcome(flow, decision, name)

    def decision(self, flow: LearnedFlow) -> tuple[Decision, str | None]:
        """The decision for the flow, and the name it came through."""
        return self.ask(flow.dst, flow.port, flow.proto, flow.uid, flow.cgroup, flow.names)

    def ask(self, dst: str, port: int | None, proto_name: str, uid: int | None,
            cgroup: str | None, own: tuple[str, ...]) -> tuple[Decision, str | None]:
        """`decision` by the parts decide() is asked about (`own`: the flow's own names)."""
        proto = _PROTOS.get(proto_name, "other")
        # the table's names for the address include the flow's own (`LearnedNames` saw it)
        names = self._names.get(dst, own) if self._names else own
        key = (dst, port, proto, uid, cgroup, names)
        got = self._cache.get(key)
        if got is None:
            got = self._decide(dst, port, proto, uid, cgroup, names)
            if len(self._cache) < 2_000_000:
                self._cache[key] = got
        return got

    def _view(self, uid: int | None, cgroup: str | None) -> Ruleset:
        """The ruleset without the rules whose owner (`for:`) can never match this uid and
        cgroup — the conditions decide() checks, so its answers are the same — so that decide
        scans a service's few rules, not every service's (50 services: ~25x fewer)."""
        got = self._views.get((uid, cgroup))
        if not self.narrow:
            return self.ruleset
        if got is None:
            path = None if cgroup is None else cgroup.strip("/") + "/"

            def may(rule: IRRule) -> bool:
                m = rule.match
                return (m.uid is None or m.uid == uid) and m.gid is None and (
                    m.cgroup is None or (path is not None and path.startswith(m.cgroup + "/")))
            got = self._views[(uid, cgroup)] = dataclasses.replace(
                self.ruleset, deny=tuple(r for r in self.ruleset.deny if may(r)),
                allow=tuple(r for r in self.ruleset.allow if may(r)))
        return got

    def _decide(self, dst: str, port: int | None, proto: FlowProto, uid: int | None,
                cgroup: str | None, names: tuple[str, ...]) -> tuple[Decision, str | None]:
        if port in self._dns_ports and proto in ("tcp", "udp") and \
                (packet_address(dst), port) in self._upstreams:
            return Decision("allow", "accept", "builtin:dns",
                            f"the host asks outguard's resolver, which asks {dst}"), None
        base = Flow(dst=dst, port=port if proto in ("tcp", "udp") else None,
                    proto=proto, uid=uid, cgroup=cgroup)
        ruleset = self._view(uid, cgroup)
        bare = decide(ruleset, base, self.now)
        if bare.rule.startswith("deny:") or not names:
            return bare, None
        allowed: tuple[Decision, str | None] | None = (bare, None) if bare.action == "allow" \
            else None
        for name in names:
            d = decide(ruleset, Flow(dst=base.dst, port=base.port, proto=proto,
                                     uid=uid, cgroup=cgroup, name=name), self.now)
            if d.rule.startswith("deny:"):
                return d, name
            if allowed is None and d.action == "allow":
                allowed = (d, name)
        return allowed if allowed is not None else (bare, None)


def simulate(ruleset: Ruleset, flows: Iterable[LearnedFlow], *,
             each: Callable[[Outcome], None] | None = None,
             now: datetime | None = None, names: LearnedNames | None = None) -> Summary:
    """Replay every flow; `each` sees every outcome (printing), the summary keeps only what
    would be blocked. `names`: what the whole table saw for each address."""
    replayer = Replayer(ruleset, now, names)
    summary = Summary()
    for flow in flows:
        decision, name = replayer.decision(flow)
        if each is None and decision.verdict == "accept":
            summary.flows += 1  # the common case, without an Outcome per flow
            continue
        outcome = Outcome(flow, decision, name)
        summary.add(outcome)
        if each is not None:
            each(outcome)
    return summary


# A question of the store's summary (`store.flowsummary.questions`): (dst, port, proto, uid,
# cgroup, rows asking it, the distinct name lists of those rows as a JSON list)
Question = tuple[str, int | None, str, int | None, str | None, int, str]


def question_names(questions: Iterable[Question]) -> LearnedNames:
    """The table's names per address, from its questions (`LearnedNames`)."""
    parsed: dict[str, list[list[str]]] = {}

    def pairs() -> Iterator[tuple[str, list[str]]]:
        for q in questions:
            lists = parsed.get(q[6])
            if lists is None:
                lists = parsed[q[6]] = json.loads(q[6])
            for names in lists:
                if names:
                    yield q[0], names
    return LearnedNames(()).add(pairs())


def simulate_questions(replayer: Replayer, questions: Iterable[Question],
                       rows_to: Callable[[set[str]], Iterable[LearnedFlow]], *,
                       each: Callable[[Outcome], None] | None = None) -> Summary:
    """`simulate` from the store's summary of the table: one decision per distinct question
    (the table's names for an address are the replayer's, so the flow's own do not change it);
    only the rows to an address with a blocked question are read whole (`rows_to`), to count
    and show them as `simulate` does. `each` sees the blocked outcomes only."""
    summary = Summary()
    blocked: set[tuple[str, int | None, str, int | None, str | None]] = set()
    for dst, port, proto, uid, cgroup, n, _names in questions:
        summary.flows += n
        decision, _name = replayer.ask(dst, port, proto, uid, cgroup, ())
        if decision.verdict != "accept":
            blocked.add((dst, port, proto, uid, cgroup))
    if not blocked:
        return summary
    for flow in rows_to({q[0] for q in blocked}):
        if (flow.dst, flow.port, flow.proto, flow.uid, flow.cgroup) not in blocked:
            continue
        outcome = replayer.replay(flow)
        f = flow
        summary.add_blocked(f.exe, f.names, f.dst, f.port, f.proto, outcome.decision.rule, 1,
                            f.count, recorded_allowed(f), classified(f))
        if each is not None:
            each(outcome)
    return summary
