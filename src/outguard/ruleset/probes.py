"""`outguard verify`, the pure part: which probes test an applied ruleset, and what each
probe's result means.

Place in the data flow: above `decide` (the expectation of every probe is `decide`'s answer for
it, so that verify checks the kernel against the one decision function), below `apply.verify`,
which sends the probes (`kernel.prober`) and reads the counters around each. Pure.

Probes: per rule, one TCP connect (or, for a `proto: udp` rule, one UDP datagram) per IP
version to the first destination it names (an address, a list's first entry, a host name's
first answer) on its first port (443 without ports), run as the rule's user/group when it has
`for:`; one to a documentation address no rule decides, for the default. Rules for a unit or a
cgroup, ICMP rules and rules for every destination are listed as not probed, with the reason.

Outcomes: `reached` (a SYN-ACK or RST, a UDP answer: the firewall let it out), `sent` (a UDP
datagram left with no answer: let out, unanswered), `blocked by outguard` (a blocking counter
of outguard's moved: the default, a deny rule or feed, the lockdown), `blocked elsewhere` (no
answer and none of outguard's blocking counters moved: another table, a cloud firewall), `let
out` (a probe outguard should have dropped passed its table: verify's own guard table held it
back, so it never left the host), `failed` (anything else: no route, an error). In audit
mode what the policy would block is `logged by outguard (audit)`: its counter moved and
outguard let it pass, to verify's guard, which kept it on the host as well.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

from outguard.ruleset.decide import Decision, Flow, decide
from outguard.ruleset.ir import IRRule, Ruleset
from outguard.ruleset.keys import RuleKey
from outguard.ruleset.names import rule_names

Proto = Literal["tcp", "udp"]
Resolve = Callable[[str], list[str]]
REACHED, SENT, BLOCKED, ELSEWHERE, LET_OUT, FAILED, AUDITED = (
    "reached", "sent", "blocked by outguard", "blocked elsewhere", "let out", "failed",
    "logged by outguard (audit)")
# A probe the host has no route for never reaches the output hook: nothing leaves, so a probe
# that must be blocked is no mismatch (and not tested); one that must be reached is.
NO_ROUTE = "not sent: no route"
# the default's probe goes to one of these, the first that no rule decides (documentation
# addresses: nothing real answers them; verify's guard keeps them on the host anyway)
DEFAULT_TARGETS = (("192.0.2.201", 9), ("203.0.113.201", 9), ("198.51.100.201", 9),
                   ("2001:db8:ffff::201", 9))


@dataclass(frozen=True)
class ProbeSpec:
    """One probe: what it tests (`subject`: `allow:web`, `deny:bad`, `default`), where it goes,
    as whom (uid/gid; 0 is outguard itself), and what `decide` expects of it."""

    subject: str
    dst: str
    port: int
    proto: Proto
    uid: int
    gid: int
    expect: Decision

    @property
    def blocked(self) -> bool:
        """Does the policy block it?"""
        return self.expect.verdict != "accept"

    @property
    def audited(self) -> bool:
        """Would the policy block it, but it is in audit mode (logged, let pass)?"""
        return self.expect.verdict == "accept" and RuleKey.parse(self.expect.rule).logged

    @property
    def guarded(self) -> bool:
        """Must verify's guard hold it on the host (whatever outguard's table does with it)?"""
        return self.blocked or self.audited

    def __str__(self) -> str:
        host = f"[{self.dst}]" if ":" in self.dst else self.dst
        who = f" as uid {self.uid}" if self.uid else ""
        return f"{self.proto} {host}:{self.port}{who}"


@dataclass(frozen=True)
class Skipped:
    subject: str
    why: str


@dataclass(frozen=True)
class Outcome:
    spec: ProbeSpec
    outcome: str
    by: str | None  # the counter's decision that blocked it (outguard's), if one moved
    ok: bool
    detail: str


def _first_addresses(rs: Ruleset, rule: IRRule,
                     resolve: Resolve) -> dict[int, tuple[str, str | None]]:
    """One address per IP version from the rule's destinations, in the order written, and the
    host name it was resolved from (with `dns:` the kernel lets it out by that name's set)."""
    found: dict[int, tuple[str, str | None]] = {}

    def take(items: Iterable[str], name: str | None = None) -> None:
        for text in items:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                continue
            # a network's first host (its network address may be routed differently)
            addr = next(iter(net.hosts()), net.network_address) if net.num_addresses > 1 \
                else net.network_address
            found.setdefault(net.version, (str(addr), name))

    for key in ([rule.inline] if rule.inline else []) + list(rule.lists):
        source = rs.sources[key]
        if source.bulk is None:
            el = source.elements
            take([*el.v4, *el.v4_nets, *el.v6, *el.v6_nets])
            continue
        # a feed: its integers (its text form would be made for a million entries)
        content = source.bulk()
        for version in (4, 6):
            singles, ranges = content.singles(version), content.ranges(version)
            first = singles[0] if singles else ranges[0][0] if ranges else None
            if first is not None:
                take([str(ipaddress.IPv4Address(first) if version == 4
                          else ipaddress.IPv6Address(first))])
    if rs.dns is not None or not found:
        names, _wildcards = rule_names(rs, rule)
        for name in names:
            take(resolve(name), name)
            if len(found) == 2:
                break
    return found


def _why_not(rule: IRRule) -> str | None:
    if rule.match.cgroup is not None:
        return ("a rule for a unit or cgroup: a probe would have to run inside that cgroup,"
                " which verify does not join; not probed")
    if rule.match.proto == "icmp":
        return "an ICMP rule: verify probes TCP and UDP only"
    if rule.any_destination:
        return "a rule for every destination: there is no destination to pick"
    return None


def _no_address(rs: Ruleset, rule: IRRule) -> str:
    names, wildcards = rule_names(rs, rule)
    if wildcards and not names:
        # `suggest` folds names into them: saying "does not resolve" sent people to DNS
        return (f"only wildcards ({', '.join(sorted(wildcards)[:3])}): verify has no host name"
                " to probe")
    return "no destination address (a name that does not resolve, an empty list)"


def choose(rs: Ruleset, resolve: Resolve) -> tuple[list[ProbeSpec], list[Skipped]]:
    """The probes that test `rs`, and the rules not probed (with why). `resolve`: a host
    name's addresses (through the host's resolver: with `dns:`, outguard's, which fills the
    kernel set the rule uses)."""
    probes: list[ProbeSpec] = []
    skipped: list[Skipped] = []
    for rule in rs.rules():
        subject = str(rule.key)
        if (why := _why_not(rule)) is not None:
            skipped.append(Skipped(subject, why))
            continue
        found = _first_addresses(rs, rule, resolve)
        if not found:
            skipped.append(Skipped(subject, _no_address(rs, rule)))
            continue
        proto: Proto = "udp" if rule.match.proto == "udp" else "tcp"
        port = rule.match.ports[0][0] if rule.match.ports else 443
        uid = rule.match.uid if rule.match.uid is not None else \
            (65534 if rule.match.gid is not None else 0)
        gid = rule.match.gid if rule.match.gid is not None else uid
        for version in sorted(found):
            dst, name = found[version]
            flow = Flow(dst=dst, port=port, proto=proto, uid=uid, gid=gid, name=name)
            probes.append(ProbeSpec(subject, dst, port, proto, uid, gid, decide(rs, flow)))
    # as root first, then as nobody: a rule that lets root out everywhere leaves the default
    # to other users
    for uid, (dst, port) in ((u, t) for u in (0, 65534) for t in DEFAULT_TARGETS):
        got = decide(rs, Flow(dst=dst, port=port, proto="tcp", uid=uid, gid=uid))
        if got.rule == "default":
            probes.append(ProbeSpec("default", dst, port, "tcp", uid, uid, got))
            break
    else:
        skipped.append(Skipped("default", "every candidate address is decided by a rule"))
    return probes, skipped


def under_lockdown(probes: list[ProbeSpec], keep: Iterable[str]) -> list[ProbeSpec]:
    """The probes' expectations while a lockdown is in force: what an allow rule it does not
    keep lets out, the lockdown drops (its counter, `lockdown`, moves)."""
    kept = {f"allow:{name}" for name in keep}
    dropped = Decision("deny", "drop", "lockdown", "a lockdown is in force")
    return [replace(p, expect=dropped) if not p.guarded and p.expect.rule not in kept
            and not p.expect.rule.startswith("builtin:") else p for p in probes]


def _blocking(moved: dict[str, int]) -> str | None:
    """The decision whose blocking counter moved (the first, by name), if any."""
    for name in sorted(moved):
        try:
            key = RuleKey.of_counter(name)
        except ValueError:
            continue
        if key.logged and moved[name] > 0:
            return str(key)
    return None


def judge(spec: ProbeSpec, raw: str, moved: dict[str, int], guard_moved: bool) -> Outcome:
    """What a probe's result (`kernel.prober`: connected, refused, reply, sent, timeout,
    eperm, noroute, err:…) and the counters that moved while it ran say, against `decide`."""
    by = _blocking(moved)
    if by is not None:
        outcome = AUDITED if guard_moved or raw in ("connected", "refused", "reply", "sent") \
            else BLOCKED
    elif guard_moved:
        outcome = LET_OUT
    elif raw in ("connected", "refused", "reply"):
        outcome = REACHED
    elif raw == "sent":
        outcome = SENT
    elif raw in ("timeout", "eperm"):
        outcome = ELSEWHERE
    elif raw == "noroute":
        outcome = NO_ROUTE
    else:
        outcome = FAILED
    expected = spec.expect
    if spec.audited:
        ok = outcome == AUDITED
        want = f"logged by {expected.rule} (audit)"
    elif not spec.blocked:
        ok = outcome in (REACHED, SENT)
        want = f"allowed by {expected.rule}"
    else:
        ok = outcome in (BLOCKED, NO_ROUTE)
        want = f"blocked by {expected.rule}"
    detail = f"expected {want}; {outcome}" + (f" ({by})" if by else "") + f" [{raw}]"
    if ok and by is not None and by != expected.rule:
        detail += f"; blocked by {by}, not {expected.rule}"
    return Outcome(spec, outcome, by, ok, detail)
