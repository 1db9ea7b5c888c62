"""A feed round — update every feed the applied policy uses when it is due, then sync — and the
agent's schedule of rounds.

Place in the data flow: `outguard feeds update` runs one round (`fetch_round`, `sync_round`);
`outguard run` runs `run_feed_scheduler` as one asyncio task. Each round re-reads the applied
policy (a new apply may add feeds), updates the due ones (`update`), syncs the kernel sets
(`sync`, in a worker thread: it blocks on netlink; a feed that outgrew its set makes the policy
be applied again), and in the agent hands every alert to the hook (not again for a body refused
already: a broken `file:` feed is read every round), then sleeps until the next feed is due (at
most `max_sleep`) or `stop` is set. The layers above give the applied policy, the kernel and the
re-apply (`sync.FeedHost`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from outguard.clock import Clock, system_clock
from outguard.errors import OutguardError
from outguard.events import FeedAlert
from outguard.feeds.alert import AlertHook, emit
from outguard.feeds.fetch import ProgressHook
from outguard.feeds.policy import PREFIX, FeedList, never_block_of
from outguard.feeds.registry import resolve
from outguard.feeds.schedule import MAX_ROUND_GAP
from outguard.feeds.store import FeedStore
from outguard.feeds.sync import FeedHost, SyncReport, sync_feeds
from outguard.feeds.update import FeedResult, update_feeds
from outguard.policy.loaded import Policy
from outguard.state import StateDir

log = logging.getLogger("outguard.feeds")
RoundHook = Callable[[list[FeedResult], SyncReport | None], None]


@dataclass
class Round:
    """One round: the applied policy it read (None: nothing is applied), the feeds' results."""

    policy: Policy | None
    results: list[FeedResult] = field(default_factory=list)
    report: SyncReport | None = None  # what the sync put into the kernel (None: nothing new)


async def fetch_round(state: StateDir, host: FeedHost, *, names: Sequence[str] = (),
                      clock: Clock = system_clock, force: bool = False,
                      ignore_interval: bool = False,
                      progress: ProgressHook | None = None) -> Round:
    """Fetch, validate and keep the feeds the applied policy uses (or `names`) that are due.
    No result at all: no feed to update (nothing applied, or no `@feed:` in it)."""
    store = FeedStore(state.path / "feeds")
    policy = host.load_applied(state)
    used = [fl.spec for fl in (policy.lists.values() if policy is not None else [])
            if isinstance(fl, FeedList) and fl.name.startswith(PREFIX)]
    specs = [resolve(n, policy.doc.feeds if policy is not None else None) for n in names] or used
    if not specs:
        return Round(policy)
    nb = never_block_of(policy.doc if policy is not None else None,
                        policy.lists if policy is not None else None)
    return Round(policy, await update_feeds(specs, store, nb, clock=clock, force=force,
                                            ignore_interval=ignore_interval, progress=progress))


def sync_round(state: StateDir, host: FeedHost, got: Round) -> SyncReport | None:
    """Put what the round took into the applied kernel sets (a feed that outgrew its set: the
    policy applied again instead). Blocking: netlink."""
    if any(r.status == "updated" for r in got.results):
        got.report = sync_feeds(state, host, fresh={r.name: r.content for r in got.results
                                                    if r.content is not None})
    return got.report


async def run_round(state: StateDir, host: FeedHost, *, on_alert: AlertHook | None = None,
                    clock: Clock = system_clock, force: bool = False,
                    ignore_interval: bool = False) -> tuple[list[FeedResult], SyncReport | None]:
    """A round of the agent's: its alerts are logged and handed on, a failed sync is one."""
    got = await fetch_round(state, host, clock=clock, force=force,
                            ignore_interval=ignore_interval)
    for r in got.results:
        if r.repeat:  # the same body refused again: known, alerted already
            log.info("feed %s: the same content is still refused (%s)", r.name,
                     next((a.message for a in r.alerts if a.severity == "error"), ""))
        else:
            emit(r.alerts, on_alert)
    try:
        await asyncio.to_thread(sync_round, state, host, got)
    except OutguardError as exc:
        emit([FeedAlert("error", ",".join(r.name for r in got.results), "sync-failed",
                        f"kernel sync failed, the last good sets stay: {exc}")], on_alert)
    return got.results, got.report


async def run_feed_scheduler(state_dir: Path, host: FeedHost, *,
                             stop: asyncio.Event | None = None,
                             on_alert: AlertHook | None = None,
                             clock: Clock = system_clock,
                             max_sleep: float = MAX_ROUND_GAP, min_sleep: float = 5.0,
                             on_round: RoundHook | None = None) -> None:
    """Run until `stop` is set. Errors of one round are alerted and logged, never fatal.
    `on_round` sees every round's results and sync report (metrics, tests, the benchmark)."""
    state = StateDir(state_dir)
    stop = stop or asyncio.Event()
    failed: str | None = None  # the last round's failure: alerted once, not every round
    while not stop.is_set():
        try:
            results, report = await run_round(state, host, on_alert=on_alert, clock=clock)
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
