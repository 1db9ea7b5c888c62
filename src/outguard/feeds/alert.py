"""Feed alerts: structured records of a refused update, removed entries, or a failing fetch.

Place in the data flow: validate and sync return them; the CLI prints them, the agent logs them
and hands each to an `AlertHook` (the monitor's alert sinks plug in there). Pure data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

log = logging.getLogger("outguard.feeds")


@dataclass(frozen=True)
class FeedAlert:
    severity: Literal["error", "warning", "info"]
    feed: str
    kind: str  # refused | removed | bad-lines | fetch-failed | sync-failed | round-failed
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.severity}: feed {self.feed}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


AlertHook = Callable[[FeedAlert], None]


def log_alert(alert: FeedAlert) -> None:
    level = {"error": logging.ERROR, "warning": logging.WARNING}.get(alert.severity, logging.INFO)
    log.log(level, "%s", alert, extra={"feed_alert": alert.to_json()})


def emit(alerts: list[FeedAlert], hook: AlertHook | None) -> None:
    for alert in alerts:
        log_alert(alert)
        if hook is not None:
            hook(alert)
