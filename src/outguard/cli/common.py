"""Options every kernel-facing command shares, and the move into a network namespace.

`--netns NAME` re-executes the command under `ip netns exec NAME`, so that everything the command
does — nftables, netlink, name resolution through `/etc/netns/NAME/resolv.conf`, and the rollback
watchdog it may start — happens inside that namespace, exactly as if the user had typed it there.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from outguard.errors import OutguardError, PolicyError

F = TypeVar("F", bound=Callable[..., Any])
# Set for the re-executed command only: the identity (device, inode) of the namespace it must be
# in, so that a failed move is an error instead of a loop. Never trusted as proof of where the
# process is: that is always read from the kernel (`_current_is`).
_HOP = "OUTGUARD_NETNS_HOP"


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _current_is(netns: str) -> bool:
    """Is this process in the named namespace? (`ip netns identify` compares the same: the
    nsfs inode of /proc/self/ns/net and of the bind mount /run/netns/NAME.)"""
    here = _identity("/proc/self/ns/net")
    return here is not None and here == _identity(f"/run/netns/{netns}")


def enter_netns(netns: str | None) -> None:
    """Re-execute this command inside `netns` unless the process already is there."""
    hop = os.environ.pop(_HOP, None)
    if netns is None:
        return
    from outguard.kernel import netns as ns  # noqa: PLC0415 - only the namespace path needs it
    from outguard.kernel import procs  # noqa: PLC0415

    if not ns.exists(netns):
        raise click.UsageError(f"no network namespace named {netns!r} (see `ip netns list`)")
    if _current_is(netns):
        return
    target = _identity(f"/run/netns/{netns}")
    if hop is not None and hop == repr(target):
        raise click.UsageError(f"could not move into network namespace {netns!r}")
    env = {**os.environ, _HOP: repr(target)}
    # `ip netns exec` mounts a fresh /sys, without the cgroup hierarchies: the cgroup2 root
    # goes along as an open descriptor, for rules with `for: {unit: …}` (kernel.cgroups)
    from outguard.kernel.cgroups import CGROUP_FD_ENV, open_root  # noqa: PLC0415

    if (fd := open_root()) is not None:
        env[CGROUP_FD_ENV] = str(fd)
    argv = ns.exec_argv(netns, [sys.executable, "-m", "outguard", *sys.argv[1:]])
    sys.stdout.flush()
    procs.replace_with(argv, env)


def confirm_command(netns: str | None, state_dir_path: Path) -> str:
    """The exact `outguard confirm` for this namespace and state directory."""
    import shlex  # noqa: PLC0415

    argv = ["outguard", "confirm"]
    if netns:
        argv += ["--netns", netns]
    if state_dir_path != state_dir(netns, None):
        argv += ["--state-dir", str(state_dir_path)]
    return shlex.join(argv)


def state_dir(netns: str | None, given: Path | None) -> Path:
    from outguard.state import default_dir  # noqa: PLC0415

    return given if given is not None else default_dir(netns)


def kernel_options(fn: F) -> F:
    """--netns and --state-dir; moves into the namespace before the command body runs."""
    @click.option("--netns", metavar="NAME", help="Act inside this network namespace.")
    @click.option("--state-dir", type=click.Path(path_type=Path), default=None,
                  help="Where outguard records what it applied [default: /var/lib/outguard, or "
                       "/var/lib/outguard/netns/NAME with --netns].")
    @functools.wraps(fn)
    def wrapper(*args: Any, netns: str | None, state_dir: Path | None, **kwargs: Any) -> Any:
        enter_netns(netns)
        return fn(*args, netns=netns, state_dir_path=globals()["state_dir"](netns, state_dir),
                  **kwargs)
    return wrapper  # type: ignore[return-value]


def fail(exc: OutguardError) -> None:
    """Print an error for people and exit 1 (policy problems one per line)."""
    if isinstance(exc, PolicyError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} error(s); nothing was applied", err=True)
    else:
        click.echo(f"error: {exc}", err=True)
    sys.exit(1)
