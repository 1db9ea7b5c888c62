"""The export targets by name: what `outguard compile --target T [-o KEY=VALUE]` can produce.

Place in the data flow: CLI → `export(name, ruleset, options)` → the target's module turns the
IR into an `Export` (files + fidelity report). Modules are imported only when their target is
asked for, so a target under construction cannot break the others.

Add a target with one line here: name → "module:function". The function takes the `Ruleset`
and, as keyword arguments, the target's options; the module declares them in a dict `OPTIONS`
(option name → one line of help, shown by `compile --target T -o help`). Option names use
dashes on the command line and underscores as arguments (`kube-dns` → `kube_dns`); values are
strings, which the target checks itself (raising `ExportError` with the option's name).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType

from outguard.errors import OutguardError
from outguard.export.fidelity import Export, RuleFidelity
from outguard.ruleset.ir import Ruleset

Exporter = Callable[..., Export]

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


def _module(name: str) -> tuple[ModuleType, str]:
    if name not in TARGETS:
        raise OutguardError(f"unknown export target {name!r}: choose one of {', '.join(names())}")
    module, _, attr = TARGETS[name].partition(":")
    return importlib.import_module(module), attr


def options(name: str) -> dict[str, str]:
    """The options target `name` takes: option → help."""
    module, _attr = _module(name)
    declared: dict[str, str] = getattr(module, "OPTIONS", {})
    return dict(declared)


def parse_options(name: str, pairs: list[str]) -> dict[str, str]:
    """`KEY=VALUE` texts from the command line, checked against the target's options."""
    known = options(name)
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OutguardError(f"option {pair!r}: write KEY=VALUE")
        if key not in known:
            have = ", ".join(sorted(known)) or "none"
            raise OutguardError(f"target {name} has no option {key!r} (its options: {have})")
        out[key] = value.strip()
    return out


def exporter(name: str) -> Exporter:
    """The export function of target `name`."""
    module, attr = _module(name)
    fn: Exporter = getattr(module, attr)
    return fn


def export(name: str, ruleset: Ruleset, opts: Mapping[str, str] | None = None) -> Export:
    """Export `ruleset` for target `name` with its options (checked: `parse_options`)."""
    fn = exporter(name)
    known = options(name)
    kwargs = {}
    for key, value in (opts or {}).items():
        if key not in known:
            raise OutguardError(f"target {name} has no option {key!r}")
        kwargs[key.replace("-", "_")] = value
    out = fn(ruleset, **kwargs)
    proxy = ruleset.proxy
    if proxy is not None and proxy.kernel_rules:
        # outguard's own nftables rules around its proxy: no target writes them (`--strict`
        # fails on this, as on any rule the target could not take)
        what = " and ".join(w for w, on in (("only_egress", proxy.only_egress),
                                           ("transparent", proxy.transparent)) if on)
        out.fidelity.append(RuleFidelity("proxy", "dropped", (
            f"proxy: {what} is outguard's nftables rules (ports 80/443 closed to all but"
            f" {proxy.user}, or redirected into its proxy); {name} gets none of it: close"
            " them with the target's own means, or run outguard on the host")))
    return out
