"""`outguard doctor`: the host's readiness and outguard's service, one line a check."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from outguard.cli.common import kernel_options


@click.command()
@kernel_options
def doctor(netns: str | None, state_dir_path: Path) -> None:
    """Check the host: kernel, state directory, ports, units.

    nftables and libnftables, NFLOG, cgroup v2, the state directory's owner and mode, the
    resolver's and proxy's ports (free, outguard's, or taken), the units under systemd. Each check
    prints one line, ok, warn or fail, with what to do; exit 1 when one fails. With --netns
    the kernel checks (NFLOG, the ports) look into that namespace.
    """
    from outguard.service.doctor import run_checks  # noqa: PLC0415

    checks = run_checks(state_dir_path)
    for check in checks:
        click.echo(check.line())
    failed = sum(c.level == "fail" for c in checks)
    warned = sum(c.level == "warn" for c in checks)
    click.echo(f"{failed} failed, {warned} warning(s)" if failed or warned else "all ok")
    sys.exit(1 if failed else 0)
