"""The export targets by name: what `outguard compile --target T` can produce.

Place in the data flow: CLI → `exporter(name)` → the target's module turns the IR into an
`Export` (files + fidelity report). Modules are imported only when their target is asked for,
so a target under construction cannot break the others. Add a target with one line:
name → "module:function", the function taking a `Ruleset` and returning an `Export`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from outguard.errors import OutguardError
from outguard.export.fidelity import Export
from outguard.ruleset.ir import Ruleset

Exporter = Callable[[Ruleset], Export]

TARGETS: dict[str, str] = {
    "iptables": "outguard.export.iptables:export",
    "ufw": "outguard.export.ufw:export",
    "windows": "outguard.export.windows:export_windows",
    "aws": "outguard.export.aws:export_aws",
    "azure": "outguard.export.azure:export_azure",
    "gcp": "outguard.export.gcp:export_gcp",
    "k8s": "outguard.export.k8s:export_k8s",
}


def names() -> list[str]:
    return sorted(TARGETS)


def exporter(name: str) -> Exporter:
    """The export function of target `name`."""
    if name not in TARGETS:
        raise OutguardError(f"unknown export target {name!r}: choose one of {', '.join(names())}")
    module, _, attr = TARGETS[name].partition(":")
    fn: Exporter = getattr(importlib.import_module(module), attr)
    return fn


def export(name: str, ruleset: Ruleset) -> Export:
    return exporter(name)(ruleset)
