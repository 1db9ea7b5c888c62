"""What a fetch gives (`Fetched`), and the fetch of a `file:` feed: a bounded read of a local file.

Kept apart from `fetch` so that loading a policy with a `file:` feed does not import httpx.
Only a regular file is read: a FIFO would hang `apply` (opened without blocking, then refused),
a device such as /dev/zero would fill memory, a directory or socket means a wrong path. A file
over the feed's `max_bytes` is refused from its size before a byte is read.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Literal

from outguard.feeds.spec import FeedSpec


@dataclass
class Fetched:
    status: Literal["ok", "not-modified", "error"]
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_bounded(path: str, cap: int) -> tuple[bytes | None, str | None]:
    """(body, None) for a regular file of at most `cap` bytes, else (None, why). Never blocks
    on a FIFO, never reads more than cap + 1 bytes (a file that grows while read is refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror}"
    except ValueError:  # a NUL byte in the name
        return None, f"{path!r} is not a file name"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, f"{path} is {_kind(info.st_mode)}, not a regular file"
        if info.st_size > cap:
            return None, f"{path} is larger than the {cap} byte limit ({info.st_size} bytes)"
        chunks: list[bytes] = []
        size = 0
        while size <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror}"
    finally:
        os.close(fd)
    if size > cap:
        return None, f"{path} is larger than the {cap} byte limit"
    return b"".join(chunks), None


def read_file(spec: FeedSpec, max_bytes: int | None = None) -> Fetched:
    assert spec.file is not None
    body, error = read_bounded(spec.file, max_bytes or spec.max_bytes)
    if body is None:
        return Fetched("error", error=error)
    return Fetched("ok", body)
