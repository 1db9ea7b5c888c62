"""Run an apply's plan: the watchdog, the transactions, then what the state directory records.

`applyplan` computed everything (the phases of a delta or the whole table, the feed sets to fill
over netlink, the store writes, the snapshot); this module only sends and records, in the order
that keeps the host safe: the watchdog runs before the first commit (a killed apply is rolled
back), the set store and the snapshot follow the kernel (a refused transaction records nothing),
and the rules the kernel holds right after the commit are read back for drift (`status`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from outguard.apply.applyplan import ApplyPlan
from outguard.apply.prefill import dns_prefill
from outguard.apply.transact import Kernel, Watched, rule_digests, run, switch
from outguard.clock import Clock, system_clock
from outguard.errors import KernelError, StateError
from outguard.nftables import nft_tx
from outguard.state import Pending


@dataclass
class ApplyReport:
    policy_hash: str
    mode: str
    rules: int
    warnings: list[str]
    method: str  # "delta" or "full"
    timings: dict[str, float] = field(default_factory=dict)
    pending: Pending | None = None
    settled: str | None = None  # a stale confirmation rolled back before this apply


def execute(plan: ApplyPlan, kernel: Kernel, *, confirm_timeout: float | None = None,
            spawn_watchdog: Callable[[str, float, str], int] | None = None,
            now: Clock = system_clock, fallback: str | None = None) -> ApplyReport:
    """Run a plan: the watchdog first (with a confirmation window), the transactions, then what
    the state directory records. The caller holds the state lock."""
    state = plan.state
    t0 = time.perf_counter()
    watched = Watched(kernel)
    if watched.start != plan.start:
        watched.clean = False  # someone committed since the plan read the generation
    new_pending = _start_watchdog(plan, confirm_timeout, spawn_watchdog, now)
    try:
        method, inventory, refused = _send(plan, watched)
    except BaseException:
        if new_pending is not None:
            state.clear_pending()
            _stop(new_pending.watchdog_pid)
        raise
    t_commit = time.perf_counter()
    for write in plan.writes:
        write.run(state)
    if plan.kept_feeds:
        _record_kept_feeds(plan)
    # only while no one else committed since the plan do the other chains hold what it read
    digests = rule_digests(kernel, watched.last,
                           **(_read_back(plan, method, inventory) if watched.clean else {}))
    applied_at = datetime.fromtimestamp(now(), UTC).isoformat(timespec="seconds")
    snap = plan.snapshot(applied_at, uuid.uuid4().hex,
                         watched.recorded(), digests, inventory)
    snap.fallback = fallback
    state.write(snap, plan.policy.text, plan.stored_form())
    return ApplyReport(plan.policy.digest, plan.policy.doc.mode, len(plan.ruleset.rules()),
                       [*plan.warnings, *([refused] if refused else [])], method,
                       {"load_ms": 0.0, "commit_ms": (t_commit - t0) * 1000}, new_pending)


def _start_watchdog(plan: ApplyPlan, confirm_timeout: float | None,
                    spawn_watchdog: Callable[[str, float, str], int] | None,
                    now: Clock) -> Pending | None:
    """With a confirmation window: record the pending confirmation and start its watchdog,
    before anything is sent (a killed apply is then rolled back)."""
    if confirm_timeout is None:
        return None
    if spawn_watchdog is None:
        raise StateError("no watchdog launcher for --confirm-timeout")
    token, deadline = uuid.uuid4().hex, now() + confirm_timeout
    base = plan.before.snapshot_id if plan.before is not None else ""
    pending = Pending(token, deadline, 0, plan.policy.digest, base)
    plan.state.set_pending(pending)
    pending.watchdog_pid = spawn_watchdog(token, deadline, base)
    plan.state.set_pending(pending)
    return pending


def _send(plan: ApplyPlan, watched: Watched) -> tuple[str, nft_tx.Inventory, str | None]:
    """The plan's transactions; the method used ("delta", or "full" when the kernel refused
    the delta), what the kernel holds afterwards (with what a refused cleanup left), and a
    warning when that was not what the plan said."""
    inventory = plan.inventory
    try:
        if plan.phases is None:
            run(watched, plan.full_commands(), plan.text)
        elif not switch(watched, plan.phases, plan.text, plan.fills, plan.undo_fills):
            # what refused the cleanup may be an object of someone else's in our table:
            # the next apply lists the kernel's and deletes it with the leftovers
            watched.clean = False
            gone = nft_tx.leftovers(plan.compiled, plan.held)
            inventory = nft_tx.Inventory(inventory.chains + gone.chains,
                                         inventory.sets + gone.sets,
                                         inventory.counters + gone.counters, inventory.rules)
    except KernelError as exc:
        if plan.phases is None:
            raise
        # the kernel does not hold what we recorded (someone changed or removed the table):
        # replace the whole table instead, still in one transaction. Not what `plan` showed:
        # said, since every set is made again; the FQDN sets the kernel held get their
        # addresses from the resolver's saved cache, as new ones do (`apply.prefill`)
        plan.prefill.update(dns_prefill(plan.ruleset, plan.compiled, plan.prefill, plan.state))
        run(watched, plan.full_commands(), plan.text)
        return "full", inventory, (
            f"the kernel refused the planned delta ({str(exc).strip()[:200]}): the whole table"
            " was replaced instead (every set made again; the DNS-filled sets from the"
            " resolver's saved cache)")
    return plan.method, inventory, None


def _read_back(plan: ApplyPlan, method: str,
               inventory: nft_tx.Inventory) -> dict[str, Any]:
    """Which chains' rules to read back after a delta: those it refilled. The others keep the
    digests recorded before, which the kernel still held when the plan was made (the record
    was trusted). Anything else reads all."""
    before = plan.before
    if method != "delta" or plan.phases is None or not plan.trusted or before is None \
            or before.rule_digests is None:
        return {}
    changed = {body["chain"] if kind == "rule" else body["name"]
               for cmd in plan.phases.switch for verb, obj in cmd.items()
               if verb in ("add", "flush") for kind, body in obj.items()
               if kind in ("rule", "chain")}
    chains, held = set(inventory.chains), set(plan.held.chains)
    changed.update(n for n in chains if n not in held)
    kept = {c: d for c, d in before.rule_digests.items() if c in chains and c not in changed}
    return {"changed": sorted(changed & chains), "kept": kept}


def _record_kept_feeds(plan: ApplyPlan) -> None:
    """The feed store's record "set S holds content C", as `feeds update` keeps it: the next
    load of the policy finds the kept sets under their names and reads nothing."""
    from outguard.feeds.store import FeedStore  # noqa: PLC0415 - only policies with feeds

    store = FeedStore(plan.state.path / "feeds")
    for kept in plan.kept_feeds:
        record = store.kernel_record(kept.feed)
        record[kept.held] = kept.content
        store.write_kernel_record(kept.feed, record)


def _stop(pid: int) -> None:
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
