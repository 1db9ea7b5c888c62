"""The learned flows and the suggested policy, beside the policy that is applied.

Place in the data flow: store (learned flows, `flowsummary`) → `journey` (collect_summary →
suggest_table → render, what `outguard suggest` prints) → this page; the applied policy's text
comes from the state directory. Nothing is applied from here: the page shows the suggestion
to copy into a file and `outguard apply` with its confirmation.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from outguard.events import LearnedFlow
from outguard.web.context import web_of
from outguard.web.sources import Sources, store_error

SHOWN = 100
WINDOW = timedelta(days=7)
KEEP = 60.0  # seconds a suggestion is shown again before it is made anew


def recent_flows(src: Sources, limit: int = SHOWN) -> list[LearnedFlow]:
    """The most recently seen learned flows (a million may be stored: read a page's worth)."""
    since = datetime.now(UTC) - WINDOW
    return list(itertools.islice(src.reader.store().flows_iter(since), limit))


def suggested(src: Sources) -> str:
    """`outguard suggest --since 7d` over the store, as YAML text."""
    from outguard.journey.aggregate import collect_summary  # noqa: PLC0415
    from outguard.journey.render import render  # noqa: PLC0415
    from outguard.journey.suggest import suggest_table  # noqa: PLC0415
    from outguard.store import flowsummary as fs  # noqa: PLC0415

    start = datetime.now(UTC) - WINDOW
    table = src.reader.store().flows_summary(lambda c: collect_summary(
        fs.suggest_rows(c, start, False), lambda dsts: fs.classified(c, start, dsts)))
    return render(suggest_table(table))


def applied_text(src: Sources) -> str | None:
    from outguard.state import StateDir  # noqa: PLC0415

    return StateDir(src.state_dir).policy_text("applied")


def _gather(src: Sources) -> dict[str, Any]:
    out: dict[str, Any] = {"error": None, "flows": [], "suggestion": None}
    try:
        out["flows"] = recent_flows(src)
        out["suggestion"] = src.kept("suggestion", lambda: suggested(src), KEEP) \
            if out["flows"] else None
    except Exception as exc:  # no store yet, or a damaged one: the applied side still shows
        out["error"] = store_error(exc)
    out["applied"] = applied_text(src)
    return out


async def learned(request: Request) -> Response:
    web = web_of(request)
    got = await asyncio.to_thread(_gather, web.sources)
    return web.render(request, "learned.html", **got)


ROUTES = [Route("/learned", learned)]
