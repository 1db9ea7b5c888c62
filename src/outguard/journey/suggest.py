"""`suggest`: a reviewable policy from the learned flows (issue 16 §2).

Place in the data flow: `aggregate.collect` (one pass over the flows) → here (rules) →
`render` (YAML text) or `against` (merged into the user's file). Pure and deterministic: the
same flows give the same rules, in the same order, whatever order the flows came in.

How the flows become rules:
- A rule per service (systemd unit, else executable; `--per host`: one service), with
  `for: {unit: U}` when every flow ran in the unit's cgroup, else `for: {user: U}` when one
  user made them all; none when several did (the kernel cannot match an executable).
- Names first: an address any flow reached by a name becomes that name (all names seen for it),
  never the address. An address no name was ever seen for stays, marked for review.
- Names fold into `*.domain` when `fold` or more names lie below one registrable domain and the
  Public Suffix List says one party owns everything below it (`psl.wildcard_safe`), no refused
  name lies below it, and a `dns:` section is written (without one, wildcards match nothing).
- Ports: only ports seen; consecutive ones are written as a range. TCP and UDP with the same
  ports to the same destinations share a rule (proto any).
- With `dns:`, DNS (port 53) goes through outguard's resolver: the servers the host asked
  become its upstreams, not rules; DNS over TLS (853) would bypass it and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from outguard.events import LearnedFlow
from outguard.journey.aggregate import (
    HOST,
    Evidence,
    Refused,
    RefusedKey,
    Service,
    Table,
    collect,
    refuse,
)
from outguard.journey.cover import Index, Owner, Shape, redundant
from outguard.journey.psl import registrable, wildcard_safe
from outguard.policy import accounts

_UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]+")  # what the policy's `for: {unit:}` accepts
FOLD = 3  # names below one registrable domain that make a wildcard
DOT = 853
Ports = tuple[int, ...]


@dataclass(frozen=True)
class Entry:
    """One `to` entry, with the `# review:` remark of a bare address."""

    value: str
    review: str | None = None


@dataclass
class SuggestedRule:
    name: str
    to: list[Entry]
    proto: str  # tcp | udp | icmp | any
    ports: list[tuple[int, int]]  # merged ranges of seen ports; [] = no port condition
    owner: dict[str, str | int] | None
    evidence: Evidence

    def comment(self) -> str:
        """The evidence, at most 200 characters (the policy's limit), no quotes."""
        e = self.evidence
        first = e.first.strftime("%Y-%m-%dT%H:%MZ") if e.first else "?"
        last = e.last.strftime("%Y-%m-%dT%H:%MZ") if e.last else "?"
        text = (f"learned: {e.flows} flows, {e.connections} connections, {first} to {last};"
                f" by {', '.join(sorted(e.exes))}")
        text = re.sub(r"[^\x20-\x7e]", "?", text).replace('"', "'")
        return text if len(text) <= 200 else text[:197] + "..."


@dataclass
class Suggestion:
    rules: list[SuggestedRule]
    upstreams: list[str]  # the dns: section's; [] = no dns: section
    refused: list[Refused]
    through_resolver: int = 0  # DNS flows the resolver takes over
    loopback: int = 0
    total: int = 0
    notes: list[str] = field(default_factory=list)


def _user_known(name: str) -> bool:
    return accounts.user_ids(name) is not None


def suggest(flows: Iterable[LearnedFlow], *, per_host: bool = False,
            on_feed: Callable[[str], str | None] = lambda _d: None,
            keep: Callable[[LearnedFlow], bool] | None = None,
            use_dns: bool | None = None, upstream_hint: Sequence[str] = (),
            upstreams: Sequence[str] | None = None,
            taken: Iterable[str] = (), fold: int = FOLD,
            user_known: Callable[[str], bool] = _user_known) -> Suggestion:
    """The suggested policy's parts. `use_dns` None: a `dns:` section when names are used;
    `upstream_hint`: name servers to use when the flows show none (resolv.conf's);
    `upstreams`: the name servers of a `dns:` section that is kept (`--against`: the user's),
    instead of those the flows show; `taken`: rule names already in use (`--against`);
    `user_known`: whether a user name exists here (else the rule names the uid: `check`
    refuses an unknown user)."""
    return suggest_table(collect(flows, per_host=per_host, on_feed=on_feed, keep=keep),
                         per_host=per_host, use_dns=use_dns, upstream_hint=upstream_hint,
                         upstreams=upstreams, taken=taken, fold=fold, user_known=user_known)


def suggest_table(t: Table, *, per_host: bool = False, use_dns: bool | None = None,
                  upstream_hint: Sequence[str] = (), upstreams: Sequence[str] | None = None,
                  taken: Iterable[str] = (), fold: int = FOLD,
                  user_known: Callable[[str], bool] = _user_known) -> Suggestion:
    """`suggest` from a table already collected (`aggregate.collect_summary`: the store's
    summary of a big table)."""
    banned_names = t.banned_names()
    named = any(t.names.get(dst) for s in t.services.values() for dst, _p in s.seen
                if dst not in t.banned)
    want_dns = named if use_dns is None else use_dns
    if upstreams is None or not want_dns:
        upstreams = _upstreams(t, upstream_hint) if want_dns else []
    upstreams = list(upstreams)
    out = Suggestion([], upstreams, [], loopback=t.loopback, total=t.total)
    if want_dns and not upstreams:
        out.notes.append("no DNS server was seen and none was given: no dns: section, so host"
                         " names are resolved at apply time and no wildcard is written")
    refused = dict(t.refused)
    names_taken = set(taken)
    bases: dict[str, int] = {}
    uid_names = _uid_names(t)
    plans: dict[str, tuple[Dests, Owner]] = {}
    for group in sorted(t.services):
        service = t.services[group]
        dests = _destinations(t, service, set(upstreams), banned_names, refused, out)
        if upstreams:
            dests = _fold(dests, banned_names, fold)
        plans[group] = (dests, _owner(service, per_host, user_known, uid_names))
    _fold_unattributed(plans)
    for group, (dests, owner) in plans.items():
        if dests:
            base = _unique_base(_base(group), bases)
            out.rules += _rules(base, dests, owner, names_taken)
    out.rules = _without_covered(out.rules)
    out.refused = sorted(refused.values(), key=lambda r: (r.dst, r.port or 0, r.proto, r.why))
    for r in out.refused:
        r.names = tuple(sorted(t.names.get(r.dst, ())))
    return out


def _uid_names(t: Table) -> dict[int, str]:
    """A user name for each uid any service saw it with: a "uid:N" flow (no process found)
    is then `for: {user: NAME}` like its user's process rules, and comparable with them."""
    out: dict[int, str] = {}
    for group in sorted(t.services):
        for uid, name in sorted(t.services[group].users.items()):
            out.setdefault(uid, name)
    return out


def _unattributed(group: str) -> bool:
    return group.startswith("exe:uid:")


def _fold_unattributed(plans: dict[str, tuple[Dests, Owner]]) -> None:
    """A "uid:N" flow (a socket gone before its process was found) to a destination, protocol
    and port a process rule of the same user (or one without `for:`) already allows is that
    rule's: its evidence is counted there and it makes no rule of its own. What no process
    rule allows stays in the uid's rule (its evidence too: it is kept per protocol only)."""
    shapes: list[Shape] = []
    where: list[tuple[str, str]] = []  # (group, entry) of each shape
    for group, (dests, owner) in plans.items():
        if not _unattributed(group):
            for entry, (ports, _e, _r) in dests.items():
                for proto, sig_ports in _signatures(ports):
                    shapes.append(Shape(owner, (entry,), proto, tuple(ranges(sig_ports))))
                    where.append((group, entry))
    index = Index(shapes)
    for group, (dests, owner) in plans.items():
        if not _unattributed(group) or not shapes:
            continue
        for entry in list(dests):
            ports, evidence, _r = dests[entry]
            for proto in sorted(ports):
                seen = sorted(ports[proto], key=lambda p: -1 if p is None else p)
                found = [index.covering(owner, entry, proto, port) for port in seen]
                if None in found:
                    ports[proto] = {p for p, i in zip(seen, found, strict=True) if i is None}
                    continue
                g, e = where[found[0] or 0]
                plans[g][0][e][1].setdefault(proto, Evidence()).merge(
                    evidence.pop(proto, Evidence()))
                del ports[proto]
            if not ports:
                del dests[entry]


def _without_covered(rules: list[SuggestedRule]) -> list[SuggestedRule]:
    """No rule that another suggested rule wholly allows: its evidence goes to that one."""
    gone = redundant([Shape(r.owner, tuple(e.value for e in r.to), r.proto, tuple(r.ports))
                      for r in rules])
    for i, j in sorted(gone.items()):
        rules[j].evidence.merge(rules[i].evidence)
    return [r for i, r in enumerate(rules) if i not in gone]


def _upstreams(t: Table, hint: Sequence[str]) -> list[str]:
    seen = sorted({dst for (dst, port, _proto) in t.dns if port == 53 and dst not in t.banned})
    return seen or list(dict.fromkeys(hint))


# A destination's ports per protocol, its evidence per protocol, its review remark
Dests = dict[str, tuple[dict[str, set[int | None]], dict[str, Evidence], str | None]]


def _destinations(t: Table, service: Service, upstreams: set[str], banned_names: set[str],
                  refused: dict[RefusedKey, Refused],
                  out: Suggestion) -> Dests:
    """`to` entry → (proto → ports, proto → evidence, review remark)."""
    dests: Dests = {}
    for (dst, proto), seen in sorted(service.seen.items()):
        names = t.names.get(dst, set())
        why = t.banned.get(dst)
        if why is None and names and names <= banned_names:
            why = "its names are those of a refused destination"
        if why is None and upstreams and proto in ("tcp", "udp") and DOT in seen.ports:
            refuse(refused, dst, DOT, proto, "DNS over TLS would bypass outguard's resolver",
                   seen.evidence)
            seen.ports.discard(DOT)
            if not seen.ports:
                continue
        if why is not None:
            for port in sorted(seen.ports, key=lambda p: -1 if p is None else p):
                refuse(refused, dst, port, proto, f"same destination: {why}", seen.evidence)
            continue
        if upstreams and proto in ("tcp", "udp") and 53 in seen.ports:
            out.through_resolver += seen.evidence.flows
            if dst not in upstreams:  # asked directly, it is blocked: say so, and how to fix
                refuse(refused, dst, 53, proto, "DNS to a name server that is not in"
                       " dns.upstreams: after `outguard dns install` the host asks outguard's"
                       " resolver, which asks only its upstreams (add it there if you use it)",
                       seen.evidence)
            if dst in upstreams and seen.ports == {53}:
                continue
            seen.ports.discard(53)  # any server: the resolver asks its upstreams instead
            if not seen.ports:
                continue
        entries = sorted(names - banned_names) or [dst]
        review = None if names else "no DNS name was ever seen for this address"
        for entry in entries:
            ports, evidence, _r = dests.setdefault(entry, ({}, {}, review))
            ports.setdefault(proto, set()).update(seen.ports)
            evidence.setdefault(proto, Evidence()).merge(seen.evidence)
    return dests


def _fold(dests: Dests, banned_names: set[str], fold: int) -> Dests:
    """Many names below one registrable domain → `*.domain` (the apex stays as it is). Only
    names reached on the same protocols and ports fold together: a wildcard must not let
    each name out on the others' ports (an NTP server's udp/123 for the API's host)."""
    below: dict[tuple[str, tuple[tuple[str, tuple[int, ...]], ...]], list[str]] = {}
    for entry in dests:
        if dests[entry][2] is not None:
            continue  # an address
        domain = registrable(entry)
        if domain is not None and domain != entry:
            below.setdefault((domain, _port_key(dests[entry][0])), []).append(entry)
    for (domain, _key), names in sorted(below.items()):
        if len(names) < fold or not wildcard_safe(domain) or any(
                b.endswith("." + domain) for b in banned_names):
            continue
        ports, evidence, _r = dests.get("*." + domain, ({}, {}, None))
        for name in names:
            got, ev, _r = dests.pop(name)
            for proto, seen in got.items():
                ports.setdefault(proto, set()).update(seen)
            for proto, e in ev.items():
                evidence.setdefault(proto, Evidence()).merge(e)
        dests["*." + domain] = (ports, evidence, None)
    return dests


def _port_key(ports: dict[str, set[int | None]]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(sorted((proto, tuple(sorted(-1 if p is None else p for p in seen)))
                        for proto, seen in ports.items()))


def ranges(ports: Iterable[int]) -> list[tuple[int, int]]:
    """Seen ports as ranges: only consecutive seen ports are joined."""
    out: list[tuple[int, int]] = []
    for port in sorted(set(ports)):
        if out and out[-1][1] == port - 1:
            out[-1] = (out[-1][0], port)
        else:
            out.append((port, port))
    return out


def _signatures(ports: dict[str, set[int | None]]) -> list[tuple[str, Ports]]:
    """(proto, ports) the destination needs; () = no port condition."""
    tcp = tuple(sorted(p for p in ports.get("tcp", ()) if p is not None))
    udp = tuple(sorted(p for p in ports.get("udp", ()) if p is not None))
    portless = any(None in ports.get(p, ()) for p in ("tcp", "udp"))
    sigs: list[tuple[str, Ports]] = []
    if "other" in ports or portless:
        return [("any", ())]
    if tcp and tcp == udp:
        sigs.append(("any", tcp))
    else:
        sigs += [(p, s) for p, s in (("tcp", tcp), ("udp", udp)) if s]
    if "icmp" in ports:
        sigs.append(("icmp", ()))
    return sigs


def _in_signature(got: str, proto: str, ports: Ports) -> bool:
    """Whether flows of protocol `got` are among those a rule of (proto, ports) allows:
    their evidence is that rule's (an address on tcp/443 and udp/123 counts once in each)."""
    if proto == "any":
        return not ports or got in ("tcp", "udp")
    return got == proto


def _rules(base: str, dests: Dests, owner: dict[str, str | int] | None,
           taken: set[str]) -> list[SuggestedRule]:
    by_sig: dict[tuple[str, Ports], list[str]] = {}
    for entry in sorted(dests):
        for sig in _signatures(dests[entry][0]):
            by_sig.setdefault(sig, []).append(entry)
    out: list[SuggestedRule] = []
    for (proto, ports), entries in sorted(by_sig.items()):
        evidence = Evidence()
        for entry in entries:
            for got_proto, e in dests[entry][1].items():
                if _in_signature(got_proto, proto, ports):
                    evidence.merge(e)
        suffix = "" if len(by_sig) == 1 else f"-{proto}{ports[0] if ports else ''}"
        name = _free(f"{base}{suffix}", taken)
        out.append(SuggestedRule(name, [Entry(e, dests[e][2]) for e in entries], proto,
                                 ranges(ports), owner, evidence))
    return out


def _owner(service: Service, per_host: bool, user_known: Callable[[str], bool],
           uid_names: dict[int, str]) -> Owner:
    if per_host:
        return None
    units = service.units
    if len(units) == 1 and None not in units and service.in_unit_cgroup:
        unit = next(iter(units))
        if unit is not None and _UNIT.fullmatch(unit):  # else check would refuse it
            return {"unit": unit}
    if len(service.uids) == 1 and None not in service.uids:
        uid = next(iter(service.uids))
        assert uid is not None
        name = service.users.get(uid, uid_names.get(uid))
        return {"user": name if name is not None and user_known(name) else uid}
    return None


def _base(group: str) -> str:
    if group == HOST:
        return "host"
    kind, _sep, what = group.partition(":")
    if kind == "unit":
        what = what.removesuffix(".service")
    else:
        what = what.rstrip("/").rsplit("/", 1)[-1] if not what.startswith("uid:") \
            else what.replace(":", "-")
    what = re.sub(r"[^A-Za-z0-9_.-]+", "-", what).strip("-_.")[:36]
    return what if what and what[0].isalnum() else f"p-{what}"[:36].rstrip("-_.") or "p"


def _unique_base(base: str, bases: dict[str, int]) -> str:
    n = bases.get(base, 0) + 1
    bases[base] = n
    return base if n == 1 else f"{base}-{n}"


def _free(name: str, taken: set[str]) -> str:
    candidate, n = name[:48], 1
    while candidate in taken:
        n += 1
        candidate = f"{name[:44]}-{n}"
    taken.add(candidate)
    return candidate
