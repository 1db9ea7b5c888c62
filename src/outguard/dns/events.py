"""DNS events: what the resolver answered, for `outguard dns log` and the monitor.

Events are JSON lines in `<state dir>/dns-events.jsonl` (`read_events`). Everything goes
through `EventSink` (`append`): `outguard run` hands the resolver `incidents.IncidentEvents`,
which writes these lines and also puts refused queries into the monitor's store and alerts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

FILE_NAME = "dns-events.jsonl"


@dataclass
class DnsEvent:
    time: float
    client: str  # "addr:port" (and "/tcp" for TCP)
    qname: str
    qtype: str
    action: str  # resolved | blocked | blocklisted | audit (would be blocked) | failed
    rule: str
    reason: str
    rcode: str
    addresses: list[str] = field(default_factory=list)
    pid: int | None = None
    exe: str | None = None
    uid: int | None = None
    cmdline: list[str] = field(default_factory=list)
    classifications: list[str] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return self.action in ("blocked", "blocklisted", "audit")


class EventSink(Protocol):
    def append(self, event: DnsEvent) -> None: ...


class JsonlEvents:
    """Appends events as JSON lines (one `write` per event, so lines never interleave)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, event: DnsEvent) -> None:
        os.write(self._fd, (json.dumps(asdict(event), separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


class MemoryEvents:
    """Keeps events in a list (tests, and callers that do their own storing)."""

    def __init__(self) -> None:
        self.events: list[DnsEvent] = []

    def append(self, event: DnsEvent) -> None:
        self.events.append(event)


def read_events(state_dir: Path, blocked_only: bool = False) -> Iterator[DnsEvent]:
    path = state_dir / FILE_NAME
    try:
        fh = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            try:
                data: Any = json.loads(line)
                event = DnsEvent(**data)
            except (ValueError, TypeError):
                continue  # a line cut short by a crash
            if not blocked_only or event.blocked:
                yield event
