"""The dashboard's HTML pages: overview, incidents (list and detail), top, feeds, DNS.

Place in the data flow: `outguard.web.app` routes here; each page reads through `Sources`
(store reads on a worker thread) and renders a template. Pages show what the agent and the
state directory hold; none changes anything.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from outguard.events import SEVERITIES
from outguard.web import incidents as inc
from outguard.web.context import web_of
from outguard.web.sources import status_of, store_error
from outguard.web.svg import bars, sparkline

WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
           "30d": timedelta(days=30)}


def when(ts: float | str | None) -> str:
    if ts is None:
        return "never"
    if isinstance(ts, str):
        return ts
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


async def overview(request: Request) -> Response:
    web = web_of(request)
    now = time.time()
    info = await asyncio.to_thread(status_of, web.sources, now)
    counters = [(key, value["packets"], sparkline(web.sampler.series(key), label=key))
                for key, value in info["counters"].items()]
    try:
        recent = (await inc.page(web.sources, inc.Filters(), None, 10))[0]
        error = None
    except Exception as exc:  # the store may not exist yet: the overview still shows
        recent, error = [], store_error(exc)
    return web.render(request, "overview.html", info=info, counters=counters, recent=recent,
                      error=error, when=when, destination=inc.destination)


async def incident_list(request: Request) -> Response:
    web = web_of(request)
    filters = inc.Filters.of(request.query_params)
    before = inc.cursor_of(request.query_params.get("before"))
    try:
        rows, nxt = await inc.page(web.sources, filters, before)
        rules, error = await inc.rules(web.sources), None
    except Exception as exc:
        rows, nxt, rules, error = [], None, [], store_error(exc)
    return web.render(request, "incidents.html", rows=rows, next=nxt, filters=filters,
                      rules=rules, severities=SEVERITIES, error=error,
                      destination=inc.destination, first_page=before is None)


async def incident_detail(request: Request) -> Response:
    web = web_of(request)
    found, explained = await inc.detail(web.sources, request.path_params["incident_id"])
    if found is None:
        return web.render(request, "missing.html", status=404, what="incident")
    return web.render(request, "incident.html", inc=found, explained=explained,
                      destination=inc.destination(found))


async def top(request: Request) -> Response:
    web = web_of(request)
    window = request.query_params.get("window", "24h")
    window = window if window in WINDOWS else "24h"
    since = datetime.now(UTC) - WINDOWS[window]
    try:
        procs, dests = await web.sources.call(
            lambda s: (s.top("process", since, 15), s.top("destination", since, 15)))
        error = None
    except Exception as exc:
        procs, dests, error = [], [], store_error(exc)
    return web.render(request, "top.html", window=window, windows=list(WINDOWS), error=error,
                      procs=procs, dests=dests,
                      proc_chart=bars([(r.key, r.packets) for r in procs]),
                      dest_chart=bars([(r.key, r.packets) for r in dests]))


async def feeds(request: Request) -> Response:
    web = web_of(request)
    got = await asyncio.to_thread(web.sources.feeds)
    return web.render(request, "feeds.html", feeds=got, when=when)


async def dns(request: Request) -> Response:
    web = web_of(request)
    try:
        names = await web.sources.call(lambda s: s.dns_names(200))
        error = None
    except Exception as exc:
        names, error = [], store_error(exc)
    return web.render(request, "dns.html", names=names, error=error, when=when)


ROUTES = [
    Route("/", overview), Route("/incidents", incident_list),
    Route("/incidents/{incident_id}", incident_detail), Route("/top", top),
    Route("/feeds", feeds), Route("/dns", dns),
]
