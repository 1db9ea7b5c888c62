"""`outguard lockdown`: the emergency brake, from the command line (`apply.lockdown` does it)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from outguard.cli.common import fail, kernel_options
from outguard.cli.monitor_cmds import parse_duration
from outguard.errors import OutguardError


@click.command()
@click.option("--for", "duration", default=None, metavar="DURATION",
              help="How long: 90s, 30m, 2h, 1d. The kernel ends it by itself then.")
@click.option("--keep", multiple=True, metavar="RULE",
              help="An allow rule of the applied policy that keeps working (repeatable).")
@click.option("--off", is_flag=True, help="End the lockdown now.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@kernel_options
def lockdown(duration: str | None, keep: tuple[str, ...], off: bool, as_json: bool,
             netns: str | None, state_dir_path: Path) -> None:
    """Drop every new outbound connection for a while, except loopback, established
    connections (your SSH session), outguard's resolver to its upstreams and the --keep rules.

    Works with or without an applied policy, in one transaction; it survives `apply` of a new
    policy and ends in the kernel at its time, whether or not outguard is running."""
    from outguard.apply import lockdown as ld  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    if off == (duration is not None):
        raise click.UsageError("give either --for DURATION or --off")
    if off and keep:
        raise click.UsageError("--keep goes with --for, not with --off")
    state = StateDir(state_dir_path)
    try:
        with Nft() as nft:
            if off:
                report = ld.end(state, nft)
            else:
                assert duration is not None
                seconds = parse_duration(duration).total_seconds()
                report = ld.start(state, nft, seconds, list(keep))
    except OutguardError as exc:
        fail(exc)
        return
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    got = report.lockdown
    if as_json:
        click.echo(json.dumps({"lockdown": got.to_json() | {"until_text": got.until_text}
                               if got else None, "policy": report.with_policy}))
        return
    where = f" in network namespace {netns}" if netns else ""
    if got is None:
        click.echo(f"lockdown ended{where}")
        return
    kept = f", keeping {', '.join(got.keep)}" if got.keep else ""
    base = "the applied policy" if report.with_policy else "no policy applied"
    click.echo(f"lockdown until {got.until_text}{where}{kept} ({base}); end it early with"
               " `outguard lockdown --off`")
