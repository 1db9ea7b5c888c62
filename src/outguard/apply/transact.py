"""Sending outguard's transactions to the kernel, and knowing what its table holds.

Shared by `executor` (apply), `recovery` (rollback, restore, the fail-closed table) and `status`:
the `Kernel` they talk to, the watch on the ruleset generation that tells whether anyone else
committed (`Watched`), the three-phase switch of a delta (`switch`), what the kernel lists when
the record cannot be trusted (`held_by_kernel`), and putting a stored snapshot back (`roll_to`).
Stored commands carry markers where the elements of big lists and of cgroup sets go; `expand`
fills them in from the set store and from the cgroups that exist now.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from outguard.errors import KernelError
from outguard.kernel.setsync import SetChange
from outguard.nftables import nft_text, nft_tx
from outguard.ruleset.keys import TABLE
from outguard.state import StateDir

MARKER = "outguard_elements"  # a list set's elements, in the set store
CGROUPS = "outguard_cgroups"  # a cgroup set's paths, looked up again when put back

Generation = tuple[str, int]  # (namespace identity, ruleset generation): Kernel.generation
CgroupLookup = Callable[[str], "str | None"]  # cgroup path → what nft is given, None: absent


class Kernel(Protocol):
    def run_json(self, doc: Any) -> Any: ...
    def run_text(self, cmd: str) -> str: ...
    def fill_sets(self, changes: Sequence[SetChange]) -> object: ...
    def generation(self) -> tuple[str, int]: ...
    def objects(self) -> tuple[list[str], list[str], list[str]] | None: ...
    def rules(self, chains: Collection[str] | None = None) -> dict[str, str]: ...


def run(kernel: Kernel, cmds: list[dict[str, Any]], text: bool) -> None:
    if text:
        kernel.run_text(nft_text.script(cmds))
    else:
        kernel.run_json(nft_tx.document(cmds))


def generation_of(kernel: Kernel) -> Generation | None:
    try:
        return kernel.generation()
    except KernelError:
        return None


class Watched:
    """The kernel, with the ruleset generation read around each of our transactions: it tells
    whether anyone else committed while this apply ran. Each of our commits moves the
    generation by one (or not at all when it changes nothing); any other step, or a change
    between two of ours, is someone else's, and then nothing is recorded, so the next apply
    refills every chain."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.start = self.last = generation_of(kernel)
        self.clean = self.start is not None and self.start[0] != ""

    def _step(self, action: Callable[[], Any]) -> Any:
        before = generation_of(self.kernel)
        most = 0
        try:
            result = action()
            # an accepted batch moves the generation by one, or by none when it changed nothing
            # (a declaration of what exists); a refused one by none: any more is someone else's
            most = 1
            return result
        finally:
            after = generation_of(self.kernel)
            if (before is None or after is None or before != self.last
                    or after[0] != before[0] or not 0 <= after[1] - before[1] <= most):
                self.clean = False
            self.last = after

    def run_json(self, doc: Any) -> Any:
        return self._step(lambda: self.kernel.run_json(doc))

    def run_text(self, cmd: str) -> str:
        result: str = self._step(lambda: self.kernel.run_text(cmd))
        return result

    def fill_sets(self, changes: Sequence[SetChange]) -> object:
        return self._step(lambda: self.kernel.fill_sets(changes))

    def generation(self) -> Generation:
        return self.kernel.generation()

    def objects(self) -> tuple[list[str], list[str], list[str]] | None:
        return self.kernel.objects()

    def rules(self, chains: Collection[str] | None = None) -> dict[str, str]:
        return self.kernel.rules(chains)

    def recorded(self) -> list[Any] | None:
        """What the snapshot records: the generation after our last commit, if ours were the
        only commits since this apply began."""
        return list(self.last) if self.clean and self.last is not None else None


def rule_digests(kernel: Kernel, last: Generation | None, *,
                 changed: Collection[str] | None = None,
                 kept: dict[str, str] | None = None) -> dict[str, str] | None:
    """Digests of the rules of our chains right after our last commit (`last`: the generation
    it left), for `status` to find drift later; None when someone committed since (the rules
    read could be theirs) or the kernel cannot tell. With `changed` (the chains this commit
    refilled) only those are read; the others keep their digests from `kept`, known to be
    the kernel's when the commit began."""
    if last is None or last[0] == "":
        return None
    try:
        if changed is not None and kept is not None:
            # a refilled chain left empty has no rules to list, as in a full read
            digests = {c: d for c, d in kept.items() if c not in changed} | \
                kernel.rules(changed)
        else:
            digests = kernel.rules()
        now = kernel.generation()
    except KernelError:
        return None
    return digests if now == last else None


def expand(cmds: list[dict[str, Any]], state: StateDir,
           cgroups: CgroupLookup | None = None) -> list[dict[str, Any]]:
    """Stored commands → runnable ones: list-set elements come back from the set store, and a
    cgroup set gets the cgroups of its paths that exist now (none at boot, before the units
    start: never a path nft would refuse the whole batch for)."""
    out = []
    for cmd in cmds:
        if CGROUPS in cmd and cgroups is None:
            from outguard.kernel.cgroups import CgroupLookup as SystemCgroups  # noqa: PLC0415

            cgroups = SystemCgroups()
        if MARKER in cmd:
            name = cmd[MARKER]
            # an empty list (a feed with no IPv6 entries) has no elements command: nft
            # refuses a whole batch over `add element` with none ("Invalid set")
            if elements := state.load_set(name):
                out.append({"add": {"element": {"family": "inet", "table": "outguard",
                                                "name": name, "elem": elements}}})
        elif CGROUPS in cmd:
            assert cgroups is not None
            found = [p for p in map(cgroups, cmd.get("paths", [])) if p is not None]
            if found:
                out.append({"add": {"element": {"family": TABLE.family, "table": TABLE.name,
                                                "name": cmd[CGROUPS], "elem": found}}})
        else:
            out.append(cmd)
    return out


def switch(kernel: Kernel, phases: nft_tx.Phases, text: bool,
           fills: Sequence[SetChange] = (), undo_fills: Sequence[SetChange] = ()) -> bool:
    """A delta: new sets and chains first (feed sets then filled over netlink, while no rule
    looks into them yet), then every rule in one transaction, then the deletion of what is
    gone (nft_tx.Phases). False when the kernel refused that deletion: the rules are in place,
    the old objects stay (unused) and the caller records them, for the next apply to delete.
    `undo_fills` puts back sets that `fills` changed in place, if the switch is refused."""
    # A phase of only `add table` changes nothing: it is not sent (and does not move the
    # ruleset generation, which `Watched` counts on).
    if len(phases.prepare) > 1:
        run(kernel, phases.prepare, text)
    filled = False
    try:
        if fills:
            kernel.fill_sets(fills)
            filled = True
        if len(phases.switch) > 1:
            run(kernel, phases.switch, text)
    except KernelError:
        # leave the kernel as it was: what `prepare` made goes again, refilled sets are put back
        if filled and undo_fills:
            with contextlib.suppress(KernelError):
                kernel.fill_sets(undo_fills)
        if len(phases.undo) > 1:
            with contextlib.suppress(KernelError):
                run(kernel, phases.undo, text)
        raise
    if len(phases.cleanup) > 1:
        try:
            run(kernel, phases.cleanup, text)
        except KernelError:
            return False
    return True


def held_by_kernel(kernel: Kernel, recorded: nft_tx.Inventory,
                   needed: Collection[str]) -> nft_tx.Inventory | None:
    """What our table holds, by the kernel's own list of names (an empty inventory if there is
    no table); None if it cannot be read. A set the kernel lists but no apply recorded may be
    half made (an apply killed between creating a feed's set and filling it): if the policy
    needs it, it is left out, so that the delta declares and fills it again (adding what is
    there already changes nothing); if not, it is deleted with what is gone."""
    try:
        found = kernel.objects()
    except KernelError:
        return None
    if found is None:
        return nft_tx.Inventory()
    chains, sets, counters = found
    known = set(recorded.sets)
    return nft_tx.Inventory(chains, [n for n in sets if n in known or n not in needed], counters)


def stored_inventory(stored: list[dict[str, Any]]) -> nft_tx.Inventory | None:
    """What a stored full form makes; None if the stored commands cannot be read as one."""
    try:
        return nft_tx.stored_inventory(stored)
    except ValueError:
        return None


def holds_recorded(recorded: list[Any] | None, now: Generation | None) -> bool:
    """Is the generation a snapshot recorded (after its own commits, with no one else's
    between) still the kernel's? Then nobody committed since, and our table holds exactly what
    the snapshot's inventory says."""
    return isinstance(recorded, list) and now is not None and now[0] != "" \
        and tuple(recorded) == now


def roll_to(kernel: Kernel, state: StateDir, stored: list[dict[str, Any]],
            target: nft_tx.Inventory | None, held: nft_tx.Inventory | None,
            cgroups: CgroupLookup | None = None) -> nft_tx.Inventory | None:
    """Put a stored snapshot back. With `held` (what the kernel holds, known for certain) the
    way apply makes a delta: new sets before the switch, old ones deleted after it (a full
    replace in one transaction could drop packets walking the old rules), shared sets kept;
    else, or if the kernel refuses the delta, the whole table is replaced in one transaction.
    Returns what the kernel holds afterwards (with what a refused cleanup left over, for the
    next apply to delete), or None if the stored commands cannot be read as a full form
    (`target`, what they make: `stored_inventory`)."""
    text = nft_text.needs_text(stored)
    if held is not None and target is not None:
        phases = nft_tx.stored_phases(stored, held)
        phases.prepare = expand(phases.prepare, state, cgroups)
        phases.switch = expand(phases.switch, state, cgroups)
        try:
            if switch(kernel, phases, text):
                return target
            gone = held.without(target)
            return nft_tx.Inventory(target.chains + gone.chains, target.sets + gone.sets,
                                    target.counters + gone.counters)
        except KernelError:
            pass  # the kernel does not hold what we recorded after all
    run(kernel, expand(stored, state, cgroups), text)
    return target
