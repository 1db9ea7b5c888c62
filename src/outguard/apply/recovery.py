"""Getting back to a known ruleset: rollback, confirm, remove, restore, and the fail-closed table.

Place in the data flow: next to `run` (apply), on the same state directory and kernel. Every
path here ends with a table of ours in the kernel unless a person asked for none:
- `rollback` puts the previous snapshot back (the watchdog's call when a confirmation does not
  come); with no previous one it removes the table only when told to (`allow_remove`);
- a pending confirmation resolves itself (`settle_pending`): one whose deadline passed, or whose
  watchdog is gone (a crash, a power loss, a kill before the watchdog started), is rolled back
  by the next command, or at boot by `restore`;
- `restore` re-commits the applied snapshot from the state directory (no policy load, no name
  resolution, cgroups looked up as they are now): the boot path;
- `fall_back`, when an apply fails and leaves the namespace with no table of ours: the applied
  snapshot again, or with none, a fail-closed table (`failclosed`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

from outguard.apply.failclosed import fail_closed
from outguard.apply.transact import (
    CgroupLookup,
    Kernel,
    Watched,
    expand,
    generation_of,
    held_by_kernel,
    holds_recorded,
    roll_to,
    rule_digests,
    run,
    stored_inventory,
)
from outguard.clock import Clock, system_clock
from outguard.errors import KernelError, OutguardError, StateError
from outguard.nftables import nft_text, nft_tx
from outguard.state import Pending, StateDir


class FailClosedError(OutguardError):
    """The policy could not be applied, and outguard put a ruleset back so that the namespace
    is not left without one: `done` says which."""

    def __init__(self, cause: OutguardError, done: str) -> None:
        self.cause, self.done = cause, done
        super().__init__(f"{cause}\n{done}")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


# pending confirmations ---------------------------------------------------------------------


def watchdog_alive(pending: Pending) -> bool:
    """Is the pending confirmation's watchdog running? Its pid alone could be anyone's after a
    reboot: the process must carry the pending's token on its command line."""
    if pending.watchdog_pid <= 0:
        return False
    try:
        with open(f"/proc/{pending.watchdog_pid}/cmdline", "rb") as fh:
            return pending.token.encode() in fh.read().split(b"\0")
    except OSError:
        return False


def watchdog_running_for(state: StateDir) -> bool:
    """Is any outguard watchdog of this state directory running (when the pending file that
    names it cannot be read)?"""
    wanted = str(state.path).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if b"_watchdog" in argv and wanted in argv:
                return True
    return False


def pending_condition(pending: Pending, now: float) -> str:
    """"waiting" (its watchdog runs, before the deadline), "expired" (the deadline passed and
    nothing rolled it back), or "orphaned" (no watchdog: nothing would ever roll it back)."""
    if now >= pending.deadline:
        return "expired"
    return "waiting" if watchdog_alive(pending) else "orphaned"


def settle_pending(state: StateDir, kernel: Kernel, now: float, *,
                   cgroups: CgroupLookup | None = None) -> str | None:
    """Roll back a confirmation nobody can give in time any more (see `pending_condition`);
    the caller holds the lock. Returns what was done, None if nothing was pending or it still
    waits. A pending file that cannot be read is moved aside (the applied policy stays)
    unless a watchdog of this directory still runs: it rolls back at its deadline."""
    try:
        pending = state.pending()
    except StateError as exc:
        if watchdog_running_for(state):
            return None
        moved = state.quarantine_pending()
        return (f"{exc}: moved to {moved}; the applied policy stays (if it was never"
                " confirmed, run `outguard rollback`)")
    if pending is None or (condition := pending_condition(pending, now)) == "waiting":
        return None
    why = (f"its deadline passed {now - pending.deadline:.0f} s ago" if condition == "expired"
           else "its watchdog is gone")
    message = rollback_locked(state, kernel, pending=pending, by="settle",
                              why=f"an apply was never confirmed and {why}", cgroups=cgroups,
                              now=now)
    return f"rolled back an apply that was never confirmed ({why}): {message}"


def refuse_pending(state: StateDir, now: float) -> None:
    """Raise if a confirmation still waits: a new policy now would make the unconfirmed one
    `previous`, and its watchdog would then "roll back" to it."""
    pending = state.pending()
    if pending is not None:
        raise StateError(f"an earlier apply still waits for `outguard confirm` (rolls back in"
                         f" {max(0.0, pending.deadline - now):.0f} s): confirm it or run"
                         " `outguard rollback` first")


def confirm(state: StateDir, kernel: Kernel, now: float, *,
            cgroups: CgroupLookup | None = None) -> str:
    """Keep the policy applied with --confirm-timeout. StateError when nothing waits (a
    confirmation typed after the watchdog rolled back must not look like success), and when
    the deadline has passed (then the rollback the watchdog owed is done here)."""
    with state.locked():
        pending = state.pending()
        if pending is None:
            last = state.last_rollback()
            after = f" (last rollback: {last['at']}, {last['why']})" if last else ""
            raise StateError(f"nothing waits for confirmation{after}")
        if now >= pending.deadline:
            done = rollback_locked(state, kernel, pending=pending, by="settle",
                                   why="the confirmation came after the deadline",
                                   cgroups=cgroups, now=now)
            raise StateError(f"too late: the confirmation window closed"
                             f" {now - pending.deadline:.0f} s ago; {done}")
        state.clear_pending()
        _stop(pending.watchdog_pid)
        return f"confirmed policy {pending.policy_hash[:12]}"


# rollback ----------------------------------------------------------------------------------


def rollback(state: StateDir, kernel: Kernel, *, token: str | None = None,
             base: str | None = None, allow_remove: bool = False,
             cgroups: CgroupLookup | None = None, clock: Clock = system_clock) -> str:
    """Restore the previous snapshot. With `token`, only if that pending confirmation is still
    waiting (the watchdog's call; `base`: the snapshot it was applied over, in case its file
    is damaged). With no previous snapshot the table is removed, which opens all egress: by
    hand only with `allow_remove`, else StateError saying so."""
    with state.locked():
        try:
            pending = state.pending()
        except StateError:
            # damaged: not confirmed (confirm deletes the file); what it was applied over, the
            # watchdog knows ("?": unknown, the previous snapshot is the target)
            pending = Pending(token or "", 0.0, 0, "?", base if base is not None else "?")
            state.quarantine_pending()
        if token is not None and (pending is None or pending.token != token):
            return "nothing to roll back: the apply was confirmed or already rolled back"
        return rollback_locked(state, kernel, pending=pending,
                               by="watchdog" if token is not None else "hand",
                               why="not confirmed by its deadline" if token is not None
                               else "asked by hand", allow_remove=allow_remove or token is not None,
                               cgroups=cgroups, now=clock())


def rollback_locked(state: StateDir, kernel: Kernel, *, pending: Pending | None, by: str,
                    why: str, allow_remove: bool = True,
                    cgroups: CgroupLookup | None = None, now: float | None = None) -> str:
    """`rollback` without taking the lock (the caller holds it); `now`: the time it records
    (default: the system clock's)."""
    applied = state.read("applied")
    if applied is None and pending is None:
        return "nothing applied: nothing to roll back"
    unrecorded = pending is not None and pending.base == (applied[0].snapshot_id if applied
                                                           else "")
    target = applied if unrecorded else state.read("previous")
    gone_from = pending.policy_hash if pending is not None else \
        applied[0].policy_hash if applied is not None else None
    if target is None:
        if not allow_remove:
            raise StateError("there is no previous policy to roll back to: that would remove"
                             " outguard's table and open all egress. Run `outguard rollback"
                             " --remove` (or `outguard remove`) to do that.")
        kernel.run_json(nft_tx.document(nft_tx.remove()))
        state.clear()
        message = "no previous state: removed outguard's table (egress is open)"
        to = None
    else:
        # Only while nobody committed since `applied` was recorded does the kernel hold
        # exactly its inventory; otherwise (an apply killed before it recorded its commit,
        # a hand edit, a DNS or feed update) the delta starts from the names it lists.
        made = stored_inventory(target[1])
        held: nft_tx.Inventory | None
        if not unrecorded and applied is not None \
                and holds_recorded(applied[0].generation, generation_of(kernel)):
            held = nft_tx.Inventory.from_json(applied[0].inventory)
        else:
            held = held_by_kernel(kernel, nft_tx.Inventory.from_json(applied[0].inventory)
                                  if applied is not None else nft_tx.Inventory(),
                                  made.sets if made is not None else [])
        watched = Watched(kernel)
        inventory = roll_to(watched, state, target[1], made, held, cgroups)
        if inventory is not None:
            # the chains the snapshot makes hold its stored rules (left-over ones: none)
            inventory.rules = nft_tx.stored_digests(target[1])
        recorded = None if inventory is None else inventory.to_json()
        if unrecorded:
            if recorded is not None:
                state.set_inventory(recorded)
        else:
            state.restore_previous(recorded)
        if recorded is not None:
            # as apply and restore do: the rules read back right after the commit, for
            # `status` to find drift (a hand-made accept) after a rollback too
            # (a cleanup the kernel refused left objects over: the next apply lists them)
            state.record_commit(recorded, watched.recorded() if inventory is made else None,
                                rule_digests(kernel, watched.last))
        message = f"rolled back to the policy applied at {target[0].applied_at}"
        to = target[0].policy_hash
    state.clear_pending()
    if pending is not None and by != "watchdog":
        _stop(pending.watchdog_pid)
    now_applied = state.snapshot("applied")
    at = system_clock() if now is None else now
    state.record_rollback({"at": _iso(at), "by": by, "why": why, "from": gone_from, "to": to,
                           "snapshot_id": now_applied.snapshot_id if now_applied else ""})
    return message


def remove(state: StateDir, kernel: Kernel, *, force: bool = False) -> str:
    """Delete outguard's table (and nothing else); says whether there was one. A table this
    state directory never applied (another `--state-dir`, one made by hand, a wiped state
    directory) is removed only with `force`: removing it opens all egress."""
    with state.locked():
        try:
            present = kernel.objects() is not None
        except KernelError:
            present = True  # cannot tell: delete all the same
        if present and not force and _unknown_here(state):
            raise StateError(
                f"the outguard table of this namespace was not applied with state directory"
                f" {state.path} (another --state-dir, or made by hand): nothing was removed;"
                " `outguard remove --force` removes it anyway (egress is then open)")
        kernel.run_json(nft_tx.document(nft_tx.remove()))
        try:
            pending = state.pending()
        except StateError:
            pending = None
        state.clear_pending()
        if pending is not None:
            _stop(pending.watchdog_pid)
        state.clear()
        state.set_lockdown(None)  # the table and its lockdown are gone: no apply brings it back
        return "removed outguard's table" if present else "no outguard table to remove"


def _unknown_here(state: StateDir) -> bool:
    """Nothing in this state directory says it put a table in the kernel."""
    try:
        return state.snapshot("applied") is None and state.pending() is None \
            and state.lockdown() is None  # `outguard lockdown` with no policy made a table
    except (StateError, ValueError):
        return False  # a damaged record: it did apply something


# restore -----------------------------------------------------------------------------------


def restore(state: StateDir, kernel: Kernel, now: float, *,
            cgroups: CgroupLookup | None = None) -> str:
    """Commit the applied snapshot again, from the state directory alone (boot: no policy load,
    no DNS). A stale pending confirmation is rolled back first: never restore an apply that
    was not confirmed. StateError when nothing was ever applied here."""
    with state.locked():
        settled = settle_pending(state, kernel, now, cgroups=cgroups)
        message = restore_locked(state, kernel, cgroups)
        return f"{settled}\n{message}" if settled else message


def restore_locked(state: StateDir, kernel: Kernel, cgroups: CgroupLookup | None) -> str:
    got = state.read("applied")
    if got is None:
        raise StateError(f"nothing was applied with state directory {state.path}: nothing to"
                         " restore (apply a policy)")
    snap, stored = got
    made = stored_inventory(stored)
    if made is None:
        raise StateError(f"the applied ruleset in {state.path / 'applied'} is damaged")
    watched = Watched(kernel)
    run(watched, expand(stored, state, cgroups), nft_text.needs_text(stored))
    made.rules = nft_tx.stored_digests(stored)
    state.record_commit(made.to_json(), watched.recorded(), rule_digests(kernel, watched.last))
    what = "outguard's fail-closed table" if snap.fallback else f"policy {snap.policy_hash[:12]}"
    return f"restored {what} applied at {snap.applied_at} ({snap.mode})"


def fall_back(state: StateDir, kernel: Kernel, path: Path, cause: OutguardError, *,
              text: str | None = None, cgroups: CgroupLookup | None = None) -> str | None:
    """After a failed apply (the caller holds the lock): if the namespace has no table of ours
    (a boot, a table deleted by hand), put the applied snapshot back, or with none, or when
    the kernel refuses that too, a fail-closed table. Returns what was done; None when our
    table is there (the refused transaction changed nothing: the last good policy stays) or
    nothing needs to be done (an audit policy that was never enforced)."""
    try:
        if kernel.objects() is not None:
            return None
    except KernelError:
        return None
    try:
        applied = state.snapshot("applied")
    except StateError:
        applied = None  # unreadable: nothing to put back, and the fail-closed table replaces it
    if applied is None:
        return fail_closed(state, kernel, path, cause, text)
    try:
        return restore_locked(state, kernel, cgroups) + " (the last applied ruleset)"
    except OutguardError as exc:
        # never end with no table while one can be committed: the last applied ruleset
        # closed egress (or the new policy would), so the fail-closed table does
        done = fail_closed(state, kernel, path, cause, text, enforced=applied.mode == "enforce")
        if done is None:
            raise
        return f"the last applied ruleset could not be put back either ({exc}).\n{done}"


def _stop(pid: int) -> None:
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
