"""The fleet view: the operator's dashboard of the fleet database (`outguard fleet web`).

Place in the data flow: PostgreSQL → `fleet.ops` (the queries `fleet hosts`, `fleet events` and
`fleet rollout` print) → here → HTML. It is the dashboard's conventions on another source: the
same gate (`web.auth.Gate`: a token from a token file, or the session cookie the login form
sets; CSRF on the logout; CSP without inline script), the same templates directory and base page,
Jinja2 with autoescape on, so a host name or a cmdline a host sent is text, whatever it holds.
Read-only: nothing here changes the fleet (pushes, lockdowns and aborts stay `outguard fleet`
commands, with the database's own roles and audit). It lives in fleet/ because it reads fleet/
and reuses web/ (the layers: fleet sits above web). Each request opens its own connection on a
worker thread (psycopg blocks; an operator's page views are few).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import psycopg
from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from outguard.errors import OutguardError
from outguard.events import SEVERITIES
from outguard.fleet import ops
from outguard.web.app import STATIC, session_ended, session_started
from outguard.web.auth import CSRF_FIELD, Gate, Secrets
from outguard.web.pages import WINDOWS, when

T = TypeVar("T")
NAV = (("/", "Hosts"), ("/incidents", "Incidents"), ("/rollouts", "Rollouts"))
PAGE_SIZE = 50


@dataclass
class FleetWeb:
    dsn: str
    keys: Secrets
    token_hint: str  # where the token is, for the login form
    secure: bool = False
    page_size: int = PAGE_SIZE
    env: Environment = field(default_factory=lambda: Environment(
        loader=PackageLoader("outguard.web", "templates"), autoescape=True,
        trim_blocks=True, lstrip_blocks=True))

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(
            nav=NAV, path=request.url.path, csrf=self.keys.csrf, csrf_field=CSRF_FIELD,
            hint=self.token_hint, when=when, **ctx)
        return HTMLResponse(html, status_code=status)

    async def read(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """`fn(connection)` on a worker thread, on a connection of its own."""
        def run() -> T:
            with ops.connect(self.dsn) as conn:
                return fn(conn)
        return await asyncio.to_thread(run)


def _fw(request: Request) -> FleetWeb:
    got: FleetWeb = request.app.state.fleet
    return got


def _problem(exc: Exception) -> str:
    return str(exc) if isinstance(exc, OutguardError) else f"database: {exc}".strip()


async def hosts(request: Request) -> Response:
    fw = _fw(request)
    try:
        rows, error = await fw.read(ops.hosts), None
    except (OutguardError, psycopg.Error) as exc:
        rows, error = [], _problem(exc)
    return fw.render(request, "fleet_hosts.html", hosts=rows, error=error,
                     status=200 if error is None else 503)


@dataclass(frozen=True)
class IncidentFilters:
    host: str | None
    severity: str | None
    rule: str | None
    window: str

    @classmethod
    def of(cls, params: Any) -> IncidentFilters:
        severity = params.get("severity") or None
        window = params.get("window") or "24h"
        return cls((params.get("host") or "").strip() or None,
                   severity if severity in SEVERITIES else None,
                   (params.get("rule") or "").strip() or None,
                   window if window in WINDOWS else "24h")

    def params(self) -> dict[str, str]:
        return {k: v for k, v in (("host", self.host), ("severity", self.severity),
                                  ("rule", self.rule), ("window", self.window)) if v}


async def incidents(request: Request) -> Response:
    """Newest first, `page_size` a page, the next page by keyset (`before`)."""
    fw = _fw(request)
    f = IncidentFilters.of(request.query_params)
    since = datetime.now(UTC) - WINDOWS[f.window]
    try:
        raw = request.query_params.get("before")
        before = ops.PageCursor.parse(raw) if raw else None
        rows, cursor = await fw.read(lambda conn: ops.events_page(
            conn, since, before=before, host=f.host, rule=f.rule, severity=f.severity,
            limit=fw.page_size))
        error = None
    except (OutguardError, psycopg.Error) as exc:
        rows, cursor, error = [], None, _problem(exc)
    nxt = urlencode({**f.params(), "before": cursor.text()}) if cursor else None
    return fw.render(request, "fleet_incidents.html", rows=rows, next=nxt, f=f, error=error,
                     severities=SEVERITIES, windows=list(WINDOWS),
                     status=200 if error is None else 400)


async def rollouts(request: Request) -> Response:
    fw = _fw(request)
    try:
        rows, error = await fw.read(ops.rollouts), None
    except (OutguardError, psycopg.Error) as exc:
        rows, error = [], _problem(exc)
    return fw.render(request, "fleet_rollouts.html", rollouts=rows, error=error,
                     status=200 if error is None else 503)


async def login_form(request: Request) -> Response:
    return _fw(request).render(request, "login.html", error=None)


async def login(request: Request) -> Response:
    fw = _fw(request)
    form = await request.form()
    if not fw.keys.bearer_ok(f"Bearer {str(form.get('token', '')).strip()}"):
        return fw.render(request, "login.html", status=401,
                         error=f"that is not the token ({fw.token_hint})")
    return session_started(fw.keys, fw.secure)


async def logout(request: Request) -> Response:
    return await session_ended(request, _fw(request).keys)


def build(dsn: str, keys: Secrets, token_hint: str, *, secure: bool = False,
          page_size: int = PAGE_SIZE) -> Starlette:
    routes: list[BaseRoute] = [
        Route("/", hosts, methods=["GET"]),
        Route("/incidents", incidents, methods=["GET"]),
        Route("/rollouts", rollouts, methods=["GET"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Gate, keys=keys, token_hint=token_hint)])
    app.state.fleet = FleetWeb(dsn, keys, token_hint, secure, page_size)
    return app
