"""The dashboard's JSON API and its live feed (Server-Sent Events).

Place in the data flow: `outguard.web.app` routes here; the incidents page's script
(`static/app.js`) reads `/api/stream` and builds rows from the JSON with textContent. The same
token (or session) as the pages is required (`auth.Gate`).

    GET /api/incidents?severity=high&rule=deny:tor&process=java&before=CURSOR&limit=50
        {"incidents": [...], "next": CURSOR or null}
    GET /api/incidents/ID     {"incident": {...}, "explain": ["..."]}
    GET /api/stream?severity=…&rule=…&process=…   text/event-stream, event `incident`
    GET /api/overview         `outguard status --json`'s dictionary
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from outguard.web import incidents as inc
from outguard.web.context import web_of
from outguard.web.sources import status_of, store_error


def _limit(text: str | None) -> int:
    try:
        return max(1, min(500, int(text or 50)))
    except ValueError:
        return 50


async def incident_page(request: Request) -> Response:
    web = web_of(request)
    params = request.query_params
    try:
        rows, nxt = await inc.page(web.sources, inc.Filters.of(params),
                                   inc.cursor_of(params.get("before")), _limit(params.get("limit")))
    except Exception as exc:
        return JSONResponse({"error": store_error(exc)}, status_code=503)
    return JSONResponse({"incidents": [inc.row(i) for i in rows],
                         "next": nxt.text() if nxt is not None else None})


async def incident_one(request: Request) -> Response:
    found, explained = await inc.detail(web_of(request).sources,
                                        request.path_params["incident_id"])
    if found is None:
        return JSONResponse({"error": "no such incident"}, status_code=404)
    return JSONResponse({"incident": inc.row(found), "explain": explained})


async def stream(request: Request) -> Response:
    web = web_of(request)
    events = inc.stream(web.sources, inc.Filters.of(request.query_params), web.stop)
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"x-accel-buffering": "no"})


async def overview(request: Request) -> Response:
    info = await asyncio.to_thread(status_of, web_of(request).sources, time.time())
    return JSONResponse(info)


ROUTES = [
    Route("/api/incidents", incident_page), Route("/api/incidents/{incident_id}", incident_one),
    Route("/api/stream", stream), Route("/api/overview", overview),
]
