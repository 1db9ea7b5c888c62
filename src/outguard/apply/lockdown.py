"""`outguard lockdown`: put in and end the temporary mitigation, with or without a policy.

Place in the data flow: above `apply.run` (a lockdown with a policy applied is a re-apply of
that policy with the lockdown compiled in, `nftables.nft_lockdown`) and the state directory
(`lockdown.json`, which every later apply reads, so that a new policy keeps the lockdown until it
ends). With no policy applied the table holds the lockdown alone, in one transaction. The end is
the kernel's (`meta time`): nothing here has to run for the lockdown to lift.

A `--keep` rule that the applied policy does not have is refused before anything changes; a
refused transaction puts the previous lockdown record back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from outguard.apply.lockrecord import current_lockdown
from outguard.apply.run import reapply
from outguard.apply.transact import Kernel
from outguard.errors import OutguardError, StateError
from outguard.nftables import nft_tx
from outguard.nftables.nft import compile_lockdown
from outguard.nftables.nft_lockdown import Lockdown
from outguard.pipeline import load_applied
from outguard.policy.model import Options
from outguard.state import StateDir

__all__ = ["LockdownError", "LockdownReport", "current_lockdown", "end", "reinstate", "start"]


class LockdownError(OutguardError):
    """A lockdown that cannot be put in as asked (an unknown `--keep` rule)."""


@dataclass
class LockdownReport:
    lockdown: Lockdown | None  # None: ended
    with_policy: bool
    warnings: list[str]


def _allow_names(state: StateDir) -> list[str] | None:
    policy = load_applied(state)
    if policy is None:
        return None
    return [rule.name for rule in policy.doc.allow]


def start(state: StateDir, kernel: Kernel, seconds: float, keep: list[str], *,
          now: float | None = None) -> LockdownReport:
    """Lock down for `seconds` from `now`, keeping the applied policy's allow rules `keep`."""
    if seconds <= 0:
        raise LockdownError("a lockdown needs a duration above zero (--for 30m, 2h)")
    names = _allow_names(state)
    if keep and names is None:
        raise LockdownError(f"--keep {keep[0]}: no policy is applied, there is no rule to keep")
    unknown = [k for k in keep if names is not None and k not in names]
    if unknown:
        known = ", ".join(names or []) or "none"
        raise LockdownError(f"--keep {unknown[0]}: the applied policy has no allow rule of that"
                            f" name (its allow rules: {known}); nothing was changed")
    if names is None and state.lockdown() is None and kernel.objects() is not None:
        # replacing it with the lockdown alone would lose that policy, and `--off` then
        # open egress
        raise LockdownError("the kernel holds an outguard table this state directory did not"
                            " apply (another --state-dir, or made by hand): give that"
                            " --state-dir; nothing was changed")
    lockdown = Lockdown(int((time.time() if now is None else now) + seconds + 0.999),
                        tuple(dict.fromkeys(keep)))
    warnings = _put(state, kernel, lockdown, names is not None)
    return LockdownReport(lockdown, names is not None, warnings)


def end(state: StateDir, kernel: Kernel) -> LockdownReport:
    """End the lockdown now (also fine when none is in force). With no policy applied the
    table is deleted only when this state directory's lockdown made it: a table made with
    another state directory is not ours to open."""
    with_policy = state.snapshot("applied") is not None
    if not with_policy and state.lockdown() is None:
        return LockdownReport(None, False, ["no lockdown was put in with this state directory:"
                                            " nothing changed"])
    warnings = _put(state, kernel, None, with_policy)
    return LockdownReport(None, with_policy, warnings)


def reinstate(state: StateDir, kernel: Kernel, now: float | None = None) -> str | None:
    """After `rollback` or `restore` committed a stored ruleset (compiled before the lockdown
    was put in, or a lockdown table a reboot emptied), put the lockdown in force back: a
    watchdog's rollback must not lift the emergency brake. Says what it did (None: no lockdown
    in force, or the kernel already holds it); a failure is said loudly, never raised — the
    rollback itself stands."""
    try:
        got = current_lockdown(state, now)
    except StateError as exc:
        return f"WARNING: {exc}: a lockdown may have been lifted"
    if got is None:
        return None
    try:
        objects = kernel.objects()
        if objects is not None and "lockdown" in objects[0]:
            return None
        _put(state, kernel, got, state.snapshot("applied") is not None)
    except OutguardError as exc:
        return (f"WARNING: the lockdown until {got.until_text} could not be put back ({exc}):"
                " egress is NOT locked down; run `outguard lockdown --for ...` again")
    return f"the lockdown until {got.until_text} stays in force (put back in the kernel)"


def _put(state: StateDir, kernel: Kernel, lockdown: Lockdown | None,
         with_policy: bool) -> list[str]:
    state.ensure()
    with state.locked():
        before = state.lockdown()
        state.set_lockdown(lockdown.to_json() if lockdown is not None else None)
    try:
        if with_policy:
            state.keep_previous = True  # the same policy: `rollback` still goes one back
            try:
                return reapply(state, kernel).warnings
            finally:
                state.keep_previous = False
        if lockdown is None:
            kernel.run_json(nft_tx.document(nft_tx.remove()))
        else:
            options = Options()
            compiled = compile_lockdown(lockdown, options.nflog_group, options.rate())
            kernel.run_json(nft_tx.document(nft_tx.full(compiled)))
        return []
    except BaseException:
        with state.locked():
            state.set_lockdown(before)
        raise
