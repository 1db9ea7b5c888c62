"""The agent keeps `for: {unit: …}` / `cgroup` rules on their cgroups: a unit that starts or
restarts after the apply is matched within a second, without a new apply.

Place in the data flow: apply fills each cgroup set (`c_…`, `socket cgroupv2 level N @c_…`)
with the cgroup as it is then, and records the set's paths in the applied snapshot
(`apply.transact.CGROUPS`). The kernel matches a cgroup's 64-bit id, its directory's inode, and
systemd makes a new cgroup, with a new id, each time a unit starts: the set would keep the dead
id and the restarted unit's traffic would fall to the default. `outguard run` runs
**CgroupWatch** beside the monitor; it reads the applied snapshot's cgroup sets (again whenever
a new apply, rollback or restore replaces the snapshot), stat()s each cgroup every `POLL_S`
seconds, and when an id changed (a cgroup appeared, went or was made anew) swaps the set's
content in one libnftables transaction: flush, then the cgroup if it exists now. A unit that
is not running leaves its set empty, never a refused batch.

Why polling, not inotify: inotify on cgroupfs reports only `cgroup.events` changes of an
existing cgroup; a parent directory's watch sees a child's mkdir/rmdir, but a slice that does
not exist yet (nothing to watch) needs a poll all the same. A stat() per unit four times a
second costs nothing next to the agent's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from outguard.apply.transact import CGROUPS
from outguard.errors import KernelError, StateError
from outguard.ruleset.keys import TABLE
from outguard.service.applied import Stamp, stamp
from outguard.state import StateDir

if TYPE_CHECKING:
    from outguard.kernel.cgroups import CgroupLookup
    from outguard.kernel.fqdnsets import JsonKernel

log = logging.getLogger("outguard.monitor")
POLL_S = 0.25  # a restarted unit is matched again well within a second, on a loaded host too
Ids = tuple[int | None, ...]


def cgroup_sets(cmds: list[Any]) -> dict[str, tuple[str, ...]]:
    """The cgroup sets of an applied snapshot's stored commands: set name → cgroup paths."""
    return {str(c[CGROUPS]): tuple(str(p) for p in c.get("paths", []))
            for c in cmds if isinstance(c, dict) and CGROUPS in c}


def refill(name: str, found: list[str]) -> dict[str, Any]:
    """One transaction: the set emptied, then given the cgroups (nft's paths) that exist."""
    where = {"family": TABLE.family, "table": TABLE.name, "name": name}
    cmds: list[dict[str, Any]] = [{"flush": {"set": where}}]
    if found:
        cmds.append({"add": {"element": {**where, "elem": found}}})
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *cmds]}


class CgroupWatch:
    """Follows the applied snapshot's cgroup sets (see the module docstring). `kernel` and
    `lookup` default to libnftables in `netns` (opened when a set first needs writing) and the
    cgroup2 hierarchy of this mount namespace."""

    def __init__(self, state_dir: Path, netns: str | None, *,
                 kernel: JsonKernel | None = None, lookup: CgroupLookup | None = None,
                 poll: float = POLL_S) -> None:
        self.state_dir, self.netns, self.poll = state_dir, netns, poll
        self._kernel, self._lookup = kernel, lookup
        self._close: Callable[[], None] | None = None
        self._stamp: Stamp | None = None
        self.sets: dict[str, tuple[str, ...]] = {}
        self._written: dict[str, Ids] = {}  # what each set holds, as ids, since we wrote it
        self._failed: dict[str, Ids] = {}
        self.updates = 0  # sets rewritten (for tests and the log)

    def _kernel_now(self) -> JsonKernel:
        if self._kernel is None:
            from outguard.kernel.libnft import Nft  # noqa: PLC0415

            nft = Nft(self.netns)
            self._kernel, self._close = nft, nft.close
        return self._kernel

    def _lookup_now(self) -> CgroupLookup:
        if self._lookup is None:
            from outguard.kernel.cgroups import CgroupLookup  # noqa: PLC0415

            self._lookup = CgroupLookup()
        return self._lookup

    def _reread(self) -> None:
        now = stamp(self.state_dir)
        if now == self._stamp:
            return
        read = StateDir(self.state_dir).read("applied") if now is not None else None
        self.sets = cgroup_sets(read[1]) if read is not None else {}
        # a new apply filled the sets as they were when it planned: check each again
        self._stamp, self._written = now, {}

    def tick(self) -> None:
        """One look (blocking: the agent runs it on a worker thread)."""
        try:
            self._reread()
        except StateError as exc:
            log.warning("cgroup sets not followed: %s", exc)
            return
        if not self.sets:
            return
        lookup = self._lookup_now()
        for name, paths in self.sets.items():
            ids = tuple(lookup.ident(p) for p in paths)
            if self._written.get(name) == ids:
                continue
            found = [p for p in map(lookup, paths) if p is not None]
            try:
                self._kernel_now().run_json(refill(name, found))
            except (KernelError, OSError) as exc:  # e.g. the set went (a new apply): next look
                if self._failed.get(name) != ids:  # once per change, not every poll
                    log.warning("cgroup set %s not refilled: %s", name, exc)
                self._failed[name] = ids
                continue
            self._failed.pop(name, None)
            if name in self._written:  # (the first fill after an apply repeats the apply's)
                log.info("cgroup set %s follows %s: %s", name, ", ".join(paths),
                         "bound" if found else "nothing runs there now")
            self._written[name] = ids
            self.updates += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Look every `poll` seconds until `stop` is set; then release the kernel context."""
        try:
            while not stop.is_set():
                await asyncio.to_thread(self.tick)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll)
        finally:
            self.close()

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close, self._kernel = None, None
