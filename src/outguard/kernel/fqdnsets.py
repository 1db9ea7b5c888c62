"""Put DNS answers into the rules' FQDN sets: one libnftables transaction per batch, in-process.

Place in the data flow: the DNS resolver (`dns.server`) decides what goes where and for how long
(`dns.cache.SetTracker`); this module only turns (set, address, timeout) items into nftables
JSON and runs it through `kernel.libnft.Nft` — never by forking `nft` per answer.

No table of ours, no sets to fill: before the first apply (`outguard run --no-apply POLICY`
serving a file) and after `outguard remove` (the agent keeps serving its last policy) outguard
filters nothing, so nothing needs the addresses, and failing the answer (SERVFAIL) would leave
the host without DNS for nothing. When a write fails, `write` asks the kernel whether our table
exists (netlink, names only): if it does not, the write is skipped (False: the resolver then
does not count the addresses as held) and the resolver answers; the first skip of a spell is
logged as an error. With the table there, a failed write stays an error: fail closed.

An element that may already exist gets "add, delete, add with timeout" in the same transaction:
`add` of an existing element does not reset its timeout on kernels before 6.10, and `delete` of
an absent one would fail the batch. The transaction is atomic, so packets never see the gap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from outguard.errors import KernelError
from outguard.ruleset.keys import TABLE as TABLE_ID

FAMILY, TABLE = TABLE_ID
log = logging.getLogger("outguard.dns")


class JsonKernel(Protocol):
    def run_json(self, doc: Any) -> Any: ...


def commands(items: Sequence[tuple[str, str, int]]) -> list[dict[str, Any]]:
    by_set: dict[str, list[tuple[str, int]]] = {}
    for name, addr, timeout in items:
        by_set.setdefault(name, []).append((addr, timeout))
    cmds: list[dict[str, Any]] = []
    for name, elems in by_set.items():
        base = {"family": FAMILY, "table": TABLE, "name": name}
        plain = [addr for addr, _t in elems]
        cmds.append({"add": {"element": {**base, "elem": plain}}})
        cmds.append({"delete": {"element": {**base, "elem": plain}}})
        cmds.append({"add": {"element": {**base, "elem": [
            {"elem": {"val": addr, "timeout": max(int(t), 1)}} for addr, t in elems]}}})
    return cmds


def table_probe(kernel: JsonKernel) -> Callable[[], bool] | None:
    """Does our table exist? By the kernel's netlink listing of names (`Nft.objects`: None
    when there is no such table); None for a kernel that cannot list."""
    objects = getattr(kernel, "objects", None)
    if not callable(objects):
        return None
    return lambda: objects() is not None


class FqdnSets:
    """The writer the resolver calls (from a worker thread: `write` blocks ~0.2 ms).
    `has_table`: does `inet outguard` exist now (None: assume it does, every failure is one)."""

    def __init__(self, kernel: JsonKernel, has_table: Callable[[], bool] | None = None) -> None:
        self.kernel = kernel
        self.has_table = has_table
        self.skipping = False  # in a spell of writes skipped for want of a table (logged once)

    def write(self, items: Sequence[tuple[str, str, int]]) -> bool:
        """Put `items` into the sets: True once committed, False when skipped because no
        table of ours exists; KernelError when the kernel refused them with the table there."""
        if not items:
            return True
        try:
            self.kernel.run_json({"nftables": [{"metainfo": {"json_schema_version": 1}},
                                               *commands(items)]})
        except KernelError as exc:
            if self._table_exists():
                raise
            if not self.skipping:
                self.skipping = True
                log.error("no outguard table in the kernel holds the DNS sets (nothing"
                          " applied yet, or `outguard remove`): egress is not filtered, the"
                          " resolver answers without filling sets (%s)", str(exc).strip()[:160])
            return False
        if self.skipping:
            self.skipping = False
            log.warning("outguard's table is back: the resolver fills its DNS sets again")
        return True

    def _table_exists(self) -> bool:
        if self.has_table is None:
            return True
        try:
            return self.has_table()
        except (KernelError, OSError) as exc:  # cannot tell: fail closed
            log.warning("cannot tell whether outguard's table exists: %s", exc)
            return True
