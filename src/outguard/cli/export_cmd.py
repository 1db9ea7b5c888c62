"""`outguard compile --target T`: the export of a policy for another firewall.

Thin: load, lower, `export.targets.export`, print. The files go to stdout (each after a
`# ==> NAME <==` line) or into `--out DIR`; the fidelity report goes to stderr; `--strict`
exits 1, writing nothing, when any rule is not exact.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from outguard.cli.common import fail
from outguard.errors import OutguardError


def run_export(policy: Path, target: str, strict: bool, out_dir: Path | None) -> None:
    from outguard.compile.lower import lower  # noqa: PLC0415
    from outguard.export.targets import export  # noqa: PLC0415
    from outguard.policy.load import load_policy  # noqa: PLC0415

    try:
        loaded = load_policy(policy)
        result = export(target, lower(loaded))
    except OutguardError as exc:
        fail(exc)
        return
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(result.report(), err=True)
    if strict and not result.exact:
        inexact = sum(1 for item in result.fidelity if item.level != "exact")
        click.echo(f"error: --strict: {inexact} rule(s) are not exact for {target}; "
                   "nothing written", err=True)
        sys.exit(1)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, content in result.files.items():
            (out_dir / name).write_text(content)
            click.echo(f"wrote {out_dir / name}", err=True)
        return
    for name, content in result.files.items():
        click.echo(f"# ==> {name} <==")
        click.echo(content, nl=False)
