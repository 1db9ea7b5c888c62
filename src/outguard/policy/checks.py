"""Checks across a policy document: errors that no single value shows, and the warnings that
need the document as written.

Place in the data flow: `load` validates the shape (pydantic), then calls these on whatever part
of the document is valid, so that every error comes out in one run: unique rule names, `@list`
and `@feed:` references (with "did you mean"), owners that exist, a `dns:` section the kernel
can express, and no deny rule that cuts the resolver off from its upstreams. The warnings here
(merged ports, IPv4-mapped addresses, duplicate destinations) compare the YAML as written with
its validated form, which `lint` no longer sees.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from outguard.errors import Problem
from outguard.policy import accounts
from outguard.policy.addresses import AddrSet, parse_ip
from outguard.policy.dnsconf import DnsConfig, parse_endpoint, resolver_ids
from outguard.policy.files import regular_file_problem
from outguard.policy.messages import did_you_mean
from outguard.policy.model import PortRange, Rule, port_overlaps
from outguard.policy.targets import Target, is_mapped

Where = Callable[[str], tuple[int, int]]
_PORT: TypeAdapter[tuple[int, int]] = TypeAdapter(PortRange)


@dataclass
class NamedRule:
    """A rule as written at `section[index]`: its name (None when invalid) and, when the rule
    is valid or could be repaired for these checks, its validated form. `to_index[j]` is the
    position in the YAML of `rule.to[j]` (entries that did not validate are left out)."""

    section: str
    index: int
    name: str | None
    rule: Rule | None
    to_index: list[int]

    @property
    def path(self) -> str:
        return f"{self.section}[{self.index}]"


def _repaired(item: dict[str, Any]) -> tuple[Rule | None, list[int]]:
    """The rule with its invalid parts left out (for the checks across rules), or None."""
    try:
        rule = Rule.model_validate(item)
        return rule, list(range(len(rule.to or [])))
    except ValidationError as exc:
        errors = exc.errors()
    fixed = dict(item)
    bad_to: set[int] = set()
    for err in errors:
        loc = err["loc"]
        if len(loc) > 1 and loc[0] == "to" and isinstance(loc[1], int):
            bad_to.add(loc[1])
        elif loc:
            fixed.pop(str(loc[0]), None)
    if "name" not in fixed:
        fixed["name"] = "x"  # the name's own error is reported; the rest still gets checked
    to_index: list[int] = []
    if isinstance(fixed.get("to"), list):
        to_index = [j for j in range(len(fixed["to"])) if j not in bad_to]
        fixed["to"] = [fixed["to"][j] for j in to_index] or None
    try:
        return Rule.model_validate(fixed), to_index
    except ValidationError:
        return None, []


def rules_as_written(data: dict[str, Any]) -> list[NamedRule]:
    """Every rule of a document that did not validate: repaired where possible."""
    out: list[NamedRule] = []
    for section in ("deny", "allow"):
        raw = data.get(section)
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            if not isinstance(item, dict):
                continue
            rule, to_index = _repaired(item)
            name = item.get("name")
            out.append(NamedRule(section, i, name if isinstance(name, str) else None, rule,
                                 to_index))
    return out


def rules_of(deny: Sequence[Rule], allow: Sequence[Rule]) -> list[NamedRule]:
    return [NamedRule(section, i, r.name, r, list(range(len(r.to or []))))
            for section, rules in (("deny", deny), ("allow", allow)) for i, r in enumerate(rules)]


def _check_owner(rule: Rule, path: str, where: Where, source: str,
                 problems: list[Problem]) -> None:
    owner = rule.owner
    if owner is None:
        return
    if isinstance(owner.user, str):
        try:
            accounts.uid(owner.user)
        except KeyError:
            hint = did_you_mean(owner.user, accounts.user_names())
            problems.append(Problem(source, *where(f"{path}.for.user"), f"{path}.for.user",
                                    f"no user {owner.user!r} on this machine{hint}"))
    if isinstance(owner.group, str):
        try:
            accounts.gid(owner.group)
        except KeyError:
            hint = did_you_mean(owner.group, accounts.group_names())
            problems.append(Problem(source, *where(f"{path}.for.group"), f"{path}.for.group",
                                    f"no group {owner.group!r} on this machine{hint}"))
    if owner.unit is not None and owner.cgroup is not None:
        problems.append(Problem(source, *where(f"{path}.for"), f"{path}.for",
                                "give either 'unit' or 'cgroup', not both"))
    if all(v is None for v in (owner.user, owner.group, owner.unit, owner.cgroup)):
        problems.append(Problem(source, *where(f"{path}.for"), f"{path}.for",
                                "'for' needs at least one of user, group, unit, cgroup"))


def check_rules(rules: Sequence[NamedRule], list_names: set[str], feed_names: set[str] | None,
                where: Where, source: str, problems: list[Problem]) -> None:
    """Unique names, known `@list`s and `@feed:`s (`feed_names` None: no feed can be loaded
    here), ports only with tcp/udp, real owners."""
    seen: dict[str, str] = {}
    for nr in rules:
        path = nr.path
        if nr.name is not None and nr.name in seen:
            problems.append(Problem(source, *where(f"{path}.name"), f"{path}.name",
                                    f"rule name {nr.name!r} is already used by {seen[nr.name]}"))
        elif nr.name is not None:
            seen[nr.name] = path
        rule = nr.rule
        if rule is None:
            continue
        for j, target in zip(nr.to_index, rule.to or [], strict=False):
            at = f"{path}.to[{j}]"
            if target.kind != "list":
                continue
            if target.value.startswith("feed:"):
                feed = target.value[len("feed:"):]
                if feed_names is None:
                    problems.append(Problem(source, *where(at), at, f"@feed:{feed}: feeds are not"
                                            " loaded here (no feed loader was given)"))
                elif feed not in feed_names:
                    problems.append(Problem(source, *where(at), at, f"no feed named {feed!r}"
                                            f"{did_you_mean(feed, feed_names)} (`outguard feeds"
                                            " list` shows the registry; add your own under"
                                            " 'feeds')"))
            elif target.value not in list_names:
                hint = did_you_mean(target.value, list_names)
                problems.append(Problem(source, *where(at), at,
                                        f"no list named {target.value!r} in 'lists'{hint}"))
        if rule.ports and rule.proto == "icmp":
            problems.append(Problem(source, *where(f"{path}.ports"), f"{path}.ports",
                                    "ports need proto tcp, udp or any, not icmp"))
        _check_owner(rule, path, where, source, problems)


def as_written_warnings(data: dict[str, Any], rules: Sequence[NamedRule], where: Where,
                        source: str) -> list[Problem]:
    """What validation changed silently: overlapping ports merged, IPv4-mapped addresses read
    as IPv4, the same destination twice in one rule."""
    out: list[Problem] = []
    for nr in rules:
        rule, path = nr.rule, nr.path
        if rule is None:
            continue
        item = data[nr.section][nr.index]
        raw_ports = item.get("ports")
        if rule.ports and isinstance(raw_ports, list) and len(raw_ports) != len(rule.ports):
            written = [_PORT.validate_python(p) for p in raw_ports]
            pairs = ", ".join(dict.fromkeys(f"{_ports(a)} and {_ports(b)}"
                                            for a, b in port_overlaps(written)))
            out.append(Problem(source, *where(f"{path}.ports"), f"{path}.ports",
                               f"ports {pairs} overlap; merged into"
                               f" {', '.join(_ports(p) for p in rule.ports)}"))
        raw_to = item.get("to") if isinstance(item.get("to"), list) else []
        seen: dict[Target, int] = {}
        for j, target in zip(nr.to_index, rule.to or [], strict=False):
            at = f"{path}.to[{j}]"
            if isinstance(raw_to[j], str) and is_mapped(raw_to[j]):
                out.append(Problem(source, *where(at), at, mapped_message(raw_to[j], target)))
            if target in seen:
                out.append(Problem(source, *where(at), at, f"{target.value} is already"
                                   f" to[{seen[target]}] of this rule"))
            else:
                seen[target] = j
        out += _covered_within(rule, nr, where, source)
    return out


def mapped_message(written: str, target: Target) -> str:
    return (f"{written.strip()!r} is an IPv4-mapped IPv6 address: it is read as {target.value}"
            " (such connections leave as IPv4 packets); write it so")


def _covered_within(rule: Rule, nr: NamedRule, where: Where, source: str) -> list[Problem]:
    """An address or network of a rule that another of its networks already covers."""
    targets = list(zip(nr.to_index, rule.to or [], strict=False))
    nets = [(j, t) for j, t in targets if t.kind == "net"]
    if not nets:
        return []
    out = []
    firsts = {t: j for j, t in reversed(targets)}
    for j, t in targets:
        if t.kind not in ("addr", "net") or firsts[t] != j:  # a repeat is said once, above
            continue
        inner = AddrSet.of([t])
        for k, net in nets:
            if k != j and net != t and AddrSet.of([net]).covers(inner):
                at = f"{nr.path}.to[{j}]"
                out.append(Problem(source, *where(at), at,
                                   f"{t.value} is inside {net.value} (to[{k}]) of this rule"))
                break
    return out


def _ports(p: tuple[int, int]) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}-{p[1]}"


def check_dns(dns: DnsConfig, base: Path, where: Where, source: str, problems: list[Problem],
              warnings: list[Problem]) -> int | None:
    """A `dns:` section the kernel can express; returns the resolver's uid when known. (Scope
    ids, IPv4-mapped addresses and impossible uids are refused by the model, `policy.dnsconf`.)"""
    for i, text in enumerate(dns.upstreams):
        at = f"dns.upstreams[{i}]"
        addr = ipaddress.ip_address(parse_endpoint(text)[0])
        why = None
        if addr.is_unspecified or addr.is_multicast or str(addr) == "255.255.255.255":
            why = "is not an address a DNS server can be reached at"
        if why is not None:
            problems.append(Problem(source, *where(at), at, f"{text!r} {why}"))
        elif text in dns.upstreams[:i]:
            warnings.append(Problem(source, *where(at), at, f"{text!r} is listed twice"))
    for i, name in enumerate(dns.blocklists):
        why = regular_file_problem(Path(name) if os.path.isabs(name) else base / name)
        if why is not None:
            at = f"dns.blocklists[{i}]"
            problems.append(Problem(source, *where(at), at,
                                    f"cannot read DNS blocklist {name!r}: {why}"))
    user = dns.user
    try:  # the lookup `lower` makes too
        uid, _gid = resolver_ids(dns)  # None: the resolver's own default user, `apply` makes it
    except KeyError:
        hint = did_you_mean(str(user), accounts.user_names())
        problems.append(Problem(source, *where("dns.user"), "dns.user",
                                f"no user {user!r} on this machine{hint}"))
        return None
    except ValueError as exc:
        problems.append(Problem(source, *where("dns.user"), "dns.user", str(exc)))
        return None
    return uid


def check_upstreams_not_denied(dns: DnsConfig, uid: int | None, rules: Sequence[NamedRule],
                               list_targets: Callable[[str], list[Target] | None], where: Where,
                               source: str, problems: list[Problem]) -> None:
    """A deny rule that covers a `dns.upstreams` address cuts every name off: deny rules come
    before the resolver's own accept. Lists count when their entries are known here; feeds
    never list an upstream (it is on their never-block list)."""
    upstreams = [(i, text, *parse_endpoint(text)) for i, text in enumerate(dns.upstreams)]
    for nr in rules:
        rule = nr.rule
        if nr.section != "deny" or rule is None or rule.proto == "icmp":
            continue
        if rule.owner is not None and not (rule.owner.user is not None and uid is not None
                                           and _uid_of(rule.owner.user) == uid
                                           and rule.owner.group is None and rule.owner.unit is None
                                           and rule.owner.cgroup is None):
            continue  # another process's traffic (or one we cannot tell)
        for i, text, addr, port in upstreams:
            if rule.ports is not None and not any(lo <= port <= hi for lo, hi in rule.ports):
                continue
            parsed = parse_ip(addr)
            if parsed is None:  # a scope id: its own error above
                continue
            via = _covering(rule, nr, parsed, list_targets)
            if via is not None:
                problems.append(Problem(
                    source, *where(via[0]), via[0],
                    f"deny rule {rule.name!r} covers dns.upstreams[{i}] {text!r}{via[1]}: every"
                    " DNS query would fail. Take the upstream out of it, or use another upstream"))


def _uid_of(user: str | int) -> int | None:
    try:
        return accounts.uid(user)
    except KeyError:
        return None


def _covering(rule: Rule, nr: NamedRule, addr: tuple[int, int],
              list_targets: Callable[[str], list[Target] | None]) -> tuple[str, str] | None:
    """(path, how) of the part of the rule that covers the address, or None."""
    if rule.to is None:
        return nr.path, " (it has no 'to': every destination)"
    value, version = addr
    for j, target in zip(nr.to_index, rule.to, strict=False):
        at = f"{nr.path}.to[{j}]"
        if target.kind in ("addr", "net") and AddrSet.of([target]).contains(value, version):
            return at, f" ({target.value})"
        if target.kind == "list":
            entries = list_targets(target.value)
            if entries and AddrSet.of(entries).contains(value, version):
                return at, f" (through list @{target.value})"
    return None
