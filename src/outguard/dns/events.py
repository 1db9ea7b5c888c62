"""DNS events: what the resolver answered, for `outguard dns log` and the monitor.

Events are JSON lines in `<state dir>/dns-events.jsonl` (`read_events`), written by the agent
(`JsonlEvents`), never by the unprivileged resolver process, which sends them over its pipe
(`from_json` checks what comes back). The file is rotated: past `max_bytes` it becomes
`dns-events.jsonl.1` (older ones shift up to `.{keep}`, the oldest goes), so the log never
holds more than (keep + 1) * max_bytes, 64 MiB by default. `outguard run` hands the resolver
`incidents.IncidentEvents`, which writes these lines and also puts refused and suspicious
queries into the monitor's store and alerts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

FILE_NAME = "dns-events.jsonl"
ACTIONS = ("resolved", "blocked", "blocklisted", "audit", "failed", "suspicious")


@dataclass
class DnsEvent:
    time: float
    client: str  # "addr:port" (and "/tcp" for TCP)
    qname: str
    qtype: str
    # resolved | blocked | blocklisted | audit (would be blocked) | failed
    # | suspicious (resolved, but looks like DNS tunnelling: `tunnel`)
    action: str
    rule: str
    reason: str
    rcode: str
    addresses: list[str] = field(default_factory=list)
    pid: int | None = None
    exe: str | None = None
    uid: int | None = None
    cmdline: list[str] = field(default_factory=list)
    classifications: list[str] = field(default_factory=list)
    zone: str | None = None  # suspicious: the wildcard's zone the names were allowed under

    @property
    def blocked(self) -> bool:
        return self.action in ("blocked", "blocklisted", "audit")


_TEXT_MAX = 2048
_LIST_MAX = 64


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} is no text")
    return value[:_TEXT_MAX]


def _texts(value: Any, name: str) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{name} is no list")
    return [_text(v, name) for v in value[:_LIST_MAX]]


def _int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} is no integer")
    return value


def from_json(data: Any) -> DnsEvent:
    """An event from plain data that may come from anywhere (the resolver process, a damaged
    file): ValueError unless every field has its type; texts and lists are cut to a bound."""
    if not isinstance(data, dict) or not set(data) <= {f.name for f in fields(DnsEvent)}:
        raise ValueError("not a DNS event")
    when = data.get("time")
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise ValueError("time is no number")
    if data.get("action") not in ACTIONS:
        raise ValueError(f"unknown action {data.get('action')!r:.40}")
    exe, zone = data.get("exe"), data.get("zone")
    return DnsEvent(
        time=float(when), client=_text(data.get("client"), "client"),
        qname=_text(data.get("qname"), "qname"), qtype=_text(data.get("qtype"), "qtype"),
        action=str(data["action"]), rule=_text(data.get("rule"), "rule"),
        reason=_text(data.get("reason"), "reason"), rcode=_text(data.get("rcode"), "rcode"),
        addresses=_texts(data.get("addresses", []), "addresses"),
        pid=_int(data.get("pid"), "pid"), exe=None if exe is None else _text(exe, "exe"),
        uid=_int(data.get("uid"), "uid"), cmdline=_texts(data.get("cmdline", []), "cmdline"),
        classifications=_texts(data.get("classifications", []), "classifications"),
        zone=None if zone is None else _text(zone, "zone"))


class EventSink(Protocol):
    def append(self, event: DnsEvent) -> None: ...


class JsonlEvents:
    """Appends events as JSON lines (one `write` per event, so lines never interleave), and
    rotates the file past `max_bytes`."""

    def __init__(self, state_dir: Path, max_bytes: int = 16 << 20, keep: int = 3) -> None:
        self.path = state_dir / FILE_NAME
        self.max_bytes, self.keep = max_bytes, keep
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = self._open()
        self.size = os.fstat(self._fd).st_size
        self.errors = 0  # lines that could not be written (disk full, ...)

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def append(self, event: DnsEvent) -> None:
        line = (json.dumps(asdict(event), separators=(",", ":")) + "\n").encode()
        try:
            if self.size + len(line) > self.max_bytes and self.size > 0:
                self._rotate()
            os.write(self._fd, line)
        except OSError:
            self.errors += 1
            return
        self.size += len(line)

    def _rotate(self) -> None:
        for i in range(self.keep, 0, -1):
            older = self.path.with_name(f"{FILE_NAME}.{i}")
            if i == self.keep:
                older.unlink(missing_ok=True)
            else:
                newer = self.path.with_name(f"{FILE_NAME}.{i + 1}")
                if older.exists():
                    os.replace(older, newer)
        if self.keep > 0:
            os.replace(self.path, self.path.with_name(f"{FILE_NAME}.1"))
        else:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = self._open()
        self.size = 0

    def close(self) -> None:
        os.close(self._fd)


class MemoryEvents:
    """Keeps events in a list (tests, and callers that do their own storing)."""

    def __init__(self) -> None:
        self.events: list[DnsEvent] = []

    def append(self, event: DnsEvent) -> None:
        self.events.append(event)


def log_files(state_dir: Path) -> list[Path]:
    """The event log's files, oldest first (rotated ones, then the current one)."""
    rotated = []
    for path in state_dir.glob(f"{FILE_NAME}.*"):
        suffix = path.name[len(FILE_NAME) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), path))
    return [p for _n, p in sorted(rotated, reverse=True)] + [state_dir / FILE_NAME]


def read_events(state_dir: Path, blocked_only: bool = False) -> Iterator[DnsEvent]:
    for path in log_files(state_dir):
        try:
            fh = path.open(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        with fh:
            for line in fh:
                try:
                    event = from_json(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a crash
                if not blocked_only or event.blocked:
                    yield event
