"""`outguard explain`: the decision for one destination, the rule behind it, and why.

Thin: every verdict comes from `decide`; this module picks the flows to ask it about and
words the answers. Three things it must not get wrong:

- A host name with a `dns:` section is decided by name, never resolved: the kernel lets a
  name's addresses out only after outguard's own resolver answered it, and resolving here would
  ask that very resolver (after `dns install`), which would refuse names the policy does not
  allow and record the refusal as an incident of outguard itself. What the resolver would do
  (answer, refuse, blocklist) comes from the same `NamePolicy` it runs.
  A name in /etc/hosts is the exception: no resolver sees it, so its addresses decide.
- Without `--port`, a TCP or UDP decision can depend on the port: every port range on which
  the decision is the same is asked once, and the answer says which ports get which verdict
  ("any port" when they all agree).
- Audit mode blocks nothing: a deny is worded "would be denied (audit: logged, not blocked)".
- Without `--proto`, TCP and UDP are both asked and both answered: a destination allowed only
  on udp/123 (NTP) is not "denied" because a default protocol was assumed.
- Without `--user`/`--group`, no user is assumed either: the answer is for a socket no `for:`
  names, and then for each `for:` of the policy whose answer differs ("ALLOW ... for user root").
- With `dns:`, an address the resolver put into a name rule's set (the state directory's saved
  resolver state, `explain_sets`) is decided with that name too, as the kernel's set match does.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import click

from outguard.cli.explain_sets import InSet, read_in_sets, until_text
from outguard.errors import OutguardError
from outguard.pipeline import load_policy, lower_policy
from outguard.policy import accounts
from outguard.policy.addresses import parse_ip
from outguard.policy.targets import parse_target
from outguard.ruleset.decide import Decision, Flow, FlowProto, decide
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.keys import dns_ports
from outguard.ruleset.lower import system_resolver

Ranges = list[tuple[int, int]]
HOSTS = Path("/etc/hosts")
_AUDIT = " (audit mode: logged, not blocked)"
ANYONE = "users no for: rule names"  # the answer without --user/--group, when a for: differs


@dataclass
class Answer:
    """One line of the answer: a destination, the ports it is about, and the decision."""

    destination: str  # an address, or the name when decided by name
    name: str | None
    ports: Ranges | None  # None: the port given (or no port for the protocol)
    decision: Decision
    every_port: bool = False  # the decision is the same for every port
    resolver: str | None = None  # with dns: what outguard's resolver does with the name
    note: str | None = None
    expires: str | None = None  # the deciding rule's `expires:` (ISO 8601, UTC)
    who: str | None = None  # whose sockets: None = as asked; "user root", or ANYONE


def _id(value: str | None, kind: Literal["user", "group"]) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return accounts.uid(value) if kind == "user" else accounts.gid(value)
    except KeyError:
        raise OutguardError(f"no {kind} {value!r} on this machine") from None


def _cuts(ruleset: Ruleset) -> list[int]:
    """The first port of every range on which no rule's port condition changes."""
    cuts = {1, 65536}
    for rule in ruleset.rules():
        for lo, hi in rule.match.ports:
            cuts.update((lo, hi + 1))
    if ruleset.dns is not None:
        for port in dns_ports(ruleset.dns.upstreams):
            cuts.update((port, port + 1))
    return sorted(cuts)


def _by_port(ruleset: Ruleset, flow: Flow,
             local: Collection[str] = ()) -> list[tuple[Ranges, Decision]]:
    """The decision for each group of ports, the groups in order of their first port."""
    cuts = _cuts(ruleset)
    groups: dict[tuple[str, str, str], tuple[Ranges, Decision]] = {}
    for lo, nxt in itertools.pairwise(cuts):
        d = decide(ruleset, replace(flow, port=lo), local=local)
        ranges, _first = groups.setdefault((d.action, d.verdict, d.rule), ([], d))
        if ranges and ranges[-1][1] == lo - 1:
            ranges[-1] = (ranges[-1][0], nxt - 1)
        else:
            ranges.append((lo, nxt - 1))
    return list(groups.values())


def _answers(ruleset: Ruleset, flow: Flow, destination: str, name: str | None,
             local: Collection[str] = (), **extra: Any) -> list[Answer]:
    if flow.port is not None or flow.proto not in ("tcp", "udp"):
        return [Answer(destination, name, None, decide(ruleset, flow, local=local), **extra)]
    groups = _by_port(ruleset, flow, local)
    if len(groups) == 1:
        return [Answer(destination, name, groups[0][0], groups[0][1], every_port=True, **extra)]
    # the group with the most ports last: it reads as "any other port"
    groups.sort(key=lambda g: sum(hi - lo + 1 for lo, hi in g[0]))
    return [Answer(destination, name, ranges, d, **extra) for ranges, d in groups]


def _by_name(ruleset: Ruleset, name: str, flow: Flow) -> list[Answer]:
    """With `dns:`: the resolver's verdict on the name, then decide() by name."""
    from outguard.dns.blocklist import load_blocklists  # noqa: PLC0415
    from outguard.ruleset.names import NamePolicy  # noqa: PLC0415

    assert ruleset.dns is not None
    verdict = NamePolicy.of(ruleset, load_blocklists(ruleset.dns.blocklists)).lookup(name)
    if verdict.action != "resolve" and ruleset.mode == "enforce":
        answer = "NXDOMAIN" if verdict.action == "blocklist" or \
            ruleset.dns.unlisted == "nxdomain" else "REFUSED"
        d = Decision("deny", "drop", verdict.rule, f"{verdict.reason}: outguard's resolver"
                     f" answers {answer}, so nothing can connect to {name}")
        return [Answer(name, name, None, d, every_port=flow.proto in ("tcp", "udp"),
                       resolver=answer)]
    said = f"answers {name} ({verdict.reason})" if verdict.action == "resolve" else \
        f"answers {name} in audit mode (in enforce mode it would not: {verdict.reason})"
    note = None
    if any(r.inline or r.lists for r in ruleset.deny):
        note = (f"decided by name: a deny rule for one of {name}'s addresses still wins"
                " (`--to ADDRESS` checks one)")
    return _answers(ruleset, replace(flow, name=name), name, name,
                    resolver=said, note=note)


def hosts_file(name: str, path: Path = HOSTS) -> list[str]:
    """The addresses /etc/hosts gives `name` (the C library reads it before asking DNS, so no
    resolver sees such a name); under `--netns`, `ip netns exec` shows /etc/netns/NAME/hosts."""
    found: list[str] = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) > 1 and name in (f.lower().rstrip(".") for f in fields[1:]) \
                and parse_ip(fields[0]) is not None:
            found.append(fields[0])
    return list(dict.fromkeys(found))


def _per_address(ruleset: Ruleset, name: str, addresses: list[str], flow: Flow,
                 local: Collection[str] = (), note: str | None = None) -> list[Answer]:
    # With dns:, a name's rules reach its addresses only through sets the resolver fills: an
    # address the resolver never gave out is decided as the bare address it is.
    named = None if ruleset.dns is not None else name
    out: list[Answer] = []
    for address in addresses:
        out += _answers(ruleset, replace(flow, dst=address, name=named), address, name, local,
                        note=note)
    return out


def _through_sets(ruleset: Ruleset, dest: str, flow: Flow, local: Collection[str],
                  sets: Sequence[InSet]) -> list[Answer]:
    """An address in name rules' sets: decided with each name (as the kernel's set match),
    then as the bare address it is once the entries expire."""
    out: list[Answer] = []
    for s in sets:
        out += _answers(ruleset, replace(flow, dst=dest, name=s.name), dest, s.name, local,
                        note=f"{dest} is in the addresses the resolver put in for {s.name}"
                             f" ({s.rule}, @{s.set_name}) until {until_text(s)} unless it is"
                             f" answered again ({s.source})")
    bare = _answers(ruleset, replace(flow, dst=dest), dest, None, local,
                    note="the address alone: what decides it once the resolver's entries"
                         " above expire")
    return out + bare


def explain(ruleset: Ruleset, dest: str, flow: Flow, hosts: Path = HOSTS,
            local: Collection[str] = (), sets: Sequence[InSet] = ()) -> list[Answer]:
    """The answers for `dest` (an address or a host name) and the rest of `flow`; `local`:
    the host's own addresses (the kernel sends traffic to them through `lo`); `sets`: where
    the resolver put the address `dest` into name rules' sets (`explain_sets.read_in_sets`)."""
    if parse_ip(dest) is not None:
        if sets:
            return _through_sets(ruleset, dest, flow, local, sets)
        return _answers(ruleset, replace(flow, dst=dest), dest, None, local)
    try:
        name = parse_target(dest)
    except ValueError as exc:
        raise OutguardError(str(exc)) from None
    if name.kind != "host":
        raise OutguardError(f"{dest!r} is not an address or a host name")
    if ruleset.dns is not None:
        in_hosts = hosts_file(name.value, hosts)
        if in_hosts:
            return _per_address(ruleset, name.value, in_hosts, flow, local,
                                f"{name.value} is in {hosts}: programs get these addresses"
                                " without asking outguard's resolver, so the name's rules"
                                " allow them only while a DNS answer put them in the kernel")
        return _by_name(ruleset, name.value, flow)
    addresses = list(ruleset.resolved.get(name.value, ())) or system_resolver(name.value)
    if not addresses:
        named = replace(flow, name=name.value)
        return _answers(ruleset, named, name.value, name.value,
                        note=f"{name.value} does not resolve here: nothing can connect to it"
                             " by name (`--to ADDRESS` asks about an address)")
    return _per_address(ruleset, name.value, addresses, flow, local)


def _ports_text(ranges: Ranges) -> str:
    parts = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges]
    return ("port " if parts == [str(ranges[0][0])] else "ports ") + ", ".join(parts)


def _outcome(d: Decision, audit: bool) -> tuple[str, str]:
    """The head word and the verdict as people say it."""
    if d.action == "allow":
        return "ALLOW", f"accepted by {d.rule}"
    if audit:
        return "AUDIT", f"would be denied by {d.rule} (audit: logged, not blocked)"
    return "DENY", f"{'rejected' if d.verdict == 'reject' else 'dropped'} by {d.rule}"


def _reason(a: Answer, proto: str) -> str:
    """decide's reason, which names the one port it was asked about, for a group of ports."""
    if a.ports is None or a.every_port:
        return a.decision.reason
    return a.decision.reason.replace(f"port {a.ports[0][0]}/{proto} is one of its ports",
                                     "the port is one of its ports")


def _same(a: Answer, b: Answer) -> bool:
    """Whether two answers are port groups of one question (destination, name, whose)."""
    return (a.destination, a.name, a.who) == (b.destination, b.name, b.who)


def render(answers: list[Answer], port: int | None, proto: str, audit: bool) -> str:
    lines: list[str] = []
    for i, a in enumerate(answers):
        shown = f"{a.name} ({a.destination})" if a.name and a.destination != a.name \
            else a.destination
        if port is not None and proto in ("tcp", "udp"):
            where = f"port {port}/{proto}"
        elif a.every_port:
            where = f"{proto}, any port"
        elif a.ports is not None:
            last = i + 1 == len(answers) or not _same(answers[i + 1], a)
            where = f"{proto} " + ("any other port" if last and len(a.ports) > 1
                                   else _ports_text(a.ports))
        else:
            where = proto
        head, verdict = _outcome(a.decision, audit)
        who = f" ({a.who})" if a.who is not None else ""
        lines.append(f"{head:5}  {shown} {where}{who}: {verdict}")
        lines.append(f"       {_reason(a, proto).removesuffix(_AUDIT)}")
        if a.expires is not None:
            lines.append(f"       until {a.expires}: the rule expires then (`expires:`)")
        if i + 1 < len(answers) and _same(answers[i + 1], a):
            continue  # what is said of the destination follows its last port group
        if a.resolver is not None and a.resolver.startswith("answers"):
            lines.append(f"       outguard's resolver {a.resolver}")
        if a.note is not None:
            lines.append(f"       note: {a.note}")
    return "\n".join(lines) + "\n"


def as_json(answers: list[Answer], proto: str, audit: bool,
            port: int | None = None) -> list[dict[str, Any]]:
    asked = [[port, port]] if port is not None and proto in ("tcp", "udp") else None
    return [{
        "destination": a.destination, "name": a.name, "proto": proto, "for": a.who,
        "ports": "any" if a.every_port else a.ports if a.ports is not None else asked,
        "action": a.decision.action, "verdict": a.decision.verdict,
        "blocked": a.decision.verdict != "accept",
        "audit": audit and a.decision.action == "deny",
        "rule": a.decision.rule, "reason": _reason(a, proto),
        "resolver": a.resolver, "note": a.note, "expires": a.expires} for a in answers]


def owners(ruleset: Ruleset) -> list[tuple[str, Flow]]:
    """Each distinct `for:` of the policy: its words, and a flow whose socket it matches."""
    out: dict[tuple[int | None, int | None, str | None], str] = {}
    for rule in ruleset.rules():
        m = rule.match
        if (m.uid, m.gid, m.cgroup) == (None, None, None) or (m.uid, m.gid, m.cgroup) in out:
            continue
        words = []
        if m.uid is not None:
            words.append(f"user {accounts.user_name(m.uid) or m.uid}")
        if m.gid is not None:
            words.append(f"group {m.gid}")
        if m.cgroup is not None:
            unit = m.cgroup.removeprefix("system.slice/")
            words.append(f"unit {unit}" if unit != m.cgroup and "/" not in unit
                         else f"cgroup /{m.cgroup}")
        out[(m.uid, m.gid, m.cgroup)] = " ".join(words)
    return [(words, Flow(uid=u, gid=g, cgroup=c)) for (u, g, c), words in out.items()]


def _shape(answers: list[Answer]) -> list[tuple[Any, ...]]:
    return [(a.destination, a.name, a.ports, a.every_port, a.decision.action,
             a.decision.verdict, a.decision.rule) for a in answers]


def explain_anyone(ruleset: Ruleset, dest: str, flow: Flow, local: Collection[str] = (),
                   sets: Sequence[InSet] = (), hosts: Path = HOSTS) -> list[Answer]:
    """No user or group asked: the answer for a socket no `for:` names, then for each `for:`
    whose answer differs (marked `who`); unmarked when no `for:` changes anything."""
    base = explain(ruleset, dest, flow, hosts, local, sets)
    more: list[Answer] = []
    for words, who in owners(ruleset):
        got = explain(ruleset, dest, replace(flow, uid=who.uid, gid=who.gid, cgroup=who.cgroup),
                      hosts, local, sets)
        if _shape(got) != _shape(base):
            more += [replace(a, who=words) for a in got]
    if more:
        base = [replace(a, who=ANYONE) for a in base]
    return base + more


def run_explain(policy: Path, dest: str, port: int | None, proto: str | None,
                user: str | None, group: str | None, json_out: bool,
                feed_dir: Path | None = None, local: Collection[str] = (),
                state_dir: Path | None = None) -> None:
    """Load and lower POLICY, then print the answers for `dest` (`proto` None: tcp and udp);
    `local`: the host's own addresses, accepted like 127.0.0.1 (`oif lo`); `state_dir`:
    where the agent saves its resolver's state (what it put in the name rules' sets)."""
    ruleset = lower_policy(load_policy(policy, feed_dir=feed_dir))
    uid, gid = _id(user, "user"), _id(group, "group")
    sets = read_in_sets(ruleset, state_dir, dest, time.time()) \
        if state_dir is not None and parse_ip(dest) is not None else []
    audit = ruleset.mode == "audit"
    deadlines = {r.counter: r.match.until.isoformat() for r in ruleset.rules()
                 if r.match.until is not None}
    docs: list[dict[str, Any]] = []
    for each in [proto] if proto is not None else ["tcp", "udp"]:
        flow_proto: FlowProto = "tcp" if each == "tcp" else "udp" if each == "udp" else "icmp"
        asked = Flow(port=port, proto=flow_proto, uid=uid, gid=gid)
        answers = explain(ruleset, dest, asked, local=local, sets=sets) \
            if uid is not None or gid is not None else \
            explain_anyone(ruleset, dest, asked, local, sets)
        for a in answers:
            a.expires = deadlines.get(a.decision.rule)
        if json_out:
            docs += as_json(answers, each, audit, port)
        else:
            click.echo(render(answers, port, each, audit), nl=False)
    if json_out:
        click.echo(json.dumps(docs, indent=1))
