"""Running a part of outguard as an unprivileged user: the system user, the child process, the
drop of root.

Place in the data flow: the DNS resolver parses what any local process and any upstream sends
it, so it does not run inside the root agent. The agent (`dns.supervisor`) starts it with
`spawn_child`; the child (`dns.process`), still root, enters the network namespace
(`enter_netns`), binds its sockets, then calls `drop_privileges`: no supplementary groups, the
resolver's gid and uid (real, effective, saved), no capabilities left, `no_new_privs` set. Its
upstream sockets are then created by that uid, which is what the kernel rule `meta skuid`
matches. Users come from `useradd --system` (`create_system_user`).

Why a process and not a thread: credentials are per thread in the kernel, but glibc's
setresuid() changes every thread of the process (and Python's `os.setresuid` is that call), and
a thread shares the agent's memory anyway. The child keeps no privilege at all: whatever needs
root (kernel set writes, attribution through /proc) the agent does on its request.
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

from outguard.errors import KernelError
from outguard.policy import accounts

NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def create_system_user(name: str, comment: str) -> tuple[int, int]:
    """Create system user `name` (own group, no home, no login) unless it exists; (uid, gid).

    Safe against a concurrent creation (another outguard, a package script): useradd's "exists"
    and lock errors end in a fresh lookup."""
    argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
            "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment", comment, name]
    problem = ""
    for _attempt in range(20):
        found = accounts.user_ids(name)
        if found is not None:
            return found
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except FileNotFoundError:
            raise KernelError(f"cannot create user {name!r}: no `useradd` on this machine;"
                              " create it yourself (a system user with no login)") from None
        except subprocess.TimeoutExpired:
            raise KernelError(f"`useradd {name}` did not finish in 30 s") from None
        if proc.returncode == 0:
            continue
        problem = proc.stderr.strip() or f"exit {proc.returncode}"
        time.sleep(0.1)  # 9: exists (a race), 10: /etc/passwd locked: look again
    raise KernelError(f"cannot create user {name!r}: {problem}")


Child = subprocess.Popen[bytes]  # a child process of ours (`spawn_child`)


def spawn_child(module: str, args: Sequence[str], pass_fds: Sequence[int]) -> Child:
    """`python -m module args...` as a child of this process, with only `pass_fds` open besides
    stdout/stderr (the child's log lines go where ours go)."""
    argv = [sys.executable, "-m", module, *args]
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, pass_fds=tuple(pass_fds),
                                close_fds=True)
    except OSError as exc:
        raise KernelError(f"cannot start {module}: {exc}") from exc


def spawn_piped(module: str, args: Sequence[str]) -> Child:
    """`python -m module args...` with its stdin and stdout as pipes to this process (a child
    that is told things and reports back: `service.proxyrun`); stderr is ours."""
    argv = [sys.executable, "-m", module, *args]
    try:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                close_fds=True)
    except OSError as exc:
        raise KernelError(f"cannot start {module}: {exc}") from exc


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into network namespace `name`."""
    path = os.path.join(NETNS_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise KernelError(f"no network namespace {name!r} ({path}: {exc.strerror})") from exc
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            raise KernelError(f"cannot enter network namespace {name!r}:"
                              f" {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def raise_fd_limit(want: int = 65536) -> int:
    """Soft RLIMIT_NOFILE up to `want` (within the hard limit); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def drop_privileges(uid: int, gid: int) -> None:
    """Become uid/gid for good: KernelError unless root is really gone afterwards."""
    if uid == 0 or gid == 0:
        raise KernelError("refusing to 'drop' privileges to root")
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise KernelError(f"cannot switch to uid {uid} / gid {gid}: {exc.strerror}") from exc
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise KernelError(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise KernelError("the switch of user did not take")
    try:
        os.setresuid(0, 0, 0)
    except PermissionError:
        pass
    else:
        raise KernelError("root could be regained after dropping privileges")
    if effective_capabilities() != 0:
        raise KernelError("capabilities are left after dropping privileges")


def effective_capabilities(pid: int | str = "self") -> int:
    """The CapEff mask of a process (0: none)."""
    with open(f"/proc/{pid}/status", "rb") as fh:  # bytes: no codec to import after a drop
        for line in fh:
            if line.startswith(b"CapEff:"):
                return int(line.split()[1], 16)
    raise KernelError(f"no CapEff in /proc/{pid}/status")
