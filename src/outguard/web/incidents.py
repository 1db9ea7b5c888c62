"""The incidents: filters, pages, one incident's detail with the explain of its decision, the
live feed over Server-Sent Events, and the JSON API.

Place in the data flow: store (`SQLiteStore.incidents_page`, `incident`, `query`) → here →
the HTML pages (`outguard.web.pages`) and the API routes below (`ROUTES`), which need the same
token or session as the pages (`auth.Gate`); the page's script (`static/app.js`) reads
`/api/stream` and builds its rows from the JSON with textContent.

    GET /api/incidents?severity=high&rule=deny:tor&process=java&before=CURSOR&limit=50
        {"incidents": [...], "next": CURSOR or null}
    GET /api/incidents/ID     {"incident": {...}, "explain": ["..."]}
    GET /api/stream?severity=…&rule=…&process=…   text/event-stream, event `incident`
    GET /api/overview         `outguard status --json`'s dictionary

The live feed polls the store's `last_seen` index twice a second for rows seen since the last
poll and sends those that match the page's filters; the agent's batch writer writes every
0.2 s, so a blocked packet is on the page well within a second or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from outguard.events import SEVERITIES, Incident, severity_rank
from outguard.store import Query
from outguard.store.pages import Cursor, PageQuery
from outguard.store.sqlite import SQLiteStore
from outguard.web.sources import Sources, status_of, store_error, web_of

POLL = 0.5
BURST = 200  # incidents read per poll; beyond them the page is told to reload (`gap`)
KEEPALIVE = 15.0


@dataclass(frozen=True)
class Filters:
    severity: str | None = None  # at least this severity
    rule: str | None = None
    process: str | None = None

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Filters:
        """From a page's query string; unknown severities and empty fields are no filter."""
        severity = params.get("severity") or None
        return cls(severity if severity in SEVERITIES else None,
                   (params.get("rule") or "").strip() or None,
                   (params.get("process") or "").strip() or None)

    def query(self, before: Cursor | None, limit: int) -> PageQuery:
        return PageQuery(before=before, min_severity=self.severity, rule=self.rule,
                         process=self.process, limit=limit)

    def matches(self, inc: Incident) -> bool:
        if self.severity is not None and severity_rank(inc.severity) < severity_rank(
                self.severity):
            return False
        if self.rule is not None and inc.rule != self.rule and (
                ":" in self.rule or inc.rule.partition(":")[2] != self.rule):
            return False
        return self.process is None or self.process in inc.process

    def params(self) -> dict[str, str]:
        return {k: v for k, v in (("severity", self.severity), ("rule", self.rule),
                                  ("process", self.process)) if v}


def cursor_of(text: str | None) -> Cursor | None:
    if not text:
        return None
    try:
        return Cursor.parse(text)
    except ValueError:
        return None


def row(inc: Incident) -> dict[str, Any]:
    """An incident as the API and the live feed send it (the page's script builds its row
    from these fields with textContent: no markup crosses)."""
    out = inc.to_json()
    out["destination"] = destination(inc)
    return out


def destination(inc: Incident) -> str:
    where = inc.dst if inc.dport is None else (
        f"[{inc.dst}]:{inc.dport}" if ":" in inc.dst else f"{inc.dst}:{inc.dport}")
    return f"{where} ({', '.join(inc.names)})" if inc.names else where


async def page(src: Sources, filters: Filters, before: Cursor | None,
               limit: int = 50) -> tuple[list[Incident], Cursor | None]:
    return await src.call(lambda s: s.incidents_page(filters.query(before, limit)))


async def rules(src: Sources) -> list[str]:
    return await src.call(lambda s: s.rule_names())


async def detail(src: Sources, incident_id: str) -> tuple[Incident | None, list[str]]:
    """The incident and how the policy the agent serves decides its destination now."""
    inc = await src.call(lambda s: s.incident(incident_id))
    if inc is None:
        return None, []
    return inc, await asyncio.to_thread(explain, src, inc)


def explain(src: Sources, inc: Incident) -> list[str]:
    """`outguard explain`'s answer for the incident's destination, port and protocol, under
    the policy in service (its host names are not resolved here: a DNS lookup per page view
    would leave the machine)."""
    if inc.proto == "dns":
        return [f"a query for {inc.dst} was refused by outguard's resolver under rule {inc.rule}"]
    from outguard.ruleset.decide import Flow, decide  # noqa: PLC0415

    try:
        ruleset = src.ruleset()
        if ruleset is None:
            return ["no policy is in service: nothing to explain"]
        proto = inc.proto if inc.proto in ("tcp", "udp", "icmp") else "other"
        got = decide(ruleset, Flow(dst=inc.dst, port=inc.dport, proto=proto,  # type: ignore[arg-type]
                                   uid=inc.uid))
    except Exception as exc:  # an explain that fails is shown, the page still renders
        return [f"cannot explain: {exc}"]
    lines = [f"{got.action} ({got.verdict}) by {got.rule}: {got.reason}"]
    if got.rule != inc.rule:
        lines.append(f"when it was blocked, the kernel's rule was {inc.rule}: the policy in"
                     " service has changed since, or the rule matched by a name, a user or a"
                     " unit this view cannot see")
    return lines


def _since(q: Query, store: SQLiteStore) -> list[Incident]:
    return store.query(q)


async def stream(src: Sources, filters: Filters, stop: asyncio.Event,
                 poll: float = POLL) -> AsyncIterator[str]:
    """Server-Sent Events: an `incident` event for each incident opened or updated from now
    on that matches `filters`, and a comment every `KEEPALIVE` seconds."""
    seen: dict[str, tuple[datetime, int]] = {}
    since = datetime.now(UTC)
    yield "retry: 1000\n\n"
    quiet = 0.0
    while not stop.is_set():
        got = await src.call(functools.partial(_since, Query(since=since, limit=BURST)))
        if len(got) == BURST:  # more changed in one poll than are read: the page says so
            yield "event: gap\ndata: {}\n\n"
        fresh = [i for i in reversed(got) if seen.get(i.id) != (i.last_seen, i.count)]
        for inc in fresh:
            seen[inc.id] = (inc.last_seen, inc.count)
            since = max(since, inc.last_seen)
            if filters.matches(inc):
                quiet = 0.0
                yield f"event: incident\ndata: {json.dumps(row(inc))}\n\n"
        if len(seen) > 10_000:
            seen.clear()
        quiet += poll
        if quiet >= KEEPALIVE:
            quiet = 0.0
            yield ": keepalive\n\n"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll)


def _limit(text: str | None) -> int:
    try:
        return max(1, min(500, int(text or 50)))
    except ValueError:
        return 50


async def api_page(request: Request) -> Response:
    web = web_of(request)
    params = request.query_params
    try:
        rows, nxt = await page(web.sources, Filters.of(params),
                                   cursor_of(params.get("before")), _limit(params.get("limit")))
    except Exception as exc:
        return JSONResponse({"error": store_error(exc)}, status_code=503)
    return JSONResponse({"incidents": [row(i) for i in rows],
                         "next": nxt.text() if nxt is not None else None})


async def api_one(request: Request) -> Response:
    found, explained = await detail(web_of(request).sources,
                                        request.path_params["incident_id"])
    if found is None:
        return JSONResponse({"error": "no such incident"}, status_code=404)
    return JSONResponse({"incident": row(found), "explain": explained})


async def api_stream(request: Request) -> Response:
    web = web_of(request)
    events = stream(web.sources, Filters.of(request.query_params), web.stop)
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"x-accel-buffering": "no"})


async def api_overview(request: Request) -> Response:
    info = await asyncio.to_thread(status_of, web_of(request).sources, time.time())
    return JSONResponse(info)


ROUTES = [
    Route("/api/incidents", api_page), Route("/api/incidents/{incident_id}", api_one),
    Route("/api/stream", api_stream), Route("/api/overview", api_overview),
]
