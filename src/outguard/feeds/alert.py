"""Feed alerts (`events.FeedAlert`: a refused update, removed entries, a failing fetch): logged,
and handed on.

Place in the data flow: validate and sync return them; the CLI prints them, the agent logs them
(`log_alert`) and hands each to an `AlertHook` (the agent's alert sinks plug in there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from outguard.events import FeedAlert

log = logging.getLogger("outguard.feeds")
AlertHook = Callable[[FeedAlert], None]


def log_alert(alert: FeedAlert) -> None:
    level = {"error": logging.ERROR, "warning": logging.WARNING}.get(alert.severity, logging.INFO)
    log.log(level, "%s", alert, extra={"feed_alert": alert.to_json()})


def emit(alerts: list[FeedAlert], hook: AlertHook | None) -> None:
    for alert in alerts:
        log_alert(alert)
        if hook is not None:
            hook(alert)
