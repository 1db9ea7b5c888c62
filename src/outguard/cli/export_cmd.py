"""`outguard compile --target T`: the export of a policy for another firewall.

Thin: load, `export.names.for_export` (lower, and resolve the names a `dns:` section leaves to
outguard's resolver), `export.targets.export` with the target's `-o KEY=VALUE` options, print.
The files go to stdout (each after a `# ==> NAME <==` line) or into `--out DIR` (scripts
executable); the fidelity report goes to stderr; `--strict` exits 1, writing nothing, when any
rule is not exact. `-o help` lists the target's options.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from outguard.cli.common import fail
from outguard.errors import OutguardError


def run_export(policy: Path, target: str, strict: bool, out_dir: Path | None,
               feed_dir: Path | None = None, option_pairs: tuple[str, ...] = ()) -> None:
    from outguard.export.names import for_export  # noqa: PLC0415
    from outguard.export.targets import export, options, parse_options  # noqa: PLC0415
    from outguard.pipeline import load_policy  # noqa: PLC0415

    try:
        if "help" in option_pairs:
            known = options(target)
            click.echo(f"options of target {target} (-o KEY=VALUE):" if known
                       else f"target {target} has no options")
            for key, text in known.items():
                click.echo(f"  {key}: {text}")
            return
        # an unknown target or option fails before any name is resolved
        opts = parse_options(target, list(option_pairs))
        loaded = load_policy(policy, feed_dir=feed_dir)
        result = export(target, for_export(loaded), opts)
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
                path.chmod(0o755 if name.endswith((".sh", ".py", ".ps1", ".cmd")) else 0o644)
                click.echo(f"wrote {path}", err=True)
        except OSError as exc:
            fail(OutguardError(f"cannot write {exc.filename or out_dir}: {exc.strerror}"))
        return
    for name, content in result.files.items():
        click.echo(f"# ==> {name} <==")
        click.echo(content, nl=False)
