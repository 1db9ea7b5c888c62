"""`outguard compile --target T`: the export of a policy for another firewall.

Thin: load and lower (`pipeline`), `export.names.resolve_names` (the names a `dns:` section
leaves to outguard's resolver, resolved now), `export.targets.export`, print. The files go to
stdout (each after a `# ==> NAME <==` line) or into `--out DIR` (scripts executable); the
fidelity report goes to stderr; `--strict` exits 1, writing nothing, when any rule is not exact.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from outguard.cli.common import fail
from outguard.errors import OutguardError


def run_export(policy: Path, target: str, strict: bool, out_dir: Path | None,
               feed_dir: Path | None = None) -> None:
    from outguard.export.names import resolve_names  # noqa: PLC0415
    from outguard.export.targets import exporter  # noqa: PLC0415
    from outguard.pipeline import load_policy, lower_policy  # noqa: PLC0415

    try:
        export = exporter(target)  # an unknown target fails before any name is resolved
        loaded = load_policy(policy, feed_dir=feed_dir)
        result = export(resolve_names(lower_policy(loaded), loaded))
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
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for name, content in result.files.items():
                path = out_dir / name
                path.write_text(content)
                path.chmod(0o755 if name.endswith((".sh", ".ps1", ".cmd")) else 0o644)
                click.echo(f"wrote {path}", err=True)
        except OSError as exc:
            fail(OutguardError(f"cannot write {exc.filename or out_dir}: {exc.strerror}"))
        return
    for name, content in result.files.items():
        click.echo(f"# ==> {name} <==")
        click.echo(content, nl=False)
