"""From a policy file to what the kernel is given, in one place: load → lower → compile.

Place in the data flow: above `policy` (load and validate), `ruleset` (lower: lists expanded,
names and users resolved, expired rules dropped), `nftables` (compile) and the feeds (a policy's
`@feed:` lists come from the last good copies in the state directory). Every command and the
agent take a policy through here — `check`, `compile`, `explain`, `plan` and `apply`, `dns
serve`, the exports, the agent's reloads, a feed round — so that each loads it with its feeds
and lowers it the same way. Exports get their ruleset from `lower_policy` (the exporters sit
beside nftables, below this module).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from pathlib import Path

from outguard.errors import Problem
from outguard.nftables.model import Compiled
from outguard.nftables.nft import compile_ruleset
from outguard.policy.load import load_policy as _load_file
from outguard.policy.load import load_text
from outguard.policy.loaded import LoadedList, Policy
from outguard.policy.model import PolicyDoc
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.lower import RESOLVE_TIMEOUT, Resolver, lower, system_resolver
from outguard.state import StateDir


class _Feeds:
    """`feeds.policy.FEEDS` (or, for apply, `KEEPING_FEEDS`), imported when a policy names a
    feed: the feeds package (numpy among it) costs every other load some 40 ms of start-up."""

    def __init__(self, keep_copies: bool = False) -> None:
        self.keep_copies = keep_copies

    def names(self) -> Collection[str]:
        from outguard.feeds.policy import FEEDS  # noqa: PLC0415

        return FEEDS.names()

    def __call__(self, doc: PolicyDoc, refs: dict[str, tuple[str, tuple[int, int]]], base: Path,
                 feed_dir: Path | None, known: Callable[[str], bool] | None, source: str,
                 problems: list[Problem], lists: Mapping[str, LoadedList] | None = None,
                 ) -> tuple[dict[str, LoadedList], list[Problem]]:
        from outguard.feeds.policy import FEEDS, KEEPING_FEEDS  # noqa: PLC0415

        loader = KEEPING_FEEDS if self.keep_copies else FEEDS
        return loader(doc, refs, base, feed_dir, known, source, problems, lists)


FEEDS = _Feeds()  # read only: check, explain, compile, plan, the agent
KEEPING_FEEDS = _Feeds(keep_copies=True)  # apply


def load_policy(path: Path, *, text: str | None = None, feed_dir: Path | None = None,
                known_lists: Callable[[str], bool] | None = None,
                keep_feed_copies: bool = False) -> Policy:
    """The policy at `path` (or `text`, read from there earlier: list files resolve beside
    `path`), with its `@feed:` lists from the last good copies in `feed_dir`. `known_lists`
    says which list contents an earlier apply validated (they are not parsed again). Only with
    `keep_feed_copies` (apply) is the feed store written: a `file:` feed's first good read."""
    feeds = KEEPING_FEEDS if keep_feed_copies else FEEDS
    if text is None:
        return _load_file(path, known_lists=known_lists, feed_dir=feed_dir, feeds=feeds)
    return load_text(text, str(path), base_dir=path.parent, known_lists=known_lists,
                     feed_dir=feed_dir, feeds=feeds)


def load_applied(state: StateDir) -> Policy | None:
    """The policy applied in `state` (None: nothing is), from its stored text, as it was applied:
    the lists it loaded are not parsed again. PolicyError if it no longer loads (a list file
    beside it went away)."""
    got = state.snapshot("applied")
    text = state.policy_text("applied")
    if got is None or text is None:
        return None
    return load_policy(Path(got.source), text=text, feed_dir=state.path / "feeds",
                       known_lists=frozenset(got.lists).__contains__)


def lower_policy(policy: Policy, *, resolver: Resolver = system_resolver,
                 resolve_timeout: float = RESOLVE_TIMEOUT, now: datetime | None = None,
                 warnings: list[str] | None = None, create_dns_user: bool = False) -> Ruleset:
    """The policy's IR (`ruleset.lower`). With `create_dns_user` (apply, the agent: what runs
    the resolver) the resolver's and the proxy's missing default users are created, since the
    kernel rules need their uids; `check`, `compile` and `plan` never create users."""
    ruleset = lower(policy, resolver=resolver, now=now, resolve_timeout=resolve_timeout,
                    warnings=warnings)
    if create_dns_user and ruleset.dns is not None:
        from outguard.dns.user import ensure  # noqa: PLC0415 - runs useradd, only with dns:

        dns = ensure(ruleset.dns)
        if dns is not ruleset.dns:
            ruleset = dataclasses.replace(ruleset, dns=dns)
    proxy = ruleset.proxy
    if create_dns_user and proxy is not None and proxy.kernel_rules and proxy.uid is None:
        # the kernel's proxy rules name the proxy's uid: its missing default user is made now
        from outguard.kernel.privsep import create_system_user  # noqa: PLC0415 - useradd

        uid, _gid = create_system_user(proxy.user, "outguard egress proxy")
        ruleset = dataclasses.replace(ruleset, proxy=dataclasses.replace(proxy, uid=uid))
    return ruleset


def compile_policy(policy: Policy, *, resolver: Resolver = system_resolver,
                   now: datetime | None = None) -> tuple[Ruleset, Compiled]:
    """The policy's IR and the nftables table it compiles to (`nftables.nft`)."""
    ruleset = lower_policy(policy, resolver=resolver, now=now)
    return ruleset, compile_ruleset(ruleset)
