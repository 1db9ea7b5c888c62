"""What a fetch gives (`Fetched`), and the fetch of a `file:` feed: a bounded read of a local file.

Kept apart from `fetch` so that loading a policy with a `file:` feed does not import httpx.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from outguard.feeds.spec import FeedSpec
from outguard.policy.files import FileRefusedError, read_capped


@dataclass
class Fetched:
    status: Literal["ok", "not-modified", "error"]
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None


def read_file(spec: FeedSpec, max_bytes: int | None = None) -> Fetched:
    assert spec.file is not None
    cap = max_bytes or spec.max_bytes
    try:  # regular files only: a FIFO would hang the read, a device never end
        body = read_capped(Path(spec.file), cap)
    except FileRefusedError as exc:
        return Fetched("error", error=f"cannot read {spec.file}: {exc}")
    return Fetched("ok", body)
