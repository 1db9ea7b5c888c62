"""`outguard apply` and a re-apply: plan (`applyplan`), execute (`executor`), and never end
with no table.

Glue between the plan (policy → IR → transactions, computed without changing anything) and the
two kinds of I/O: the kernel (`transact`, `kernel.libnft`) and the state directory. The kernel,
the clock and the watchdog launcher are passed in. A delta is three transactions (new objects,
the switch, the cleanup); the first apply, or one whose delta the kernel refuses, replaces the
whole table in one. A policy that does not load never reaches the kernel, and a transaction the
kernel refuses changes nothing; when that leaves the namespace with no table of ours at all
(a boot, a table deleted by hand), `recovery.fall_back` puts the last applied ruleset back, or
a fail-closed one, and the apply fails loudly.

Rollback, confirm, remove and restore are in `recovery`, `status` in `status`. A feed round
re-applies through here too (`feed_host`: what the feeds are given from the layers above them).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from outguard.apply.applyplan import make_plan
from outguard.apply.executor import ApplyReport, execute
from outguard.apply.recovery import FailClosedError, fall_back, refuse_pending, settle_pending
from outguard.apply.transact import CgroupLookup, Kernel
from outguard.clock import Clock, system_clock
from outguard.errors import OutguardError, StateError
from outguard.pipeline import load_applied
from outguard.ruleset.lower import RESOLVE_TIMEOUT, Resolver, system_resolver
from outguard.state import StateDir

if TYPE_CHECKING:
    from outguard.feeds.sync import FeedHost


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """An apply makes some 100k short-lived containers (IR, nft expressions, JSON). The cyclic
    collector's passes over them took 30-50 ms at random moments of a 1,000-rule apply and
    free nothing that reference counting does not; they run again once the apply is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def apply_policy(path: Path, state: StateDir, kernel: Kernel, *,
                 resolver: Resolver = system_resolver,
                 confirm_timeout: float | None = None,
                 spawn_watchdog: Callable[[str, float, str], int] | None = None,
                 now: Clock = system_clock, text: str | None = None,
                 cgroups: CgroupLookup | None = None,
                 resolve_timeout: float = RESOLVE_TIMEOUT) -> ApplyReport:
    """Apply the policy at `path` (or `text`, the policy read from there earlier). A stale
    pending confirmation (its deadline passed, or its watchdog is gone) is rolled back first;
    one still waiting refuses the apply. FailClosedError when the policy could not be applied and
    outguard put back the last applied ruleset or a fail-closed one."""
    t0 = time.perf_counter()
    with state.locked(), _gc_paused():
        settled = settle_pending(state, kernel, now(), cgroups=cgroups)
        refuse_pending(state, now())
        try:
            plan = make_plan(path, state, kernel, resolver=resolver, text=text,
                             cgroups=cgroups, resolve_timeout=resolve_timeout,
                             create_dns_user=True, now=now)
            report = execute(plan, kernel, confirm_timeout=confirm_timeout,
                             spawn_watchdog=spawn_watchdog, now=now)
        except OutguardError as exc:
            try:
                done = fall_back(state, kernel, path, exc, text=text, cgroups=cgroups)
            except OutguardError as worse:
                raise FailClosedError(exc, f"NO TABLE: outguard could not put one back"
                                           f" either: {worse}") from worse
            if done is not None:
                raise FailClosedError(exc, done) from exc
            raise
    report.settled = settled
    report.timings = {**plan.timings, "commit_ms": report.timings["commit_ms"],
                      "total_ms": (time.perf_counter() - t0) * 1000}
    return report


def reapply(state: StateDir, kernel: Kernel, *,
            resolver: Resolver = system_resolver) -> ApplyReport:
    """Apply the applied policy again, from its stored text: a feed that outgrew its set gets
    a new, bigger one (`feeds.sync` asks for this), filled before the rules switch to it."""
    got = state.read("applied")
    text = state.policy_text("applied")
    if got is None or text is None:
        raise StateError("nothing is applied: nothing to re-apply")
    return apply_policy(Path(got[0].source), state, kernel, resolver=resolver, text=text)


def reapply_in(state: StateDir, netns: str | None = None) -> ApplyReport:
    """`reapply` through libnftables in network namespace `netns` (None: this one)."""
    from outguard.kernel.libnft import Nft  # noqa: PLC0415

    with Nft(netns) as nft:
        return reapply(state, nft)


def feed_host(netns: str | None = None) -> FeedHost:
    """What a feed round needs from above the feeds, for the kernel of `netns`: the applied
    policy (`pipeline.load_applied`), netlink for the sets, and `reapply_in`."""
    from outguard.feeds.sync import FeedHost  # noqa: PLC0415 - numpy: only with feeds
    from outguard.kernel.setsync import apply_in  # noqa: PLC0415

    return FeedHost(load_applied, lambda changes: apply_in(netns, changes),
                    lambda state: reapply_in(state, netns))
