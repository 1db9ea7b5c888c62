"""Where incidents are kept: an interface (`base.Store`) and its implementations.

Place in the data flow: aggregate → **store** → events / top / web / the lab. SQLite by default
(`sqlite.SQLiteStore`); the fleet work adds PostgreSQL behind the same interface. `writer`
batches the agent's writes on a thread of its own so the monitor loop never waits for a disk.
"""

from __future__ import annotations

from pathlib import Path

from outguard.store.base import MAX_FLOWS, Query, Store, StoreError


def open_store(where: str | Path, *, max_flows: int = MAX_FLOWS) -> Store:
    """A store from a path or URL: `PATH`, `sqlite:///PATH`; `postgresql://` is planned.
    `max_flows` bounds the learned flows it keeps."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        raise StoreError("the PostgreSQL store is not available yet; use a SQLite file")
    if text.startswith("sqlite:///"):
        text = text[len("sqlite://"):]
    elif "://" in text:
        raise StoreError(f"{text!r}: unknown store (give a file path or sqlite:///PATH)")
    from outguard.store.sqlite import SQLiteStore  # noqa: PLC0415

    return SQLiteStore(Path(text), max_flows=max_flows)


__all__ = ["Query", "Store", "StoreError", "open_store"]
