"""Feeds in the agent: update every feed the applied policy uses when it is due, then sync.

Place in the data flow: `outguard run` starts `run_feed_scheduler` as one asyncio task. Each round
re-reads the applied policy (a new apply may add feeds), updates the due ones (`update`), syncs
the kernel sets (`sync`, in a worker thread: it blocks on netlink), hands every alert to the hook
(not again for a body refused already: a broken `file:` feed is read every round), then sleeps
until the next feed is due (at most `max_sleep`) or `stop` is set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from outguard.errors import OutguardError
from outguard.feeds.alert import AlertHook, FeedAlert, emit
from outguard.feeds.policy import PREFIX, FeedList, never_block_of
from outguard.feeds.schedule import MAX_ROUND_GAP
from outguard.feeds.store import FeedStore
from outguard.feeds.sync import Applier, SyncReport, applied_policy, sync_feeds
from outguard.feeds.update import FeedResult, update_feeds
from outguard.kernel.setsync import SetChange, SyncStats, apply_in
from outguard.state import StateDir

log = logging.getLogger("outguard.feeds")
RoundHook = Callable[[list[FeedResult], SyncReport | None], None]


def _reapply(state: StateDir, netns: str | None) -> None:
    from outguard.engine import reapply  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415

    with Nft(netns) as nft:
        reapply(state, nft)


async def run_round(state: StateDir, *, apply: Applier, on_alert: AlertHook | None = None,
                    clock: Callable[[], float] = time.time, force: bool = False,
                    ignore_interval: bool = False,
                    netns: str | None = None) -> tuple[list[FeedResult], SyncReport | None]:
    store = FeedStore(state.path / "feeds")
    policy = applied_policy(state, store.root)
    if policy is None:
        return [], None
    specs = [fl.spec for fl in policy.lists.values()
             if isinstance(fl, FeedList) and fl.name.startswith(PREFIX)]
    results = await update_feeds(specs, store, never_block_of(policy.doc, policy.lists), clock=clock,
                                 force=force, ignore_interval=ignore_interval)
    for r in results:
        if r.repeat:  # the same body refused again: known, alerted already
            log.info("feed %s: the same content is still refused (%s)", r.name,
                     next((a.message for a in r.alerts if a.severity == "error"), ""))
        else:
            emit(r.alerts, on_alert)
    report = None
    if any(r.status == "updated" for r in results):
        try:
            report = await asyncio.to_thread(
                sync_feeds, state, apply, lambda: _reapply(state, netns),
                fresh={r.name: r.content for r in results if r.content is not None})
        except OutguardError as exc:
            emit([FeedAlert("error", ",".join(r.name for r in results), "sync-failed",
                            f"kernel sync failed, the last good sets stay: {exc}")], on_alert)
    return results, report


async def run_feed_scheduler(state_dir: Path, *, netns: str | None = None,
                             stop: asyncio.Event | None = None,
                             on_alert: AlertHook | None = None,
                             clock: Callable[[], float] = time.time,
                             max_sleep: float = MAX_ROUND_GAP, min_sleep: float = 5.0,
                             on_round: RoundHook | None = None) -> None:
    """Run until `stop` is set. Errors of one round are alerted and logged, never fatal.
    `on_round` sees every round's results and sync report (metrics, tests, the benchmark)."""
    state = StateDir(state_dir)
    stop = stop or asyncio.Event()

    def apply(changes: Sequence[SetChange]) -> SyncStats:
        return apply_in(netns, changes)

    failed: str | None = None  # the last round's failure: alerted once, not every round
    while not stop.is_set():
        try:
            results, report = await run_round(state, apply=apply, on_alert=on_alert, clock=clock,
                                              netns=netns)
            failed = None
        except OutguardError as exc:
            if str(exc) != failed:
                emit([FeedAlert("error", "*", "round-failed", "no feed is updated until this is"
                                f" fixed (the last good sets stay): {exc}")], on_alert)
            else:
                log.error("feed round failed again: %s", exc)
            failed, results, report = str(exc), [], None
        if on_round is not None:
            on_round(results, report)
        due = [r.next_due for r in results if r.next_due > 0]
        wait = max(min_sleep, min([max_sleep, *(d - clock() for d in due)]))
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            continue
