"""The dashboard as an ASGI application (Starlette): its routes, templates and static files.

Place in the data flow: `service.webserve` serves `build(...)` inside the agent's event loop;
requests pass `auth.Gate` (token or session, security headers), then a route here, in `pages`
(the HTML pages) or `api` (JSON and the live feed). Read-only but for the session: the only
state-changing requests are the login and the logout, and the logout needs the CSRF value.
Templates are Jinja2 with autoescape on: a cmdline, a DNS name or a path is text, always.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from outguard.web import api, learned, pages
from outguard.web.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Gate, Secrets
from outguard.web.context import Web, web_of
from outguard.web.sources import Sampler, Sources

STATIC = Path(__file__).parent / "static"

async def login_form(request: Request) -> Response:
    return web_of(request).render(request, "login.html", error=None)


async def login(request: Request) -> Response:
    """The token, once, from the form: a session cookie for it (derived from the token)."""
    web = web_of(request)
    form = await request.form()
    token = str(form.get("token", "")).strip()
    if not web.keys.bearer_ok(f"Bearer {token}"):
        return web.render(request, "login.html", status=401,
                          error="that is not the token in STATE_DIR/web.token")
    response = RedirectResponse("/", status_code=303)
    response.headers["set-cookie"] = web.keys.set_cookie(web.secure)
    return response


async def logout(request: Request) -> Response:
    web = web_of(request)
    form = await request.form()
    if not web.keys.csrf_ok(str(form.get(CSRF_FIELD, "")) or request.headers.get(CSRF_HEADER)):
        return Response("CSRF value missing or wrong\n", status_code=403,
                        media_type="text/plain")
    response = RedirectResponse("/login", status_code=303)
    response.headers["set-cookie"] = f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
    return response


async def metrics(request: Request) -> Response:
    read = web_of(request).sources.metrics
    if read is None:
        return Response("no metrics here\n", status_code=404, media_type="text/plain")
    body = await asyncio.to_thread(read)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def build(sources: Sources, keys: Secrets, *, sampler: Sampler | None = None,
          secure: bool = False) -> Starlette:
    """The application. Its /metrics needs the token like every page: Prometheus without one
    scrapes the agent's own listener (`--metrics-listen`), kept apart from the dashboard."""
    web = Web(sources, keys, sampler or Sampler(lambda: {}), secure)
    routes: list[BaseRoute] = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        *pages.ROUTES, *learned.ROUTES, *api.ROUTES,
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Gate, keys=keys)])
    app.state.web = web
    return app
