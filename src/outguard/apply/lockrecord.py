"""The lockdown record in the state directory, read for every apply and for `status`.

Place in the data flow: between the state directory (`lockdown.json`, written by
`apply.lockdown`) and the compiler (`nftables.nft_lockdown`): `applyplan` compiles the lockdown in
force into every ruleset it applies, so that a new policy carries it until it ends.
"""

from __future__ import annotations

import time

from outguard.errors import StateError
from outguard.nftables.nft_lockdown import Lockdown
from outguard.ruleset.ir import Ruleset
from outguard.state import StateDir


def current_lockdown(state: StateDir, now: float | None = None) -> Lockdown | None:
    """The lockdown in force (None: none, or it has ended). StateError for a damaged record."""
    data = state.lockdown()
    if data is None:
        return None
    try:
        got = Lockdown.from_json(data)
    except ValueError as exc:
        raise StateError(f"lockdown file is unreadable: {exc}") from exc
    return got if got.active(time.time() if now is None else now) else None


def carried(state: StateDir, ruleset: Ruleset, warnings: list[str]) -> Lockdown | None:
    """The lockdown an apply of `ruleset` compiles in; a kept rule the policy no longer has is
    named in `warnings` (the lockdown then keeps less, never more)."""
    got = current_lockdown(state)
    if got is None:
        return None
    names = {r.name for r in ruleset.allow}
    warnings += [f"lockdown keeps {k!r}, which this policy has no allow rule of: it is not kept"
                 for k in got.keep if k not in names]
    return got
