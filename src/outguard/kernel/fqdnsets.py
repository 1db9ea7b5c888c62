"""Put DNS answers into the rules' FQDN sets: one libnftables transaction per batch, in-process.

Place in the data flow: the DNS resolver (`dns.server`) decides what goes where and for how long
(`dns.cache.SetTracker`); this module only turns (set, address, timeout) items into nftables
JSON and runs it through `kernel.libnft.Nft` — never by forking `nft` per answer.

An element that may already exist gets "add, delete, add with timeout" in the same transaction:
`add` of an existing element does not reset its timeout on kernels before 6.10, and `delete` of
an absent one would fail the batch. The transaction is atomic, so packets never see the gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from outguard.ruleset.keys import TABLE as TABLE_ID

FAMILY, TABLE = TABLE_ID


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


class FqdnSets:
    """The writer the resolver calls (from a worker thread: `write` blocks ~0.2 ms)."""

    def __init__(self, kernel: JsonKernel) -> None:
        self.kernel = kernel

    def write(self, items: Sequence[tuple[str, str, int]]) -> None:
        if items:
            self.kernel.run_json({"nftables": [{"metainfo": {"json_schema_version": 1}},
                                               *commands(items)]})
