"""Apply, confirm, roll back, remove, and read status: the commands that change the kernel.

Glue between the pure pipeline (load → lower → compile → transaction) and the two kinds of I/O:
the kernel (`kernel.libnft`, `kernel.counters`) and the state directory. The kernel, the clock
and the watchdog launcher are passed in. Each change is one nftables transaction; a policy that
does not load never reaches the kernel, and a transaction the kernel refuses changes nothing.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from outguard.compile import nft_text, nft_tx
from outguard.compile.lower import Resolver, lower, system_resolver
from outguard.compile.nft import Compiled, NftSet, compile_ruleset, kernel_counter
from outguard.errors import KernelError, StateError
from outguard.kernel.setsync import SetChange
from outguard.policy.load import load_policy, load_text
from outguard.state import Pending, Snapshot, StateDir

MARKER = "outguard_elements"


class Kernel(Protocol):
    def run_json(self, doc: Any) -> Any: ...
    def run_text(self, cmd: str) -> str: ...
    def fill_sets(self, changes: Sequence[SetChange]) -> object: ...
    def generation(self) -> tuple[str, int]: ...
    def objects(self) -> tuple[list[str], list[str], list[str]] | None: ...


@dataclass
class ApplyReport:
    policy_hash: str
    mode: str
    rules: int
    warnings: list[str]
    method: str  # "delta" or "full"
    timings: dict[str, float] = field(default_factory=dict)
    pending: Pending | None = None


def _run(kernel: Kernel, cmds: list[dict[str, Any]], text: bool) -> None:
    if text:
        kernel.run_text(nft_text.script(cmds))
    else:
        kernel.run_json(nft_tx.document(cmds))


Generation = tuple[str, int]  # (namespace identity, ruleset generation): Kernel.generation


def _generation(kernel: Kernel) -> Generation | None:
    try:
        return kernel.generation()
    except KernelError:
        return None


class _Watched:
    """The kernel, with the ruleset generation read around each of our transactions: it tells
    whether anyone else committed while this apply ran. Each of our commits moves the
    generation by one (or not at all when it changes nothing); any other step, or a change
    between two of ours, is someone else's, and then nothing is recorded, so the next apply
    refills every chain."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.start = self.last = _generation(kernel)
        self.clean = self.start is not None and self.start[0] != ""

    def _step(self, action: Callable[[], Any]) -> Any:
        before = _generation(self.kernel)
        most = 0
        try:
            result = action()
            # an accepted batch moves the generation by one, or by none when it changed nothing
            # (a declaration of what exists); a refused one by none: any more is someone else's
            most = 1
            return result
        finally:
            after = _generation(self.kernel)
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

    def recorded(self) -> list[Any] | None:
        """What the snapshot records: the generation after our last commit, if ours were the
        only commits since this apply began."""
        return list(self.last) if self.clean and self.last is not None else None


def expand(cmds: list[dict[str, Any]], state: StateDir) -> list[dict[str, Any]]:
    """Stored commands → runnable ones: list-set elements come back from the set store."""
    out = []
    for cmd in cmds:
        if MARKER in cmd:
            name = cmd[MARKER]
            out.append({"add": {"element": {"family": "inet", "table": "outguard", "name": name,
                                            "elem": state.load_set(name)}}})
        else:
            out.append(cmd)
    return out


MIN_CAPACITY = 4096


def capacity_for(count: int) -> int:
    """The size a feed's hash set is declared with: room to double before a sync must make a
    bigger set (`feeds.sync` asks for a re-apply then)."""
    return max(MIN_CAPACITY, 1 << max(0, 2 * count - 1).bit_length())


def _list_elements(state: StateDir, sizes: dict[str, int], capacities: dict[str, int],
                   fills: list[SetChange] | None) -> Callable[[NftSet], dict[str, Any] | None]:
    """Elements of a new set for the kernel; list sets are written to the store once (and their
    sizes noted in `sizes`, for the stored form). A feed set (`bulk`) is stored packed, gets
    its capacity, and with `fills` (a delta) is left empty here: the engine loads it over
    netlink before the rules switch to it."""
    def elements_of(s: NftSet) -> dict[str, Any] | None:
        if s.bulk is not None:
            items = s.bulk()
            state.store_bulk(s.name, s.version, s.interval, items)
            sizes[s.name] = len(items)
            if not s.interval:
                s.capacity = capacities[s.name] = capacity_for(len(items))
            if fills is not None:
                if items:
                    fills.append(SetChange(s.name, s.version, s.interval, items))
                return None
            elements = s.elements()
        elif s.name.startswith("l_") and state.has_set(s.name):
            elements = state.load_set(s.name)
        else:
            elements = s.elements()
            if s.name.startswith("l_"):
                state.store_set(s.name, elements)
        if s.name.startswith("l_"):
            sizes[s.name] = len(elements)
        if not elements:
            return None
        return {"add": {"element": {"family": "inet", "table": "outguard", "name": s.name,
                                    "elem": elements}}}
    return elements_of


def _stored_form(compiled: Compiled, sizes: dict[str, int]) -> list[dict[str, Any]]:
    def marker(s: NftSet) -> dict[str, Any] | None:
        if not s.name.startswith("l_"):
            return nft_tx.set_elements(s)
        return {MARKER: s.name, "count": sizes[s.name]} if s.name in sizes else {MARKER: s.name}
    return nft_tx.full(compiled, marker)


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
                 spawn_watchdog: Callable[[str, float], int] | None = None,
                 now: Callable[[], float] = time.time, text: str | None = None) -> ApplyReport:
    """Apply the policy at `path` (or `text`, the policy read from there earlier)."""
    t0 = time.perf_counter()
    with state.locked(), _gc_paused():
        before = state.snapshot("applied")
        known = before.lists if before else {}
        if state.pending() is not None:
            # Taking a new policy now would make the unconfirmed one `previous`, and its
            # watchdog would then "roll back" to it.
            raise StateError("an earlier apply still waits for `outguard confirm`: confirm it or"
                             " run `outguard rollback` first")
        if text is None:
            policy = load_policy(path, known_lists=lambda digest: digest in known,
                                 feed_dir=state.path / "feeds")
        else:
            policy = load_text(text, str(path), base_dir=path.parent,
                               known_lists=lambda digest: digest in known,
                               feed_dir=state.path / "feeds")
        t_load = time.perf_counter()
        ruleset = lower(policy, resolver=resolver)
        if ruleset.dns is not None and ruleset.dns.uid is None:  # the kernel rule needs its uid
            from outguard.dns.user import ensure  # noqa: PLC0415 - creates outguard-dns

            ruleset = replace(ruleset, dns=ensure(ruleset.dns))
        for source in ruleset.sources.values():
            if source.is_list and source.digest in known:
                source.known_kinds = frozenset(known[source.digest])
        compiled = compile_ruleset(ruleset)
        watched = _Watched(kernel)
        sizes = dict(before.set_sizes) if before is not None else {}
        capacities = dict(before.capacities) if before is not None else {}
        for s in compiled.sets.values():  # a kept feed set is declared as it was made
            if s.bulk is not None and s.name in capacities:
                s.capacity = capacities[s.name]
        fills: list[SetChange] = []
        inventory = nft_tx.Inventory.of(compiled)
        phases = None
        held = nft_tx.Inventory()
        if before is not None:
            held = nft_tx.Inventory.from_json(before.inventory)
            if not watched.clean or not _holds_recorded(before.generation, watched.start):
                # The ruleset changed since our last commit (by hand, a feed sync, the DNS
                # resolver, an apply killed before it recorded its commit): our table may not
                # hold what we recorded. The delta starts from the names the kernel lists, and
                # every chain is flushed and refilled. Otherwise only changed chains are.
                # If the kernel cannot list them either, the whole table is replaced.
                held = _held_by_kernel(kernel, held, compiled.sets) or nft_tx.Inventory()
                held.rules = {}
        if held.chains or held.sets or held.counters:
            phases = nft_tx.delta_phases(compiled, held,
                                         _list_elements(state, sizes, capacities, fills),
                                         inventory)
        else:  # nothing of ours in the kernel: the first apply, or the table deleted by hand
            cmds = nft_tx.full(compiled, _list_elements(state, sizes, capacities, None))
        t_compile = time.perf_counter()

        new_pending = None
        if confirm_timeout is not None:
            if spawn_watchdog is None:
                raise StateError("no watchdog launcher for --confirm-timeout")
            token, deadline = uuid.uuid4().hex, now() + confirm_timeout
            base = before.snapshot_id if before is not None else ""
            new_pending = Pending(token, deadline, 0, policy.digest, base)
            state.set_pending(new_pending)
            new_pending.watchdog_pid = spawn_watchdog(token, deadline)
            state.set_pending(new_pending)
        method = "delta" if phases is not None else "full"
        try:
            try:
                if phases is None:
                    _run(watched, cmds, compiled.needs_text)
                elif not _switch(watched, phases, compiled.needs_text, fills):
                    # what refused the cleanup may be an object of someone else's in our table:
                    # the next apply lists the kernel's and deletes it with the leftovers
                    watched.clean = False
                    gone = nft_tx.leftovers(compiled, held)
                    inventory = nft_tx.Inventory(inventory.chains + gone.chains,
                                                 inventory.sets + gone.sets,
                                                 inventory.counters + gone.counters,
                                                 inventory.rules)
            except KernelError:
                if phases is None:
                    raise
                # the kernel does not hold what we recorded (someone changed or removed the
                # table): replace the whole table instead, still in one transaction
                method = "full"
                _run(watched, nft_tx.full(compiled, _list_elements(state, sizes, capacities, None)),
                     compiled.needs_text)
        except BaseException:
            if new_pending is not None:
                state.clear_pending()
                _stop(new_pending.watchdog_pid)
            raise
        t_commit = time.perf_counter()
        lists = {s.digest: sorted(s.kinds) for s in ruleset.sources.values() if s.is_list}
        snap = Snapshot(
            policy_hash=policy.digest, applied_at=datetime.now(UTC).isoformat(timespec="seconds"),
            mode=policy.doc.mode, source=str(path.resolve()), inventory=inventory.to_json(),
            counters={"default": "default", **{r.counter: kernel_counter(r.counter)
                                               for r in ruleset.rules()}},
            lists=lists, warnings=[str(w) for w in policy.warnings], snapshot_id=uuid.uuid4().hex,
            set_sizes={n: sizes[n] for n in compiled.sets if n in sizes},
            capacities={n: capacities[n] for n in compiled.sets if n in capacities},
            generation=watched.recorded())
        state.write(snap, policy.text, orjson.dumps(_stored_form(compiled, sizes)))
    return ApplyReport(policy.digest, policy.doc.mode, len(ruleset.rules()),
                       [str(w) for w in policy.warnings], method,
                       {"load_ms": (t_load - t0) * 1000, "compile_ms": (t_compile - t_load) * 1000,
                        "commit_ms": (t_commit - t_compile) * 1000,
                        "total_ms": (time.perf_counter() - t0) * 1000},
                       new_pending)


def reapply(state: StateDir, kernel: Kernel, *,
            resolver: Resolver = system_resolver) -> ApplyReport:
    """Apply the applied policy again, from its stored text: a feed that outgrew its set gets
    a new, bigger one (`feeds.sync` asks for this), filled before the rules switch to it."""
    got = state.read("applied")
    text = state.policy_text("applied")
    if got is None or text is None:
        raise StateError("nothing is applied: nothing to re-apply")
    return apply_policy(Path(got[0].source), state, kernel, resolver=resolver, text=text)


def _switch(kernel: Kernel, phases: nft_tx.Phases, text: bool,
            fills: Sequence[SetChange] = ()) -> bool:
    """A delta: new sets and chains first (feed sets then filled over netlink, while no rule
    looks into them yet), then every rule in one transaction, then the deletion of what is
    gone (nft_tx.Phases). False when the kernel refused that deletion: the rules are in place,
    the old objects stay (unused) and the caller records them, for the next apply to delete."""
    # A phase of only `add table` changes nothing: it is not sent (and does not move the
    # ruleset generation, which `_Watched` counts on).
    if len(phases.prepare) > 1:
        _run(kernel, phases.prepare, text)
    try:
        if fills:
            kernel.fill_sets(fills)
        if len(phases.switch) > 1:
            _run(kernel, phases.switch, text)
    except KernelError:
        # leave the kernel as it was: what `prepare` made goes again
        if len(phases.undo) > 1:
            with contextlib.suppress(KernelError):
                _run(kernel, phases.undo, text)
        raise
    if len(phases.cleanup) > 1:
        try:
            _run(kernel, phases.cleanup, text)
        except KernelError:
            return False
    return True


def _stop(pid: int) -> None:
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def rollback(state: StateDir, kernel: Kernel, *, token: str | None = None) -> str:
    """Restore the previous snapshot (or remove the table if there is none). With `token`, only
    if that pending confirmation is still waiting (the watchdog's call)."""
    with state.locked():
        pending = state.pending()
        if token is not None and (pending is None or pending.token != token):
            return "confirmed in time: nothing to roll back"
        applied = state.read("applied")
        if applied is None and pending is None:
            return "nothing applied: nothing to roll back"
        unrecorded = pending is not None and pending.base == (applied[0].snapshot_id if applied
                                                               else "")
        target = applied if unrecorded else state.read("previous")
        if target is None:
            kernel.run_json(nft_tx.document(nft_tx.remove()))
            state.clear()
            message = "no previous state: removed outguard's table"
        else:
            text = any("socket" in str(c) for c in target[1]
                       if isinstance(c, dict) and isinstance(c.get("add"), dict)
                       and "rule" in c["add"])
            # Only while nobody committed since `applied` was recorded does the kernel hold
            # exactly its inventory; otherwise (an apply killed before it recorded its commit,
            # a hand edit, a DNS or feed update) the delta starts from the names it lists.
            made = _stored_inventory(target[1])
            held: nft_tx.Inventory | None = None
            if not unrecorded and applied is not None \
                    and _holds_recorded(applied[0].generation, _generation(kernel)):
                held = nft_tx.Inventory.from_json(applied[0].inventory)
            else:
                held = _held_by_kernel(kernel, nft_tx.Inventory.from_json(applied[0].inventory)
                                       if applied is not None else nft_tx.Inventory(),
                                       made.sets if made is not None else [])
            inventory = _roll_to(kernel, state, target[1], made, held, text)
            recorded = None if inventory is None else inventory.to_json()
            if unrecorded:
                if recorded is not None:
                    state.set_inventory(recorded)
            else:
                state.restore_previous(recorded)
            message = f"rolled back to the policy applied at {target[0].applied_at}"
        state.clear_pending()
        if pending is not None and token is None:
            _stop(pending.watchdog_pid)
        return message


def _held_by_kernel(kernel: Kernel, recorded: nft_tx.Inventory,
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


def _stored_inventory(stored: list[dict[str, Any]]) -> nft_tx.Inventory | None:
    """What a stored full form makes; None if the stored commands cannot be read as one."""
    try:
        return nft_tx.stored_inventory(stored)
    except ValueError:
        return None


def _holds_recorded(recorded: list[Any] | None, now: Generation | None) -> bool:
    """Is the generation a snapshot recorded (after its own commits, with no one else's
    between) still the kernel's? Then nobody committed since, and our table holds exactly what
    the snapshot's inventory says."""
    return isinstance(recorded, list) and now is not None and now[0] != "" \
        and tuple(recorded) == now


def _roll_to(kernel: Kernel, state: StateDir, stored: list[dict[str, Any]],
             target: nft_tx.Inventory | None, held: nft_tx.Inventory | None,
             text: bool) -> nft_tx.Inventory | None:
    """Put a stored snapshot back. With `held` (what the kernel holds, known for certain) the
    way apply makes a delta: new sets before the switch, old ones deleted after it (a full
    replace in one transaction could drop packets walking the old rules), shared sets kept;
    else, or if the kernel refuses the delta, the whole table is replaced in one transaction.
    Returns what the kernel holds afterwards (with what a refused cleanup left over, for the
    next apply to delete), or None if the stored commands cannot be read as a full form
    (`target`, what they make: `_stored_inventory`)."""
    if held is not None and target is not None:
        phases = nft_tx.stored_phases(stored, held)
        phases.prepare = expand(phases.prepare, state)
        try:
            if _switch(kernel, phases, text):
                return target
            gone = held.without(target)
            return nft_tx.Inventory(target.chains + gone.chains, target.sets + gone.sets,
                                    target.counters + gone.counters)
        except KernelError:
            pass  # the kernel does not hold what we recorded after all
    _run(kernel, expand(stored, state), text)
    return target


def confirm(state: StateDir) -> str:
    with state.locked():
        pending = state.pending()
        if pending is None:
            return "nothing waits for confirmation"
        state.clear_pending()
        _stop(pending.watchdog_pid)
        return f"confirmed policy {pending.policy_hash[:12]}"


def remove(state: StateDir, kernel: Kernel) -> None:
    with state.locked():
        kernel.run_json(nft_tx.document(nft_tx.remove()))
        pending = state.pending()
        state.clear_pending()
        if pending is not None:
            _stop(pending.watchdog_pid)
        state.clear()


def status(state: StateDir, counters: dict[str, tuple[int, int]], table: bool) -> dict[str, Any]:
    got = state.read("applied")
    pending = state.pending()
    out: dict[str, Any] = {"applied": got is not None and table, "table_present": table,
                           "policy_hash": None, "applied_at": None, "mode": None, "source": None,
                           "counters": {}, "pending_confirmation": None}
    if got is not None:
        snap = got[0]
        out.update(policy_hash=snap.policy_hash, applied_at=snap.applied_at, mode=snap.mode,
                   source=snap.source)
        for key, name in snap.counters.items():
            packets, nbytes = counters.get(name, (0, 0))
            out["counters"][key] = {"packets": packets, "bytes": nbytes}
    if pending is not None:
        out["pending_confirmation"] = {"deadline": pending.deadline,
                                       "seconds_left": max(0.0, pending.deadline - time.time()),
                                       "policy_hash": pending.policy_hash}
    return out
