"""Other programs: run one to its end, or start one that outlives this command.

Place in the data flow: the kernel boundary (DESIGN: only `kernel/` talks to nftables, netlink
and subprocesses). Whatever starts a process goes through here or through the other kernel
modules built on it (`netns.run` for `ip netns exec`, `privsep.spawn_child` for the DNS
resolver, `privsep.create_system_user` for `useradd`): the confirmation watchdog of `apply
--confirm-timeout`, and the lab's tools (openssl, javac, curl, java, the outguard CLI it drives).

Errors are `KernelError`s that say which program and why: `NotInstalledError` when it is missing,
`TimedOutError` when it did not finish in time (it is killed).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from outguard.errors import KernelError

Completed = subprocess.CompletedProcess[str]


class NotInstalledError(KernelError):
    """The program is not installed."""


class TimedOutError(KernelError):
    """The program did not finish in time; it was killed."""


def run(argv: Sequence[str], *, timeout: float, input: str | None = None,
        env: Mapping[str, str] | None = None) -> Completed:
    """Run `argv` to its end with its output captured as text (its exit status is the
    caller's to judge)."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, check=False,
                              timeout=timeout, input=input,
                              env=dict(env) if env is not None else None)
    except FileNotFoundError:
        raise NotInstalledError(f"`{argv[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise TimedOutError(f"`{' '.join(argv)}` did not finish in {timeout:g} s") from None


@dataclass(frozen=True)
class Bounded:
    """What a program run with a deadline did: `code` None when it was killed at the deadline
    (its output up to then is kept)."""

    code: int | None
    stdout: str
    stderr: str
    pid: int


def run_bounded(argv: Sequence[str], *, timeout: float) -> Bounded:
    """Run `argv`; at `timeout` it is killed and reported as such, not raised."""
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    except FileNotFoundError:
        raise NotInstalledError(f"`{argv[0]}` is not installed") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return Bounded(None, out or "", err or "", proc.pid)
    return Bounded(proc.returncode, out, err, proc.pid)


def start_detached(argv: Sequence[str], *, log: int, pass_fds: Sequence[int] = ()) -> int:
    """Start `argv` in a session of its own (it outlives this command, its terminal and its
    SSH session), stdin from /dev/null, stdout and stderr to the open file `log`; its pid."""
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True, pass_fds=tuple(pass_fds))
    except OSError as exc:
        raise KernelError(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
    return proc.pid


def replace_with(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Become `argv` (exec): this process, its pid and its open descriptors go on as it."""
    os.execvpe(argv[0], list(argv), dict(env))
