"""Downloading feeds with httpx: conditional GET, timeouts, a size cap; local files for `file:`.

Place in the data flow: **fetch** → parse → validate → merge → sync. `fetch` returns what came
(a body, "not modified", or an error text) and never raises for network trouble: the caller
records the failure and backs off (`schedule`). A body larger than the feed's `max_bytes` is
refused while streaming, before it is all in memory. The client is passed in, so tests and the
agent share one connection pool.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from outguard import __version__
from outguard.feeds.local import Fetched, read_file
from outguard.feeds.spec import FeedSpec
from outguard.feeds.store import FeedMeta

# called with (feed name, bytes so far, total or None) while a body streams in
ProgressHook = Callable[[str, int, int | None], None]
USER_AGENT = f"outguard/{__version__} (+feeds)"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def make_client(timeout: httpx.Timeout | float = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, follow_redirects=True, max_redirects=5,
                             headers={"User-Agent": USER_AGENT})


async def fetch(client: httpx.AsyncClient, spec: FeedSpec, meta: FeedMeta, *,
                conditional: bool = True, progress: ProgressHook | None = None) -> Fetched:
    if spec.file is not None:
        return read_file(spec)
    assert spec.url is not None
    headers = {}
    if conditional and meta.etag:
        headers["If-None-Match"] = meta.etag
    if conditional and meta.last_modified:
        headers["If-Modified-Since"] = meta.last_modified
    try:
        async with client.stream("GET", spec.url, headers=headers) as resp:
            if resp.status_code == 304:
                return Fetched("not-modified", etag=meta.etag, last_modified=meta.last_modified)
            if resp.status_code != 200:
                return Fetched("error", error=f"HTTP {resp.status_code} from {spec.url}")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > spec.max_bytes:
                return Fetched("error", error=f"{spec.url}: {declared} bytes announced, over the"
                               f" {spec.max_bytes} byte limit")
            total = int(declared) if declared and declared.isdigit() else None
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > spec.max_bytes:
                    return Fetched("error", error=f"{spec.url}: body over the {spec.max_bytes}"
                                   " byte limit")
                chunks.append(chunk)
                if progress is not None:
                    progress(spec.name, size, total)
            return Fetched("ok", b"".join(chunks), resp.headers.get("ETag"),
                           resp.headers.get("Last-Modified"))
    except httpx.TimeoutException as exc:
        return Fetched("error", error=f"{spec.url}: timed out ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return Fetched("error", error=f"{spec.url}: {type(exc).__name__}: {exc}")
