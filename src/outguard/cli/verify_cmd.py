"""`outguard verify`, and the verify step of `apply --verify` (`apply.verify` does the work)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from outguard.cli.common import fail, kernel_options
from outguard.errors import OutguardError

MISMATCH = 1


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the probes and outcomes as JSON.")
@click.option("--timeout", type=click.FloatRange(0.2, 30), default=2.0, metavar="SECONDS",
              help="How long a probe waits for an answer [default: 2].")
@kernel_options
def verify(as_json: bool, timeout: float, netns: str | None, state_dir_path: Path) -> None:
    """Test the applied policy in the kernel: a probe per rule (as its user), and one for the
    default; exit 1 when any outcome differs from the policy.

    Outcomes: reached (SYN-ACK or RST), sent (UDP, no answer), blocked by outguard (its counter
    moved), blocked elsewhere (no answer, no counter of outguard's moved: another table, a
    cloud firewall), let out (outguard let out what it should drop; verify's guard kept it on
    the host). Nothing the policy denies leaves the host."""
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    try:
        with Nft() as nft:
            ok = run_verify(StateDir(state_dir_path), nft, timeout, as_json)
    except OutguardError as exc:
        fail(exc)
        return
    if not ok:
        sys.exit(MISMATCH)


def run_verify(state: Any, nft: Any, timeout: float, as_json: bool,
               rollback: bool = False) -> bool:
    """Verify, print the report; with `rollback` (apply --verify) roll back on a mismatch and
    say why. True when the kernel does what the policy says."""
    from outguard.apply.verify import (  # noqa: PLC0415
        describe,
        roll_back_failed,
        roll_back_mismatch,
    )
    from outguard.apply.verify import verify as do_verify  # noqa: PLC0415

    try:
        report = do_verify(state, nft, timeout=timeout)
    except OutguardError as exc:
        if not rollback:
            raise
        # a policy that could not be verified is not kept: `--verify` promised a tested one
        message = roll_back_failed(state, nft, f"verify could not run: {exc}")
        click.echo(f"error: verify could not run ({exc}); the policy was rolled back:"
                   f" {message}", err=True)
        return False
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=1))
    else:
        for line in describe(report):
            click.echo(line, err=rollback)
    if report.ok or not rollback:
        return report.ok
    message = roll_back_mismatch(state, nft, report)
    click.echo(f"error: verify failed, the policy was rolled back: {message}", err=True)
    return False
