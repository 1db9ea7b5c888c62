"""Learned flows from a file: JSON Lines of `LearnedFlow.to_json()` (what `outguard flows
--json` prints), for `suggest --flows` and `simulate --flows`.

Read lazily, one line at a time (a million flows never sit in memory at once); a line that is
not a flow stops the read with an error naming the file and the line.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

from outguard.errors import OutguardError
from outguard.events import LearnedFlow


class FlowFileError(OutguardError):
    """A flows file that cannot be read, or a line of it that is not a flow."""


def read_flows(path: Path) -> Iterator[LearnedFlow]:
    """The flows of `path`, in order; blank lines and `#` comments are skipped."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise FlowFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        lineno = 0
        try:
            for lineno, line in enumerate(handle, 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                try:
                    yield LearnedFlow.from_json(orjson.loads(text))
                except (ValueError, orjson.JSONDecodeError) as exc:
                    raise FlowFileError(f"{path}:{lineno}: {exc}") from None
        except UnicodeDecodeError:
            raise FlowFileError(f"{path}:{lineno + 1}: not UTF-8 text") from None


def read_names(path: Path, since: datetime | None = None) -> Iterator[tuple[str, list[str]]]:
    """(address, names) of each flow with names (last seen at or after `since`), parsed no
    further: the first of simulate's two passes. A line that is no flow is skipped here;
    `read_flows` reports it."""
    try:
        with path.open("rb") as handle:
            for line in handle:
                if b'"names":[]' in line or b'"names": []' in line:
                    continue
                try:
                    data = orjson.loads(line)
                    names, dst = data.get("names"), data.get("dst")
                    if since is not None and _aware(datetime.fromisoformat(
                            str(data["last_seen"]))) < since:
                        continue
                except (orjson.JSONDecodeError, AttributeError, KeyError, ValueError):
                    continue
                if isinstance(dst, str) and isinstance(names, list) and names:
                    yield dst, [str(n) for n in names]
    except OSError as exc:
        raise FlowFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
