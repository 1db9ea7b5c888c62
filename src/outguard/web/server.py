"""The dashboard's listener: uvicorn serving `app.build` inside the agent's own event loop.

Place in the data flow: `service.webserve` makes a `WebServer` and runs `serve(stop)` as one of
the agent's tasks. The socket is bound in `bind` (before the agent reports it started), so a
taken port or a refused address fails the start with a message, not a task later. Loopback by
default; any other address only with TLS (`tls_cert`/`tls_key`): the token crosses the wire in
every request. uvicorn does not touch the agent's signal handlers (`_Embedded`): SIGTERM stops
the agent, which stops this server through `stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Generator
from typing import Any

import uvicorn

from outguard.errors import OutguardError
from outguard.web.listen import WebOptions, check

log = logging.getLogger("outguard.web")


class _Embedded(uvicorn.Server):
    """uvicorn without its signal handlers: the agent owns SIGTERM, SIGINT and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class WebServer:
    def __init__(self, app: Any, opts: WebOptions) -> None:
        self.opts = opts
        self.host, port = check(opts)
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
        """Serve until `stop` is set; then close the listener and the open streams."""
        async def stopper() -> None:
            await stop.wait()
            self._server.should_exit = True

        async def serving() -> None:
            try:
                await self._server.serve(sockets=[self.sock])
            finally:
                stop.set()  # a server that ends by itself ends its stopper too

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(stopper())
                group.create_task(serving())
        finally:
            self.sock.close()
