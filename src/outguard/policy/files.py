"""Reading the files a policy names (the policy itself, list files) without trusting them.

A policy may name any path. Reading it blindly lets `/dev/zero` fill memory, a FIFO hang the
command for ever, and a directory or device do something else again. So: open without blocking,
accept regular files only, and read at most a cap (`FileTooBig` beyond it). Callers report the
error with the file's name and never echo what the file holds.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_POLICY_BYTES = 16 << 20  # a policy with inline lists; big lists belong in list files
MAX_LIST_BYTES = 256 << 20  # a million IPv6 networks is ~40 MB


class FileRefusedError(Exception):
    """A file that is not read: not a regular file, too big, or unreadable. The message is for
    people and names no content."""


def read_capped(path: Path, cap: int) -> bytes:
    """The bytes of the regular file `path`, at most `cap` of them; FileRefusedError otherwise."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer would wait for one for ever
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise FileRefusedError(exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefusedError(f"not a regular file (a {_kind(info.st_mode)})")
        if info.st_size > cap:
            raise FileRefusedError(f"{_size(info.st_size)} is more than the {_size(cap)} allowed")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(1 << 20, cap + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:  # it grew while we read it
                raise FileRefusedError(f"more than the {_size(cap)} allowed")
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefusedError(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def regular_file_problem(path: Path, cap: int = MAX_LIST_BYTES) -> str | None:
    """Why `path` would be refused by `read_capped` (not read: for files another part reads
    later, such as the resolver's blocklists), or None."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file (a {_kind(info.st_mode)})"
    if info.st_size > cap:
        return f"{_size(info.st_size)} is more than the {_size(cap)} allowed"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _size(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n:,} bytes"
