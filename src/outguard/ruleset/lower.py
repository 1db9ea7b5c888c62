"""Policy → IR: expand lists, resolve host names and users, drop expired rules.

The only step that asks the outside world (DNS, the user database, the clock), and it asks through
functions passed in, so tests drive them. Host names are resolved here, at apply time (policies
without `dns:`), all at once and within a bounded time; a name that does not resolve matches
nothing, with a warning, instead of failing the apply: at boot there may be no DNS yet.
"""

from __future__ import annotations

import os.path
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from outguard.errors import PolicyError, Problem
from outguard.policy import accounts
from outguard.policy.dnsconf import resolver_ids
from outguard.policy.lint import as_utc
from outguard.policy.loaded import LoadedList, Policy, format_path
from outguard.policy.model import Rule
from outguard.policy.proxyconf import ONLY_EGRESS_PORTS
from outguard.policy.targets import Target, parse_target
from outguard.ruleset.ir import (
    DnsSettings,
    Elements,
    IRRule,
    Match,
    OwnSource,
    ProxySettings,
    Ruleset,
    Section,
    Source,
)
from outguard.ruleset.keys import SetName

Resolver = Callable[[str], list[str]]


def system_resolver(name: str) -> list[str]:
    """Addresses of a host name through the system resolver (getaddrinfo)."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _match(rule: Rule) -> Match:
    owner = rule.owner
    cgroup = None
    if owner is not None and owner.unit is not None:
        cgroup = f"system.slice/{owner.unit}"
    elif owner is not None and owner.cgroup is not None:
        cgroup = owner.cgroup.strip("/")
    return Match(
        proto=rule.proto,
        ports=tuple(rule.ports or ()),
        uid=accounts.uid(owner.user) if owner is not None and owner.user is not None else None,
        gid=accounts.gid(owner.group) if owner is not None and owner.group is not None else None,
        cgroup=cgroup,
        cgroup_level=cgroup.count("/") + 1 if cgroup else 0,
        until=_until(rule.expires) if rule.expires is not None else None,
    )


def _until(expires: datetime) -> datetime:
    """The moment a rule stops matching, to the whole second: what the kernel's `meta time`
    check can express, so that `decide` and the kernel switch at the same instant."""
    return as_utc(expires).replace(microsecond=0)


RESOLVE_TIMEOUT = 5.0  # seconds for all of a policy's names together
_RESOLVE_THREADS = 16


def resolve_names(names: Sequence[str], resolver: Resolver,
                  timeout: float = RESOLVE_TIMEOUT) -> dict[str, list[str]]:
    """The addresses of each name, asked concurrently; a name that has not answered when
    `timeout` is up counts as not resolving (at boot there may be no DNS yet: the resolver's
    own timeouts and retries took ~20 s). The threads are daemons: one stuck in getaddrinfo
    is abandoned, and does not hold up the command's exit."""
    work: queue.SimpleQueue[str] = queue.SimpleQueue()
    for name in names:
        work.put(name)
    got: dict[str, list[str]] = {}
    done = threading.Condition()

    def worker() -> None:
        while True:
            try:
                name = work.get_nowait()
            except queue.Empty:
                return
            try:
                answer = list(resolver(name))
            except Exception:  # a resolver that fails is one that does not answer
                answer = []
            with done:
                got[name] = answer
                done.notify_all()

    for _ in range(min(_RESOLVE_THREADS, len(names))):
        threading.Thread(target=worker, name="outguard-resolve", daemon=True).start()
    deadline = time.monotonic() + timeout
    with done:
        while len(got) < len(names) and (left := deadline - time.monotonic()) > 0:
            done.wait(left)
        return {name: got.get(name, []) for name in names}


def _resolve_all(names: dict[str, tuple[str | int, ...]], resolver: Resolver, policy: Policy,
                 timeout: float, warnings: list[str]) -> dict[str, list[Target]]:
    """Resolve every host name once. A name with no address (no DNS yet, at boot) matches
    nothing, with a warning naming its first use: the rule still applies for its other
    destinations, and the name is asked again at the next apply."""
    out: dict[str, list[Target]] = {}
    answers = resolve_names(list(names), resolver, timeout)
    for name, texts in answers.items():
        targets = []
        for text in texts:
            try:
                targets.append(parse_target(text))
            except ValueError:
                continue
        if not targets:
            warnings.append(str(Problem(
                policy.source, *policy.positions.of(names[name]), format_path(names[name]),
                f"host name {name!r} does not resolve now: nothing is allowed or denied for it"
                " (it matches nothing) until it resolves at a later apply")))
        out[name] = targets
    return out


def fqdn_set_name(section: str, rule: Rule) -> str:
    """Base name of a rule's DNS-filled sets (`_4`/`_6` appended): predictable, and new when the
    rule's names change, so that a name taken out of a rule stops being allowed at once."""
    return SetName.fqdn_base(section, rule.name, [t.value for t in rule.to or []
                                                  if t.kind in ("host", "wildcard", "list")])


def _elements_of(loaded: LoadedList, resolved: dict[str, list[Target]]) -> Callable[[], Elements]:
    return lambda: Elements.of(loaded.targets, resolved)


def _const(elements: Elements) -> Callable[[], Elements]:
    return lambda: elements


def lower(policy: Policy, *, resolver: Resolver = system_resolver,
          now: datetime | None = None, resolve_timeout: float = RESOLVE_TIMEOUT,
          warnings: list[str] | None = None) -> Ruleset:
    """The IR of a loaded policy. What could not be had now (a host name that does not
    resolve) degrades to matching nothing, with a message appended to `warnings`."""
    now = now or datetime.now(UTC)
    found: list[str] = [] if warnings is None else warnings
    doc = policy.doc
    live = [(s, i, r) for s, i, r in policy.rules()
            if r.expires is None or _until(r.expires) > now]
    used_lists = {t.value for _s, _i, r in live for t in r.to or [] if t.kind == "list"}
    hosts: dict[str, tuple[str | int, ...]] = {}
    # With a `dns:` section outguard's resolver fills per-rule sets: nothing to resolve now.
    dns = doc.dns is not None
    for section, index, rule in [] if dns else live:
        for j, t in enumerate(rule.to or []):
            if t.kind == "host":
                hosts.setdefault(t.value, (section, index, "to", j))
    # Names in inline lists are resolved like a rule's own; names in list FILES (domain feeds)
    # are for the DNS resolver, not for thousands of lookups at apply time.
    for name in [] if dns else sorted(used_lists):
        if policy.lists[name].file is None:
            for j, t in enumerate(policy.lists[name].targets):
                if t.kind == "host":
                    hosts.setdefault(t.value, ("lists", name, j))
    resolved = _resolve_all(hosts, resolver, policy, resolve_timeout, found)

    sources: dict[str, Source] = {}
    for name in sorted(used_lists):
        loaded = policy.lists[name]
        if isinstance(loaded, OwnSource):  # `@feed:NAME`: the feed makes its own Source
            sources[f"list:{name}"] = loaded.source(f"list:{name}")
            continue
        sources[f"list:{name}"] = Source(
            f"list:{name}", loaded.digest,
            _elements_of(loaded, resolved))
    rules: dict[Section, list[IRRule]] = {"deny": [], "allow": []}
    for section, index, rule in live:
        to = rule.to or []
        elements = Elements.of([t for t in to if t.kind in ("addr", "net", "host")], resolved)
        inline = None
        if elements:
            inline = f"rule:{section}:{rule.name}"
            sources[inline] = Source(inline, elements.digest(), _const(elements))
        sec: Section = "deny" if section == "deny" else "allow"
        rules[sec].append(IRRule(
            section=sec, index=index, name=rule.name, match=_match(rule), inline=inline,
            lists=tuple(f"list:{t.value}" for t in to if t.kind == "list"),
            any_destination=rule.to is None,
            names=tuple(t.value for t in to if t.kind == "host"),
            wildcards=tuple(t.value for t in to if t.kind == "wildcard"),
            comment=rule.comment,
            fqdn_set=fqdn_set_name(sec, rule) if dns and _has_names(rule, policy) else None))
    settings = None
    list_names: dict[str, tuple[str, ...]] = {}
    if doc.dns is not None:
        try:
            uid, gid = resolver_ids(doc.dns)
        except (KeyError, ValueError) as exc:
            text = (f"no user {doc.dns.user!r} on this machine" if isinstance(exc, KeyError)
                    else str(exc))
            raise PolicyError([Problem(policy.source, *policy.positions.of(("dns", "user")),
                                       "dns.user", text)]) from None
        settings = DnsSettings.of(doc.dns, uid, os.path.dirname(os.path.abspath(policy.source)),
                                  gid=gid)
        list_names = {f"list:{n}": tuple(t.value for t in policy.lists[n].targets
                                         if t.kind in ("host", "wildcard"))
                      for n in sorted(used_lists)}
    return Ruleset(
        mode=doc.mode, default_action=doc.options.default_action,
        nflog_group=doc.options.nflog_group, log_rate=doc.options.rate(),
        forward=doc.options.forward, sources=sources,
        deny=tuple(rules["deny"]), allow=tuple(rules["allow"]), policy_digest=policy.digest,
        resolved={k: tuple(t.value for t in v) for k, v in resolved.items()},
        dns=settings, list_names=list_names, learn=doc.learn, proxy=_proxy(policy))


def _proxy(policy: Policy) -> ProxySettings | None:
    """The `proxy:` section's kernel part, with the proxy user's uid (None while the missing
    default user is not created yet; `load` refused any other missing user, and root)."""
    config = policy.doc.proxy
    if config is None:
        return None
    found = accounts.user_ids(config.user)
    return ProxySettings(str(config.user), found[0] if found is not None else None,
                         ONLY_EGRESS_PORTS if config.only_egress else (),
                         tuple(sorted(config.transparent)), config.transparent_port)


def _has_names(rule: Rule, policy: Policy) -> bool:
    return any(t.kind in ("host", "wildcard") or (
        t.kind == "list" and any(x.kind in ("host", "wildcard")
                                 for x in policy.lists[t.value].targets))
        for t in rule.to or [])
