"""Shared pieces of the dashboard's tests: incidents written into a real SQLite store, and the
application over it (Starlette's TestClient speaks ASGI to it, no socket)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from outguard.events import Classification, Incident
from outguard.store.sqlite import SQLiteStore
from outguard.web.app import build
from outguard.web.auth import Secrets, load_token
from outguard.web.sources import Sources

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
XSS = "<script>alert(1)</script>"


def incident(n: int, *, when: datetime | None = None, **kw: Any) -> Incident:
    seen = when or T0 + timedelta(seconds=n)
    base: dict[str, Any] = dict(
        id=f"inc-{n:07d}", process="/usr/bin/curl", dst="203.0.113.9", dport=443,
        rule="default", proto="tcp", signature="unknown-destination",
        title="blocked by default", severity="low", first_seen=seen, last_seen=seen, count=1,
        pid=100 + n, uid=0, user="root", cmdline=("curl", "https://203.0.113.9/"),
        classifications=[Classification("unknown-destination", "blocked by default", "low")])
    base.update(kw)
    return Incident(**base)


def store_with(path: Path, incidents: list[Incident]) -> None:
    store = SQLiteStore(path)
    try:
        store.write(incidents)
    finally:
        store.close()


def app_for(state: Path, **kw: Any) -> tuple[Any, Secrets]:
    keys = Secrets(load_token(state))
    sources = Sources(state_dir=state, store_path=state / "events.db", **kw)
    return build(sources, keys), keys
