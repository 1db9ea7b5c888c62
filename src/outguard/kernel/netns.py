"""Named network namespaces: create, remove, run commands and Python code inside them.

Place in the data flow: the lab and the kernel tests build their test hosts as network namespaces
(DESIGN "Testing: real kernels, private namespaces"), and `kernel.libnft` / `kernel.counters` act
on the rules of one namespace. Commands go through `ip netns ...` (iproute2 owns the conventions
of ``/run/netns``: bind mounts, ``/etc/netns/NAME`` overlays), while in-process work (libnftables,
raw netlink, test sockets) runs on a `NetnsThread`: the network namespace is a property of each
thread (``setns(2)`` changes only the calling task), so one thread can live in a namespace while
the rest of the process stays where it is.

Every failure raises `KernelError` with the command's own error text.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from outguard.errors import KernelError

NETNS_DIR = "/run/netns"

# iproute2 accepts more, but these names end up in paths and nft/ip arguments: keep them boring.
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CLONE_NEWNET = 0x40000000

P = ParamSpec("P")
T = TypeVar("T")


def _check_name(name: str) -> None:
    # "." and ".." match the character class but would name /run/netns itself or its parent.
    if not _NAME_RE.fullmatch(name) or set(name) == {"."}:
        raise KernelError(f"invalid network namespace name {name!r}: use 1-64 of A-Z a-z 0-9 _ . -")


def _ip(argv: Sequence[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["ip", *argv], capture_output=True, text=True, check=False, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise KernelError("the `ip` command (iproute2) is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise KernelError(f"`ip {' '.join(argv)}` did not finish in {timeout} s") from exc


def local_addresses() -> list[str]:
    """Every address of the interfaces of this process's network namespace (`ip -j addr`):
    the kernel sends traffic to them through `lo`, so the policy's `oif lo` accept covers them."""
    proc = _ip(["-j", "addr", "show"])
    if proc.returncode != 0:
        raise KernelError(f"`ip -j addr show` failed (exit {proc.returncode}): "
                          f"{proc.stderr.strip()}")
    return [str(info["local"]) for link in json.loads(proc.stdout or "[]")
            for info in link.get("addr_info", []) if "local" in info]


def add(name: str) -> None:
    """Create the named network namespace (``ip netns add``)."""
    _check_name(name)
    proc = _ip(["netns", "add", name])
    if proc.returncode != 0:
        raise KernelError(f"cannot create network namespace {name!r}: {proc.stderr.strip()}")


def exists(name: str) -> bool:
    """True if ``/run/netns/NAME`` exists."""
    _check_name(name)
    return os.path.exists(os.path.join(NETNS_DIR, name))


def list_names() -> list[str]:
    """Names of the namespaces in ``/run/netns``, sorted."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _pids(name: str) -> list[int]:
    proc = _ip(["netns", "pids", name])
    if proc.returncode != 0:
        return []
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def delete(name: str) -> None:
    """Remove the namespace; kills processes left in it first. No error if it is absent."""
    _check_name(name)
    if not exists(name):
        return
    # A process left inside (a test's server, a stuck curl) would keep the namespace and its
    # veth ends alive after the name is gone, invisible to every later cleanup.
    deadline = time.monotonic() + 5
    while pids := _pids(name):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise KernelError(f"processes {pids} in network namespace {name!r} do not exit")
        time.sleep(0.02)
    proc = _ip(["netns", "del", name])
    if proc.returncode != 0 and exists(name):
        raise KernelError(f"cannot delete network namespace {name!r}: {proc.stderr.strip()}")


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside the namespace (for callers that need `Popen`)."""
    _check_name(name)
    return ["ip", "netns", "exec", name, *argv]


def run(
    name: str,
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,  # shadows the builtin to mirror subprocess.run
) -> subprocess.CompletedProcess[str]:
    """Run a command inside the namespace and capture its output (text).

    With ``check`` a non-zero exit raises `KernelError` carrying the command's stderr.
    """
    full = exec_argv(name, argv)
    try:
        proc = subprocess.run(
            full, capture_output=True, text=True, check=False, timeout=timeout, input=input
        )
    except FileNotFoundError as exc:
        raise KernelError("the `ip` command (iproute2) is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise KernelError(f"`{' '.join(full)}` did not finish in {timeout} s") from exc
    if check and proc.returncode != 0:
        raise KernelError(
            f"`{' '.join(argv)}` in network namespace {name!r} failed "
            f"(exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc


_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int

_Work = tuple[Callable[[], Any], "Future[Any]"]


class NetnsThread:
    """Runs callables inside a network namespace on one dedicated thread.

    The thread calls ``setns(2)`` (through ctypes) once at start; only that thread changes
    namespace, so the rest of the process stays in its own. Sockets opened by the callables
    (netlink included) belong to the namespace. ``/proc/net`` still shows the thread-group
    leader's namespace: use ``/proc/thread-self/net`` inside a callable.
    ``name=None`` means the current namespace (no setns): a serializing worker thread, which is
    what libnftables wants anyway (an ``nft_ctx`` is not thread-safe).
    """

    def __init__(self, name: str | None) -> None:
        if name is not None:
            _check_name(name)
        self.name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        started: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._main, args=(started,), name=f"netns-{name or 'current'}", daemon=True
        )
        self._thread.start()
        started.result()  # re-raises the setns failure in the creating thread

    def _enter(self) -> None:
        if self.name is None:
            return
        path = os.path.join(NETNS_DIR, self.name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise KernelError(
                f"no network namespace {self.name!r} ({path}: {exc.strerror})"
            ) from exc
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise KernelError(
                    f"cannot enter network namespace {self.name!r}: "
                    f"setns: {os.strerror(err) or errno.errorcode.get(err, err)}"
                )
        finally:
            os.close(fd)

    def _main(self, started: Future[None]) -> None:
        try:
            self._enter()
        except KernelError as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        while (work := self._queue.get()) is not None:
            fn, fut = work
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller, who re-raises it
                fut.set_exception(exc)

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in the namespace; return its result or raise its error."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)  # re-entrant call: queueing would deadlock
        fut: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise KernelError(f"the thread for network namespace {self.name!r} is closed")
            self._queue.put((lambda: fn(*args, **kwargs), fut))
        return fut.result()

    def close(self) -> None:
        """Stop the thread after the work already queued. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> NetnsThread:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
