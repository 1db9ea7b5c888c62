"""Put the feeds' last good copies into the applied kernel sets, as deltas in one transaction.

Place in the data flow: update (fetch → validate → store) → **sync** → `kernel.setsync`. Reads
the applied snapshot (which sets exist, what they hold: `<state>/sets/<set>.json`, never the
kernel), reloads the applied policy with its feeds (`FeedHost.load_applied`: the layers above
give it), and for every feed whose content digest moved computes, per set, the elements to add
and delete. All feeds' changes go to the kernel as one
transaction; only then are the stored elements and the kernel record (`FeedStore`) updated, so a
refused transaction leaves the last good set in the kernel and the state as it was.
"""

from __future__ import annotations

import socket
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from outguard.errors import StateError
from outguard.feeds import v4arrays
from outguard.feeds.merge import Delta, FeedSet, diff_ranges, diff_singles, diff_v4, diff_v4_keys
from outguard.feeds.policy import PREFIX, FeedList, never_block_of
from outguard.feeds.store import FeedStore
from outguard.kernel.setsync import SetChange, SyncStats
from outguard.policy.loaded import Policy
from outguard.policy.targets import text_to_int
from outguard.ruleset.intervals import net_to_range
from outguard.ruleset.keys import SetName
from outguard.state import StateDir

Applier = Callable[[Sequence[SetChange]], SyncStats]


@dataclass(frozen=True)
class FeedHost:
    """What a feed sync needs from the layers above the feeds (`apply.run.feed_host` makes it
    for the CLI and the agent alike): the applied policy as it was applied, the kernel's sets,
    and a re-apply for a feed that outgrew its set."""

    load_applied: Callable[[StateDir], Policy | None]  # `pipeline.load_applied`
    apply: Applier  # set changes into the applied kernel sets, in one transaction
    reapply: Callable[[StateDir], object]  # apply the applied policy again (bigger sets)


@dataclass
class SyncReport:
    applied: bool  # a policy is applied (else there is nothing to sync)
    changed: dict[str, tuple[int, int]] = field(default_factory=dict)  # feed → (added, deleted)
    stats: SyncStats | None = None
    warnings: list[str] = field(default_factory=list)
    committed_at: float = 0.0  # time.perf_counter() when the kernel took the transaction
    # a feed outgrew the capacity its hash set was made with: nothing was synced, the caller
    # re-applies the policy (`FeedHost.reapply`), which makes bigger sets
    outgrown: list[str] = field(default_factory=list)


def feed_sets(feed: str, names: Iterable[str]) -> list[tuple[str, str, str]]:
    """(content digest, kind, name) of each set among `names` that holds feed `feed` (its
    kernel sets are named after the list `@feed:NAME`: `ruleset.keys.SetName`)."""
    key = f"list:{PREFIX}{feed}"
    return [(got.digest, got.set_kind, n) for n in names
            if (got := SetName.of(n)) is not None and got.of_list(key)]


def decode_elements(elements: list[Any], kind: str) -> list[int] | list[tuple[int, int]]:
    """Stored nftables JSON elements → integers (addresses) or closed ranges."""
    version = int(kind[0])
    if kind[1] == "a":
        if version == 4 and all(isinstance(e, str) for e in elements):
            packed = array("I")
            packed.frombytes(b"".join(map(partial(socket.inet_pton, socket.AF_INET), elements)))
            if sys.byteorder == "little":
                packed.byteswap()
            return packed.tolist()
        return [text_to_int(e, version) for e in elements]
    out: list[tuple[int, int]] = []
    for e in elements:
        if isinstance(e, str):
            v = text_to_int(e, version)
            out.append((v, v))
        elif "prefix" in e:
            out.append(net_to_range(f"{e['prefix']['addr']}/{e['prefix']['len']}", version))
        else:
            a, b = e["range"]
            out.append((text_to_int(a, version), text_to_int(b, version)))
    return out


def _held(state: StateDir, set_name: str, kind: str) -> list[int] | list[tuple[int, int]]:
    """What the kernel set holds now, from the set store (never from the kernel)."""
    if state.has_bulk(set_name):
        return state.load_bulk(set_name)[2]
    # a set stored as nftables JSON by an older outguard
    return decode_elements(state.load_set(set_name) if state.has_set(set_name) else [], kind)


def _delta(state: StateDir, set_name: str, kind: str, content: FeedSet) -> Delta:
    """What to add to and delete from one kernel set to make it hold `content`'s part."""
    version, interval = int(kind[0]), kind[1] == "n"
    if version == 4 and state.has_bulk(set_name):
        # both sides as arrays, straight from the packed store: no million Python ints
        got_version, got_interval, count, packed = state.load_packed(set_name)
        if (got_version, got_interval) != (version, interval):
            raise StateError(f"stored elements of set {set_name} are of another kind")
        held = v4arrays.from_be(packed, 0, count * (2 if interval else 1))
        singles, firsts, lasts = content.v4_arrays()
        if interval:
            return diff_v4_keys(v4arrays.span_keys(held[0::2], held[1::2]),
                                v4arrays.span_keys(firsts, lasts))
        return diff_v4(held, singles)
    if interval:
        return diff_ranges(_held(state, set_name, kind), content.ranges(version))  # type: ignore[arg-type]
    return diff_singles(_held(state, set_name, kind), content.singles(version))  # type: ignore[arg-type]


def sync_kernel(state: StateDir, host: FeedHost, *, only: set[str] | None = None,
                fresh: Mapping[str, FeedSet] | None = None) -> SyncReport:
    """Bring the applied feed sets to the feeds' last good copies (one transaction). `fresh`:
    copies just taken, still in hand (feed → content): used instead of reading them back, when
    they were stripped with the applied policy's never-block list."""
    store = FeedStore(state.path / "feeds")
    with state.locked():
        got = state.read("applied")
        policy = host.load_applied(state)
        if got is None or policy is None:
            return SyncReport(False)
        snap = got[0]
        report = SyncReport(True, warnings=[str(w) for w in policy.warnings
                                            if "feed" in w.message])
        changes: list[SetChange] = []
        after: list[tuple[str, str, str, FeedList, str]] = []  # feed, full digest, set, list, kind
        nb_digest = never_block_of(policy.doc, policy.lists).digest() if fresh else ""
        for loaded in policy.lists.values():
            if not isinstance(loaded, FeedList):
                continue
            feed = loaded.name[len(PREFIX):]
            if only is not None and feed not in only:
                continue
            meta = store.meta(feed)
            if fresh and feed in fresh and meta.nb_digest == nb_digest:
                loaded.__dict__["content"] = fresh[feed]  # the cached_property, already known
            sets = feed_sets(feed, snap.inventory.get("sets", []))
            if not sets or sets[0][0] == loaded.digest[:12]:
                continue  # not applied, or the kernel holds this content already
            held = next((d for d in snap.lists if d.startswith(sets[0][0])), None)
            if held is None:
                continue
            # from the fetch record, before a million entries are read (an older record has
            # no counts: then from the content)
            counts = meta.kinds or loaded.content.kinds
            outgrown = [f"{feed}: {counts.get(kind, 0)} addresses for a set made for {cap}"
                        for _d, kind, name in sets
                        if (cap := snap.capacities.get(name)) is not None
                        and counts.get(kind, 0) > cap]
            if outgrown:
                report.outgrown += outgrown
                continue
            added = deleted = 0
            for _d12, kind, set_name in sets:
                delta = _delta(state, set_name, kind, loaded.content)
                if delta:
                    changes.append(SetChange(set_name, int(kind[0]), kind[1] == "n",
                                             delta.add, delta.delete))
                    added, deleted = added + len(delta.add), deleted + len(delta.delete)
                after.append((feed, held, set_name, loaded, kind))
            report.changed[feed] = (added, deleted)
            after.append((feed, held, "", loaded, ""))
        if report.outgrown:
            report.changed.clear()
            return report
        t0 = time.perf_counter()
        report.stats = host.apply(changes) if changes else SyncStats(0, 0, 0, 0, 0.0)
        report.committed_at = time.perf_counter()
        report.stats.seconds = report.committed_at - t0
        _record(state, store, after)
        return report


def _record(state: StateDir, store: FeedStore,
            after: list[tuple[str, str, str, FeedList, str]]) -> None:
    """After the commit: the set store (what `apply` and `rollback` send again) and the feed
    store's kernel record follow what the kernel now holds."""
    for feed, held, set_name, loaded, kind in after:
        if set_name:
            version, interval = int(kind[0]), kind[1] == "n"
            state.store_packed(set_name, version, interval, loaded.content.kinds[kind],
                               loaded.content.packed(version, interval))
        else:  # the set named after `held` now holds this content
            record = store.kernel_record(feed)
            record[held] = loaded.digest
            store.write_kernel_record(feed, record)


def sync_feeds(state: StateDir, host: FeedHost, *, only: set[str] | None = None,
               fresh: Mapping[str, FeedSet] | None = None) -> SyncReport:
    """`sync_kernel`, and when a feed outgrew its set, a re-apply of the policy instead (new,
    bigger sets, filled before the rules switch to them)."""
    report = sync_kernel(state, host, only=only, fresh=fresh)
    if report.outgrown:
        t0 = time.perf_counter()
        host.reapply(state)
        report.committed_at = time.perf_counter()
        report.stats = SyncStats(0, 0, 0, 0, report.committed_at - t0)
    return report
