"""The dashboard's HTML pages: overview, incidents (list and detail), top, feeds, DNS, learned,
and the charts they draw.

Place in the data flow: `outguard.web.app` routes here; each page reads through `Sources`
(store reads on a worker thread) and renders a template. Pages show what the agent and the
state directory hold; none changes anything. The learned page runs `journey` (collect_summary
→ suggest_table → render, what `outguard suggest` prints) over the store's learned flows and
shows it beside the applied policy's text: nothing is applied from here.

Charts are inline SVG drawn here (`sparkline`, `bars`): no script draws anything (the CSP
allows only the page's own file), and every label is escaped here since the templates place the
SVG as markup; colours are presentation attributes, not style attributes (CSP).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from outguard.events import SEVERITIES, LearnedFlow
from outguard.store.pages import SCAN
from outguard.web import incidents as inc
from outguard.web.sources import Sources, status_of, store_error, web_of

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
                      destination=inc.destination, first_page=before is None, scan=SCAN)


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




def sparkline(values: Sequence[int], *, width: int = 160, height: int = 28,
              label: str = "") -> Markup:
    """A polyline of `values` (oldest first), scaled to the largest; flat when all are 0."""
    title = escape(label)
    if len(values) < 2:
        return Markup(f'<svg class="spark" width="{width}" height="{height}" role="img"'
                      f' aria-label="{title}"><title>{title}: no samples yet</title></svg>')
    top = max(values) or 1
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}"
                      for i, v in enumerate(values))
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" role="img" aria-label="{title}">'
        f"<title>{title}: {sum(values)} packets, at most {max(values)} per sample</title>"
        f'<polyline fill="none" stroke="#c0392b" stroke-width="1.5" points="{points}"/></svg>')


def bars(rows: Sequence[tuple[str, int]], *, width: int = 640, bar: int = 18,
         label_width: int = 320) -> Markup:
    """One bar per (label, value), longest first as given; the label and value beside it."""
    if not rows:
        return Markup('<p class="empty">nothing blocked in this window</p>')
    top = max(v for _l, v in rows) or 1
    room = width - label_width - 70
    height = len(rows) * (bar + 6) + 4
    out = [f'<svg class="bars" width="{width}" height="{height}" role="img"'
           f' aria-label="bar chart">']
    for i, (text, value) in enumerate(rows):
        y = 2 + i * (bar + 6)
        length = max(1.0, value / top * room)
        shown = text if len(text) <= 48 else text[:22] + "…" + text[-24:]
        out.append(
            f'<g><title>{escape(text)}: {value}</title>'
            f'<text x="{label_width - 6}" y="{y + bar - 5}" text-anchor="end"'
            f' font-size="12">{escape(shown)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar}"'
            f' fill="#c0392b"/>'
            f'<text x="{label_width + length + 4:.1f}" y="{y + bar - 5}" font-size="12">'
            f"{value}</text></g>")
    out.append("</svg>")
    return Markup("".join(out))


ROUTES = [
    Route("/", overview), Route("/incidents", incident_list),
    Route("/incidents/{incident_id}", incident_detail), Route("/top", top),
    Route("/feeds", feeds), Route("/dns", dns), Route("/learned", learned),
]
