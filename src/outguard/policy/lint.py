"""Warnings about a valid policy: things that load but are probably not what was meant.

Shadowed rules, allows a deny blocks anyway, allows of everything, nothing allowed in enforce
mode, unused or empty lists and feeds, expired rules, host names only resolved at apply time,
log rates that flood or starve the monitor. Pure: takes a `Policy` and a clock reading, returns
`Problem`s (what needs the machine is in `host`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from outguard.errors import Problem
from outguard.policy.addresses import AddrSet
from outguard.policy.loaded import Policy, format_path
from outguard.policy.model import Owner, Rule

_PROTOS = {"tcp": {"tcp"}, "udp": {"udp"}, "icmp": {"icmp"}, "any": {"tcp", "udp", "icmp", "other"}}


def as_utc(moment: datetime) -> datetime:
    """Naive times in a policy are the machine's local time, as people write them."""
    return moment.astimezone(UTC)  # a naive datetime is taken as local time


def _ports_cover(outer: Rule, inner: Rule) -> bool:
    if outer.ports is None:
        return True
    if inner.ports is None:
        return False
    return all(any(lo <= ilo and ihi <= hi for lo, hi in outer.ports) for ilo, ihi in inner.ports)


def _plain_addresses(rule: Rule) -> AddrSet | None:
    """The rule's destinations when they are all addresses or prefixes; None otherwise."""
    if rule.to is None or any(t.kind not in ("addr", "net") for t in rule.to):
        return None
    return AddrSet.of(rule.to)


def _cgroup_of(owner: Owner) -> str | None:
    """The cgroup the `for:` names, as the kernel matches it (a unit is system.slice/UNIT)."""
    if owner.unit is not None:
        return f"system.slice/{owner.unit}"
    return None if owner.cgroup is None else owner.cgroup.strip("/")


def owner_covers(outer: Owner | None, inner: Owner | None) -> bool:
    """Whether every socket `inner`'s `for:` matches, `outer`'s matches too: no `for:` is
    everyone; else each condition of `outer` is one of `inner`'s (the same user or group as
    written, the same cgroup or one above it: the kernel matches a cgroup's descendants).
    A user by name and the same user by uid are not compared (that needs the machine)."""
    if outer is None:
        return True
    if inner is None:
        return False
    for field in ("user", "group"):
        mine = getattr(outer, field)
        if mine is not None and str(mine) != str(getattr(inner, field)):
            return False
    cgroup, theirs = _cgroup_of(outer), _cgroup_of(inner)
    if cgroup is None:
        return True
    return theirs is not None and (theirs == cgroup or theirs.startswith(cgroup + "/"))


def _shadows(earlier: Rule, later: Rule, outer: AddrSet | None, inner: AddrSet | None) -> bool:
    if not owner_covers(earlier.owner, later.owner) or earlier.expires is not None:
        return False
    if not _PROTOS[later.proto] <= _PROTOS[earlier.proto] or not _ports_cover(earlier, later):
        return False
    if earlier.to is None:
        return True
    return outer is not None and inner is not None and outer.covers(inner)


def _shadow_candidates(ordered: list[tuple[str, int, Rule]],
                       plain: list[AddrSet | None]) -> list[list[int]]:
    """For each rule, the earlier rules that might cover it. An index by address keeps this
    linear for the common policy of many rules with a few addresses each."""
    by_single: dict[tuple[int, int], list[int]] = {}
    broad: list[int] = []  # rules with prefixes or every destination: compared with everyone
    out: list[list[int]] = []
    for position, (_s, _i, rule) in enumerate(ordered):
        addrs = plain[position]
        first = next(((v, version) for version in (4, 6) for v in addrs.singles[version]), None) \
            if addrs is not None else None
        found = list(broad)
        if first is not None:
            found += by_single.get(first, [])
        out.append(sorted(found))
        if rule.to is None or (addrs is not None and any(addrs.nets.values())):
            broad.append(position)
        if addrs is not None:
            for version in (4, 6):
                for value in addrs.singles[version]:
                    by_single.setdefault((value, version), []).append(position)
    return out


Warn = Callable[[tuple[str | int, ...], str], None]
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def lint(policy: Policy, now: datetime | None = None) -> list[Problem]:
    """Warnings about a valid policy, in no particular order (`load` sorts them)."""
    now = now or datetime.now(UTC)
    out: list[Problem] = []
    src = policy.source

    def warn(path: tuple[str | int, ...], text: str) -> None:
        line, col = policy.positions.of(path)
        out.append(Problem(src, line, col, format_path(path), text))

    ordered = policy.rules()
    plain = [_plain_addresses(rule) for _s, _i, rule in ordered]
    candidates = _shadow_candidates(ordered, plain)
    used: set[str] = set()
    shadowed: set[int] = set()
    for position, (section, index, rule) in enumerate(ordered):
        path: tuple[str | int, ...] = (section, index)
        if rule.expires is not None and as_utc(rule.expires) <= now:
            warn((*path, "expires"), f"rule {rule.name!r} expired on {rule.expires.isoformat()};"
                 " it is left out of the ruleset")
        _destination_warnings(policy, section, path, rule, used, warn)
        if section == "allow" and rule.to is None and rule.ports is None and rule.owner is None:
            warn(path, f"rule {rule.name!r} allows every destination on every port")
        for earlier_position in candidates[position]:
            earlier_section, earlier_index, earlier = ordered[earlier_position]
            if _shadows(earlier, rule, plain[earlier_position], plain[position]):
                verb = "blocks" if earlier_section == "deny" else "already allows"
                warn(path, f"rule {rule.name!r} never decides anything: {earlier_section}"
                     f"[{earlier_index}] {earlier.name!r} {verb} all of it first")
                shadowed.add(position)
                break
    _list_warnings(policy, used, warn)
    _policy_warnings(policy, now, warn)
    _denied_allows(ordered, shadowed, warn)
    return out


def _destination_warnings(policy: Policy, section: str, path: tuple[str | int, ...], rule: Rule,
                          used: set[str], warn: Warn) -> None:
    """A rule's destinations: names only an apply resolves, wildcards without the resolver,
    everything allowed; the lists it uses are noted in `used`."""
    for j, target in enumerate(rule.to or []):
        if target.kind == "list":
            used.add(target.value)
        elif policy.doc.dns is not None:
            continue  # outguard's resolver keeps names and wildcards fresh
        elif target.kind == "host":
            warn((*path, "to", j), f"host name {target.value!r} is resolved when the policy is"
                 " applied; its addresses go stale until the next apply")
        elif target.kind == "wildcard":
            warn((*path, "to", j), f"wildcard {target.value!r} needs outguard's DNS resolver;"
                 " until then it matches nothing in the kernel")
        elif section == "allow" and target.kind == "net" and target.value in ("0.0.0.0/0", "::/0"):
            warn((*path, "to", j), f"allows every {'IPv4' if '.' in target.value else 'IPv6'}"
                 " destination")


def _list_warnings(policy: Policy, used: set[str], warn: Warn) -> None:
    """Lists and feeds no rule uses, empty lists, names in list files without the resolver."""
    for name in policy.doc.lists:
        if name not in used:
            warn(("lists", name), f"list {name!r} is not used by any rule")
        elif not policy.doc.lists[name].file and not policy.lists[name].targets:
            warn(("lists", name), f"list {name!r} is empty: rules that use it match nothing"
                 " through it")
        elif policy.doc.dns is None and policy.lists[name].file is not None and any(
                t.kind in ("host", "wildcard") for t in policy.lists[name].targets):
            warn(("lists", name, "file"), f"list file of {name!r} holds host names: without a"
                 " 'dns:' section they match nothing (names in list files are for outguard's"
                 " resolver)")
    for name in policy.doc.feeds:
        if f"feed:{name}" not in used:
            warn(("feeds", name), f"feed {name!r} is not used by any rule (name it in a deny rule:"
                 f" '@feed:{name}')")


def _policy_warnings(policy: Policy, now: datetime, warn: Warn) -> None:
    """Warnings about the policy as a whole: nothing allowed, logging that floods or starves."""
    doc = policy.doc
    live = [r for r in doc.allow if r.expires is None or as_utc(r.expires) > now]
    if doc.mode == "enforce" and not live:
        where: tuple[str | int, ...] = next(
            ((k,) for k in ("allow", "mode") if (k,) in policy.positions.values), ())
        warn(where, "mode enforce with no allow rule in force: every new outbound connection is"
             " blocked (loopback and established connections excepted)")
    rate, per = doc.options.rate()
    per_second = rate / _SECONDS[per]
    if per_second > 1000:
        warn(("options", "log_rate"), f"{doc.options.log_rate} is no limit in practice: a flood"
             " of blocked packets floods the log and the monitor")
    elif per_second < 1 / 60:
        warn(("options", "log_rate"), f"{doc.options.log_rate}: after a few log lines, blocked"
             " packets go unlogged for a long time (the monitor sees none of them)")


def _denied_allows(ordered: list[tuple[str, int, Rule]], shadowed: set[int], warn: Warn) -> None:
    """An allowed address or network that a deny rule blocks whatever the port: deny beats
    allow, so that part of the allow rule never decides anything."""
    blockers = [(i, rule, AddrSet.of(rule.to or [])) for section, i, rule in ordered
                if section == "deny" and rule.ports is None and rule.proto == "any"
                and rule.expires is None and rule.to is not None
                and any(t.kind in ("addr", "net") for t in rule.to)]
    if not blockers:
        return
    for position, (section, index, rule) in enumerate(ordered):
        if section != "allow" or position in shadowed:  # already said of the whole rule
            continue
        for j, target in enumerate(rule.to or []):
            if target.kind not in ("addr", "net"):
                continue
            inner = AddrSet.of([target])
            for deny_index, deny, addrs in blockers:
                if owner_covers(deny.owner, rule.owner) and addrs.covers(inner):
                    warn((section, index, "to", j), f"{target.value} is blocked by"
                         f" deny[{deny_index}] {deny.name!r} (deny beats allow): allowing it"
                         " does nothing")
                    break
