"""What an apply will do, computed before anything changes: the planner behind `apply` and `plan`.

`make_plan` loads the policy, lowers and compiles it, and reads what outguard recorded (the state
directory) and what the kernel tells without a change (its ruleset generation; when the record
cannot be trusted, the names of the objects in our table). It returns an `ApplyPlan`: the
transactions apply sends (a delta's three phases, or the whole table), the sets it fills over
netlink, what it writes to the set store, and the snapshot it records. `executor.execute` runs a
plan, `outguard plan` prints one (`planview`): one computation, so `plan` shows what `apply` does.

Feed sets are kept. A feed's sets are named after its digest, which moves with its content and
with the never-block list (every address the policy allows explicitly): adding one allowed
address would otherwise make a new 300,000-entry set. When the applied table holds the feed's
sets under another digest, they keep their names and get the difference in place, over netlink,
the way `feeds update` syncs them; only a hash set too small for the new content is made anew.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from outguard.apply.lockrecord import carried
from outguard.apply.prefill import dns_prefill
from outguard.apply.transact import (
    CGROUPS,
    MARKER,
    CgroupLookup,
    Generation,
    Kernel,
    generation_of,
    holds_recorded,
)
from outguard.clock import Clock, system_clock
from outguard.errors import KernelError, StateError
from outguard.kernel.setsync import SetChange
from outguard.nftables import nft_tx
from outguard.nftables.model import Compiled, NftSet
from outguard.nftables.nft import compile_ruleset
from outguard.pipeline import load_policy, lower_policy
from outguard.policy.loaded import Policy
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.keys import TABLE, RuleKey, SetName
from outguard.ruleset.lower import RESOLVE_TIMEOUT, Resolver, system_resolver
from outguard.state import Pending, Snapshot, StateDir

Cmd = dict[str, Any]
MIN_CAPACITY = 4096


def capacity_for(count: int) -> int:
    """The size a feed's hash set is declared with: room to double before a sync must make a
    bigger set (`feeds.sync` asks for a re-apply then)."""
    return max(MIN_CAPACITY, 1 << max(0, 2 * count - 1).bit_length())


@dataclass
class StoreWrite:
    """Elements the set store gets once the kernel took them: a list set's (nftables JSON) or
    a feed set's (integers, stored packed)."""

    name: str
    elements: list[Any] | None = None
    bulk: tuple[int, bool, Sequence[int] | Sequence[tuple[int, int]]] | None = None

    def run(self, state: StateDir) -> None:
        if self.bulk is not None:
            state.store_bulk(self.name, *self.bulk)
        elif self.elements is not None:
            state.store_set(self.name, self.elements)


@dataclass
class KeptFeed:
    """A feed whose applied sets (named after digest `held`) now hold content `content`."""

    feed: str
    held: str
    content: str


@dataclass
class ApplyPlan:
    path: Path
    policy: Policy
    ruleset: Ruleset
    compiled: Compiled
    before: Snapshot | None
    trusted: bool  # the kernel holds exactly what `before` recorded (nobody committed since)
    start: Generation | None
    held: nft_tx.Inventory  # what the kernel holds, as far as outguard knows
    inventory: nft_tx.Inventory  # what it will hold
    phases: nft_tx.Phases | None  # a delta; None: the whole table is replaced (`full`)
    full: list[Cmd] | None
    fills: list[SetChange]  # feed sets filled or changed in place over netlink, before the switch
    undo_fills: list[SetChange]  # what puts changed feed sets back if the switch is refused
    writes: list[StoreWrite]
    kept_feeds: list[KeptFeed]
    sizes: dict[str, int]
    capacities: dict[str, int]
    warnings: list[str]
    cgroups: CgroupLookup
    pending: Pending | None  # a confirmation that waits: apply settles or refuses first
    state: StateDir = field(repr=False)
    listing_failed: bool = False  # the record was not trusted and the kernel could not list
    timings: dict[str, float] = field(default_factory=dict)  # load_ms, compile_ms
    # new FQDN sets → the addresses they start with (`dns.cache.prefill`): never stored
    prefill: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return "delta" if self.phases is not None else "full"

    @property
    def text(self) -> bool:
        return self.compiled.needs_text

    def changes_kernel(self) -> bool:
        """Does apply send anything? (A phase of only `add table` is not sent.)"""
        if self.phases is None:
            return True
        return bool(self.fills) or any(len(p) > 1 for p in (
            self.phases.prepare, self.phases.switch, self.phases.cleanup))

    def full_commands(self) -> list[Cmd]:
        """The whole table in one transaction: the first apply, or when a delta is refused."""
        if self.full is None:
            self.full = nft_tx.full(self.compiled, self._elements(None))
        return self.full

    def stored_form(self) -> bytes:
        """The full form the state directory keeps (what `rollback` and `restore` put back):
        big lists and cgroups as markers."""
        def marker(s: NftSet) -> Cmd | None:
            if s.cgroup is not None:
                return {CGROUPS: s.name, "paths": [s.cgroup]}
            if not _is_list(s.name):
                return nft_tx.set_elements(s)
            return {MARKER: s.name, "count": self.sizes[s.name]} if s.name in self.sizes \
                else {MARKER: s.name}
        return orjson.dumps(nft_tx.full(self.compiled, marker))

    def snapshot(self, applied_at: str, snapshot_id: str, generation: list[Any] | None,
                 rule_digests: dict[str, str] | None, inventory: nft_tx.Inventory) -> Snapshot:
        names = self.compiled.sets
        return Snapshot(
            policy_hash=self.policy.digest, applied_at=applied_at, mode=self.policy.doc.mode,
            source=str(self.path.resolve()), inventory=inventory.to_json(),
            counters={str(k): k.counter for k in [RuleKey("default"),
                                                  *(r.key for r in self.ruleset.rules())]},
            lists={s.digest: sorted(s.kinds) for s in self.ruleset.sources.values() if s.is_list},
            warnings=list(self.warnings), snapshot_id=snapshot_id,
            set_sizes={n: self.sizes[n] for n in names if n in self.sizes},
            capacities={n: self.capacities[n] for n in names if n in self.capacities},
            generation=generation, rule_digests=rule_digests,
            dns_listen=None if self.ruleset.dns is None else _endpoint(*self.ruleset.dns.listen),
            expires={r.counter: r.match.until.isoformat() for r in self.ruleset.rules()
                     if r.match.until is not None})

    def _elements(self, fills: list[SetChange] | None) -> Callable[[NftSet], Cmd | None]:
        """Elements of a new set for the kernel, noting the store writes. A feed set (`bulk`)
        gets its capacity and, in a delta (`fills`), is left empty here: the executor loads it
        over netlink before the rules switch to it. A cgroup set gets its cgroup if it
        exists now."""
        def elements_of(s: NftSet) -> Cmd | None:
            if s.cgroup is not None:
                found = self.cgroups(s.cgroup)
                elements = [found] if found is not None else []
            elif s.bulk is not None:
                items = s.bulk()
                self.writes.append(StoreWrite(s.name, bulk=(s.version, s.interval, items)))
                self.sizes[s.name] = len(items)
                if not s.interval:
                    s.capacity = self.capacities[s.name] = capacity_for(len(items))
                if fills is not None:
                    if items:
                        fills.append(SetChange(s.name, s.version, s.interval, items))
                    return None
                elements = s.elements()
            elif s.timeout and s.name in self.prefill:
                return {"add": {"element": {"family": "inet", "table": "outguard",
                                            "name": s.name, "elem": [
                                                {"elem": {"val": addr, "timeout": left}}
                                                for addr, left in self.prefill[s.name]]}}}
            elif _is_list(s.name) and self.state.has_set(s.name):
                elements = self.state.load_set(s.name)
            else:
                elements = s.elements()
                if _is_list(s.name):
                    self.writes.append(StoreWrite(s.name, elements=elements))
            if _is_list(s.name):
                self.sizes[s.name] = len(elements)
            if not elements:
                return None
            return {"add": {"element": {"family": TABLE.family, "table": TABLE.name,
                                        "name": s.name, "elem": elements}}}
        return elements_of


def _is_list(name: str) -> bool:
    """A named list's set: its elements go to the set store (a big list is not sent again)."""
    got = SetName.of(name)
    return got is not None and got.kind == "l"


def load(path: Path, state: StateDir, before: Snapshot | None, text: str | None,
         keep_feed_copies: bool = False) -> Policy:
    """The policy as apply loads it: list contents the applied snapshot holds are known; the
    feed store is written only with `keep_feed_copies` (apply)."""
    known = before.lists if before else {}
    return load_policy(path, text=text, known_lists=lambda digest: digest in known,
                       feed_dir=state.path / "feeds", keep_feed_copies=keep_feed_copies)


def make_plan(path: Path, state: StateDir, kernel: Kernel, *,
              resolver: Resolver = system_resolver, text: str | None = None,
              cgroups: CgroupLookup | None = None,
              resolve_timeout: float = RESOLVE_TIMEOUT,
              create_dns_user: bool = False, now: Clock = system_clock) -> ApplyPlan:
    """What applying the policy at `path` (or `text`, read from there earlier) will do at
    `now()` (which rules have expired, what is left of a cached DNS answer).
    Reads the state directory and the kernel, changes neither; only with `create_dns_user`
    (apply's call) is the resolver's missing default user created, since the kernel rule needs
    its uid, and a `file:` feed's first good read kept as its last good copy."""
    if cgroups is None:
        from outguard.kernel.cgroups import CgroupLookup as SystemCgroups  # noqa: PLC0415

        cgroups = SystemCgroups()
    t0 = time.perf_counter()
    before = state.snapshot("applied")
    pending, warnings = _pending(state)
    policy = load(path, state, before, text, keep_feed_copies=create_dns_user)
    t_load = time.perf_counter()
    warnings += [str(w) for w in policy.warnings]
    ruleset = lower_policy(policy, resolver=resolver, resolve_timeout=resolve_timeout,
                           warnings=warnings, create_dns_user=create_dns_user,
                           now=datetime.fromtimestamp(at := now(), UTC))
    known = before.lists if before else {}
    for source in ruleset.sources.values():
        if source.is_list and source.digest in known:
            source.known_kinds = frozenset(known[source.digest])
    record = _read_kernel(kernel, before)
    plan = ApplyPlan(
        path, policy, ruleset, Compiled(), before, record.trusted, record.start,
        nft_tx.Inventory(), nft_tx.Inventory(), None, None, [], [], [], [],
        dict(before.set_sizes) if before is not None else {},
        dict(before.capacities) if before is not None else {}, warnings, cgroups, pending,
        state, record.listing_failed)
    if before is not None:
        _keep_feed_sets(plan, before, record.in_kernel())
    compiled = plan.compiled = compile_ruleset(ruleset, carried(state, ruleset, warnings))
    for s in compiled.sets.values():  # a kept feed set is declared as it was made
        if s.bulk is not None and s.name in plan.capacities:
            s.capacity = plan.capacities[s.name]
    _warn_missing_cgroups(plan)
    plan.inventory = nft_tx.Inventory.of(compiled)
    plan.held = record.held(compiled)
    plan.prefill = dns_prefill(plan.ruleset, plan.compiled, set(plan.held.sets), plan.state, at)
    if plan.held.chains or plan.held.sets or plan.held.counters:
        plan.phases = nft_tx.delta_phases(compiled, plan.held, plan._elements(plan.fills),
                                          plan.inventory)
    else:  # nothing of ours in the kernel: the first apply, or the table deleted by hand
        plan.full_commands()
    plan.timings = {"load_ms": (t_load - t0) * 1000, "compile_ms": (time.perf_counter() - t_load) * 1000}
    return plan


@dataclass
class _Record:
    """What the kernel holds of ours, as far as the record (`before`) and, when it cannot be
    trusted, the kernel's own list of names tell."""

    start: Generation | None  # the ruleset generation when the plan was made
    trusted: bool  # the kernel holds exactly what `before` recorded
    recorded: nft_tx.Inventory
    listing: tuple[list[str], list[str], list[str]] | None = None
    listing_failed: bool = False  # not trusted, and the kernel could not list our table

    def in_kernel(self) -> set[str]:
        """The sets of ours in the kernel now."""
        if self.trusted:
            return set(self.recorded.sets)
        return set(self.listing[1]) if self.listing else set()

    def held(self, compiled: Compiled) -> nft_tx.Inventory:
        """What a delta starts from (empty: the whole table is replaced)."""
        if self.trusted:
            return self.recorded
        if self.listing is None:
            return nft_tx.Inventory()
        chains, sets, counters = self.listing
        # a set the kernel lists but no apply recorded may be half made (an apply killed
        # between creating a feed's set and filling it): if the policy needs it, it is left
        # out, so that the delta declares and fills it again; if not, it goes with the rest
        known = set(self.recorded.sets)
        return nft_tx.Inventory(chains, [n for n in sets if n in known or n not in compiled.sets],
                                counters)


def _read_kernel(kernel: Kernel, before: Snapshot | None) -> _Record:
    """Read what the kernel tells without a change: its generation and, when that says someone
    committed since `before`, the names of our objects and our chains' rule digests."""
    start = generation_of(kernel)
    trusted = before is not None and start is not None and start[0] != "" \
        and holds_recorded(before.generation, start)
    recorded = nft_tx.Inventory.from_json(before.inventory) if before is not None \
        else nft_tx.Inventory()
    record = _Record(start, trusted, recorded)
    if before is not None and not trusted:
        try:
            record.listing = kernel.objects() or ([], [], [])
        except KernelError:
            record.listing_failed = True
        # Someone committed since: often only set elements (a feed sync, the DNS resolver).
        # If our table's objects and every chain's rules are still those recorded, the
        # record holds all the same.
        record.trusted = record.listing is not None \
            and unchanged(kernel, before, recorded, record.listing)
    return record


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _pending(state: StateDir) -> tuple[Pending | None, list[str]]:
    try:
        return state.pending(), []
    except StateError as exc:
        return None, [str(exc)]


def unchanged(kernel: Kernel, before: Snapshot, recorded: nft_tx.Inventory,
              listing: tuple[list[str], list[str], list[str]]) -> bool:
    """Does the kernel hold exactly the objects and rules `before` recorded (elements
    aside)? Read by netlink: object names and rule digests, never set elements."""
    if before.rule_digests is None:
        return False
    chains, sets, counters = listing
    if (set(chains), set(sets), set(counters)) != \
            (set(recorded.chains), set(recorded.sets), set(recorded.counters)):
        return False
    try:
        return kernel.rules() == before.rule_digests
    except KernelError:
        return False


def _warn_missing_cgroups(plan: ApplyPlan) -> None:
    for r in plan.ruleset.rules():
        path = r.match.cgroup
        if path is not None and plan.cgroups(path) is None:
            what = f"cgroup {path}"
            plan.warnings.append(
                f"{r.section} rule {r.name!r}: {what} does not exist now (the unit is not"
                " running?): the rule matches nothing until it starts, while the agent runs"
                " (`outguard run`); without it, until outguard applies or restores again")


def _keep_feed_sets(plan: ApplyPlan, before: Snapshot, in_kernel: set[str]) -> None:
    """Feeds whose applied sets hold other content: keep the sets, sync the difference."""
    feeds = {k[len("list:feed:"):]: s for k, s in plan.ruleset.sources.items()
             if s.bulk is not None and k.startswith("list:feed:")}
    if not feeds:
        return
    from outguard.feeds.policy import FeedList  # noqa: PLC0415 - only policies with feeds
    from outguard.feeds.sync import _delta, feed_sets  # noqa: PLC0415

    recorded = before.inventory.get("sets", [])
    for feed, source in feeds.items():
        loaded = plan.policy.lists.get(f"feed:{feed}")
        sets = feed_sets(feed, recorded)
        if not isinstance(loaded, FeedList) or not sets or sets[0][0] == source.digest[:12]:
            continue
        held = next((d for d in before.lists if d.startswith(sets[0][0])), None)
        if held is None or {k for _d, k, _n in sets} != set(before.lists[held]) or any(
                n not in in_kernel or not plan.state.has_bulk(n) for _d, _k, n in sets):
            continue
        content = loaded.content
        if any(content.kinds.get(kind, 0) > cap for _d, kind, n in sets
               if kind[1] == "a" and (cap := plan.capacities.get(n)) is not None):
            continue  # outgrown: a new, bigger set
        for _d, kind, name in sets:
            version, interval = int(kind[0]), kind[1] == "n"
            delta = _delta(plan.state, name, kind, content)
            if delta:
                plan.fills.append(SetChange(name, version, interval, delta.add, delta.delete))
                plan.undo_fills.append(SetChange(name, version, interval, delta.delete,
                                                 delta.add))
                plan.writes.append(StoreWrite(name, bulk=(
                    version, interval, content.ranges(version) if interval
                    else content.singles(version))))
            plan.sizes[name] = content.kinds.get(kind, 0)
        plan.kept_feeds.append(KeptFeed(feed, held, source.digest))
        source.digest = held
