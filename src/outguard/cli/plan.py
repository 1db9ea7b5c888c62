"""`outguard plan`: what `outguard apply` of a policy would do, now.

The same computation as apply (`applyplan.make_plan`: the policy loaded as apply loads it, the
record and the kernel's generation read the same way), printed by `planview`; nothing changes.
Never `nft list` (slow with big sets): the kernel is read by netlink, without set elements.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from outguard.cli.common import fail, kernel_options
from outguard.errors import OutguardError

CHANGES = 2


@click.command()
@click.argument("policy", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--exit-code", is_flag=True,
              help="Exit 2 when apply would change the kernel, 0 when it would not.")
@click.option("--full", is_flag=True, help="Every object and rule line (long lists are cut"
                                           " short by default).")
@kernel_options
def plan(policy: Path, exit_code: bool, full: bool, netns: str | None,
         state_dir_path: Path) -> None:
    """Show what applying POLICY would change, transaction by transaction."""
    from outguard.apply.applyplan import make_plan  # noqa: PLC0415
    from outguard.apply.planview import describe  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir_path)
    try:
        with Nft() as nft:
            got = make_plan(policy, state, nft)
            applied = state.read("applied")
            lines = describe(got, applied[1] if applied is not None else None, full=full)
    except OutguardError as exc:
        fail(exc)
        return
    click.echo("\n".join(lines))
    if exit_code and got.changes_kernel():
        sys.exit(CHANGES)
