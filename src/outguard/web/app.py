"""The dashboard as an ASGI application (Starlette), and its listener (uvicorn).

Place in the data flow: `service.webserve` builds the app (`build`) and runs `WebServer.serve`
as one of the agent's tasks, in the agent's own event loop. Requests pass `auth.Gate` (token or
session, security headers), then a route here, in `pages` (the HTML pages) or in `incidents`
(JSON and the live feed). Read-only but for the session: the only state-changing requests are
the login and the logout, and the logout needs the CSRF value.

The socket is bound when the `WebServer` is made (before the agent reports that it started),
so a taken port fails the start with a message, not a task later; where it may listen (loopback,
or TLS) is `policy.webconf.WebConfig`'s rule. uvicorn does not install its signal handlers
(`_Embedded`): the agent owns SIGTERM, SIGINT and SIGHUP, and stops this server through `stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from outguard.errors import OutguardError
from outguard.policy.webconf import WebConfig, split_listen
from outguard.web import incidents, pages
from outguard.web.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, Gate, Secrets
from outguard.web.sources import Sampler, Sources, Web, web_of

log = logging.getLogger("outguard.web")

STATIC = Path(__file__).parent / "static"

def _hint(web: Web) -> str:
    return (f"The dashboard's token is in {web.token_path} (readable by root only):"
            f" sudo cat {web.token_path}")


async def login_form(request: Request) -> Response:
    web = web_of(request)
    return web.render(request, "login.html", error=None, hint=_hint(web))


async def login(request: Request) -> Response:
    """The token, once, from the form: a session cookie for it (derived from the token)."""
    web = web_of(request)
    form = await request.form()
    token = str(form.get("token", "")).strip()
    if not web.keys.bearer_ok(f"Bearer {token}"):
        return web.render(request, "login.html", status=401, hint=_hint(web),
                          error=f"that is not the token in {web.token_path}")
    return session_started(web.keys, web.secure)


def session_started(keys: Secrets, secure: bool) -> Response:
    """After a good token from the login form: to the first page, with the session cookie
    (the agent's dashboard and the fleet view share it)."""
    response = RedirectResponse("/", status_code=303)
    response.headers["set-cookie"] = keys.set_cookie(secure)
    return response


async def session_ended(request: Request, keys: Secrets) -> Response:
    """The logout form: CSRF-checked, then the cookie cleared and back to the login form."""
    form = await request.form()
    if not keys.csrf_ok(str(form.get(CSRF_FIELD, "")) or request.headers.get(CSRF_HEADER)):
        return Response("CSRF value missing or wrong\n", status_code=403,
                        media_type="text/plain")
    response = RedirectResponse("/login", status_code=303)
    response.headers["set-cookie"] = f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
    return response


async def logout(request: Request) -> Response:
    return await session_ended(request, web_of(request).keys)


async def metrics(request: Request) -> Response:
    read = web_of(request).sources.metrics
    if read is None:
        return Response("no metrics here\n", status_code=404, media_type="text/plain")
    body = await asyncio.to_thread(read)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def build(sources: Sources, keys: Secrets, *, sampler: Sampler | None = None,
          secure: bool = False, stop: asyncio.Event | None = None,
          token_path: str = "STATE_DIR/web.token") -> Starlette:
    """The application. Its /metrics needs the token like every page: Prometheus without one
    scrapes the agent's own listener (`--metrics-listen`), kept apart from the dashboard.
    `stop` (the agent's) ends the live feeds at once, before the server waits for them."""
    web = Web(sources, keys, sampler or Sampler(lambda: {}), secure, stop or asyncio.Event(),
              token_path)
    routes: list[BaseRoute] = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        *pages.ROUTES, *incidents.ROUTES,
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Gate, keys=keys,
                                                          token_hint=token_path)])
    app.state.web = web
    return app


class _Embedded(uvicorn.Server):
    """uvicorn without its signal handlers: the agent owns SIGTERM, SIGINT and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class WebServer:
    def __init__(self, app: Any, opts: WebConfig) -> None:
        self.opts = opts
        self.host, port = split_listen(opts.listen)  # WebConfig checked the rest (TLS)
        if opts.tls:  # read the pair now: a wrong path fails the start, not the first request
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(str(opts.tls_cert), str(opts.tls_key))
            except (OSError, ssl.SSLError) as exc:
                raise OutguardError(f"web: cannot load the TLS certificate and key: {exc}") from exc
        self.sock = self._bind(self.host, port)
        self.port: int = self.sock.getsockname()[1]  # the one bound (0 asks for a free one)
        config = uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False,
            timeout_graceful_shutdown=2, ssl_certfile=str(opts.tls_cert) if opts.tls else None,
            ssl_keyfile=str(opts.tls_key) if opts.tls else None)
        self._server = _Embedded(config)

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OutguardError(f"web: cannot listen on {host}:{port}: {exc.strerror or exc}"
                                ) from exc
        return sock

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.opts.tls else 'http'}://{host}:{self.port}/"

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set (then close the listener and the open streams), or until
        uvicorn ends by itself, which leaves the agent running (`stop` is the agent's)."""
        try:
            async with asyncio.TaskGroup() as group:
                serving = group.create_task(self._server.serve(sockets=[self.sock]))
                stopping = group.create_task(stop.wait())
                await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                self._server.should_exit = True
                stopping.cancel()
        finally:
            self.sock.close()
