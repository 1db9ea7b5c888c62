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
import ipaddress
import logging
import socket
import ssl
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from outguard.errors import OutguardError

DEFAULT_LISTEN = "127.0.0.1:8765"
log = logging.getLogger("outguard.web")


@dataclass(frozen=True)
class WebOptions:
    listen: str = DEFAULT_LISTEN  # HOST:PORT, [v6]:PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:8765`, `[::1]:8765`, `localhost:8765` → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise OutguardError(f"web: {text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(opts: WebOptions) -> tuple[str, int]:
    """The address to bind; refuses a non-loopback one without TLS, and half a TLS pair."""
    host, port = parse_listen(opts.listen)
    if (opts.tls_cert is None) != (opts.tls_key is None):
        raise OutguardError("web: give both web.tls_cert and web.tls_key, or neither")
    if not is_loopback(host) and not opts.tls:
        raise OutguardError(f"web: refusing to serve the dashboard on {host}, which is not a"
                            " loopback address, without TLS: its token would cross the network"
                            " in clear (set web.tls_cert and web.tls_key, or listen on"
                            " 127.0.0.1 and use an SSH tunnel)")
    return host, port


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
        config = uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False,
            timeout_graceful_shutdown=2, ssl_certfile=str(opts.tls_cert) if opts.tls else None,
            ssl_keyfile=str(opts.tls_key) if opts.tls else None)
        self._server = _Embedded(config)

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
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
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

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
