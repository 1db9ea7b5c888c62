"""The lab's internet services: one asyncio process serving every HTTP, HTTPS and LDAP listener.

Place in the data flow: `lifecycle` runs ``python -m outguard.lab.services --runtime-dir DIR``
inside og-lab-inet. The process binds every socket in `topology.SERVICE_LISTENERS` first (so a
bind error is reported to `lab up` directly), then daemonizes, writes its pid file and tells its
starter it is serving. Requests are answered by the pure `httpmini` and `ldap` modules; every
HTTP request goes to `access.log`, every connection to attacker.example.test to `attacker.log`
(JSON lines) so that later checks can see whether a callback really got out.

Readiness probes (`probe`) send `httpmini.PROBE_LINE` and are answered but not logged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import select
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from outguard.lab import httpmini, ldap, ntp
from outguard.lab import topology as t

log = logging.getLogger("outguard.lab.services")

FIRST_DATA_WAIT = 1.0
"""How long a new connection may stay silent before it is logged anyway."""
IDLE_TIMEOUT = 10.0
READY_WAIT = 10.0


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class EventLog:
    """Appends one JSON object per line; opened per write so tests may truncate or rotate it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, event: dict[str, object]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(event, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Bound:
    listener: t.Listener
    sock: socket.socket


def bind_all(listeners: tuple[t.Listener, ...]) -> list[Bound]:
    """Listening sockets for every listener on every address of its host."""
    bound: list[Bound] = []
    try:
        for lst in listeners:
            for addr in t.host(lst.host).addresses:
                family = socket.AF_INET6 if ":" in addr else socket.AF_INET
                udp = lst.kind == "ntp"
                sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
                bound.append(Bound(lst, sock))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind((addr, lst.port))
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot bind {lst.label} on {addr}: {exc}") from exc
                if not udp:
                    sock.listen(128)
                sock.setblocking(False)
    except OSError:
        for b in bound:
            b.sock.close()
        raise
    return bound


def read_mirror(directory: Path) -> dict[str, bytes]:
    """The mirror's flat directory, read per request: it is a few small files."""
    try:
        return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    except FileNotFoundError:
        return {}


def _endpoint(info: object) -> tuple[str, int]:
    if isinstance(info, tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return "?", 0


class Services:
    """Connection handlers for the lab hosts; one instance per process."""

    def __init__(self, paths: t.LabPaths) -> None:
        self.paths = paths
        self.access = EventLog(paths.access_log)
        self.attacker = EventLog(paths.attacker_log)

    def _base(self, lst: t.Listener, writer: asyncio.StreamWriter, when: str) -> dict[str, object]:
        local, lport = _endpoint(writer.get_extra_info("sockname"))
        peer, pport = _endpoint(writer.get_extra_info("peername"))
        return {
            "time": when,
            "host": lst.host,
            "service": lst.kind,
            "local": f"{t.url_host(local)}:{lport}",
            "peer": peer,
            "peer_port": pport,
        }

    async def _open(self, lst: t.Listener, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> tuple[bytes, dict[str, object]] | None:
        """The first bytes and the log fields of a connection; None for a readiness probe
        (answered here, never logged)."""
        accepted = now_iso()
        buf = await self._first_bytes(reader)
        if buf.startswith(httpmini.PROBE_LINE):
            writer.write(httpmini.PROBE_REPLY)
            return None
        return buf, self._base(lst, writer, accepted)

    async def _first_bytes(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return await asyncio.wait_for(reader.read(4096), FIRST_DATA_WAIT)
        except TimeoutError:
            return b""

    async def http(
        self, lst: t.Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        opened = await self._open(lst, reader, writer)
        if opened is None:
            return
        buf, base = opened
        if lst.host == "attacker":
            self.attacker.write({**base, "event": "connect"})
        try:
            while b"\r\n\r\n" not in buf and len(buf) < httpmini.MAX_HEAD:
                chunk = await asyncio.wait_for(reader.read(4096), IDLE_TIMEOUT)
                if not chunk:
                    return
                buf += chunk
            request = httpmini.parse_request_head(buf.split(b"\r\n\r\n", 1)[0])
        except (TimeoutError, httpmini.HttpFormatError) as exc:
            writer.write(httpmini.build_response(400, httpmini.json_body({"error": str(exc)})))
            return
        status, body, ctype = httpmini.site_response(
            lst.host, lst.port, request, read_mirror(self.paths.mirror_dir)
        )
        event = {**base, "time": now_iso(), "event": "http-request", "method": request.method,
                 "path": request.target, "status": status, "host_header": request.host}
        self.access.write(event)
        if lst.host == "attacker":
            self.attacker.write(event)
        head_only = request.method == "HEAD"
        writer.write(httpmini.build_response(status, body, ctype, head_only=head_only))

    async def ldap(
        self, lst: t.Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        opened = await self._open(lst, reader, writer)
        if opened is None:
            return
        buf, base = opened
        self.attacker.write({**base, "event": "connect"})
        while True:
            try:
                split = ldap.split_message(buf)
            except ldap.LdapFormatError as exc:
                self.attacker.write({**base, "time": now_iso(), "event": "ldap-garbage",
                                     "error": str(exc)})
                return
            if split is None:
                try:
                    chunk = await asyncio.wait_for(reader.read(4096), IDLE_TIMEOUT)
                except TimeoutError:
                    return
                if not chunk:
                    return
                buf += chunk
                continue
            message, buf = split
            try:
                request = ldap.parse_request(message)
            except ldap.LdapFormatError as exc:
                self.attacker.write({**base, "time": now_iso(), "event": "ldap-garbage",
                                     "error": str(exc)})
                return
            self.attacker.write({**base, "time": now_iso(), "event": f"ldap-{request.op_name}",
                                 "dn": request.dn, "message_id": request.message_id})
            answer = ldap.response_for(request)
            if answer is not None:
                writer.write(answer)
                await writer.drain()
            if request.op == ldap.UNBIND_REQUEST:
                return

    def handler(
        self, lst: t.Listener
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        serve = self.ldap if lst.kind == "ldap" else self.http

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await serve(lst, reader, writer)
                await writer.drain()
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                log.info("%s: connection ended early: %s", lst.label, exc)
            finally:
                writer.close()

        return handle


class _NtpServer(asyncio.DatagramProtocol):
    """ntp.example.test: answers each SNTP request (not logged: the lab's probe asks too)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = ntp.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def tls_context(paths: t.LabPaths) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(paths.tls_cert, paths.tls_key)
    return ctx


async def serve(paths: t.LabPaths, bound: list[Bound], ready_fd: int | None) -> None:
    services = Services(paths)
    tls = tls_context(paths) if any(b.listener.kind == "https" for b in bound) else None
    servers = [
        await asyncio.start_server(
            services.handler(b.listener), sock=b.sock,
            ssl=tls if b.listener.kind == "https" else None,
        )
        for b in bound if b.listener.kind != "ntp"
    ]
    loop = asyncio.get_running_loop()
    ntp_transports = [
        (await loop.create_datagram_endpoint(_NtpServer, sock=b.sock))[0]
        for b in bound if b.listener.kind == "ntp"
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving %d sockets", len(servers))
    if ready_fd is not None:
        os.write(ready_fd, b"ok")
        os.close(ready_fd)
    await stop.wait()
    for s in servers:
        s.close()
    for tr in ntp_transports:
        tr.close()
    log.info("stopped")


def daemonize(pid_file: Path, log_file: Path) -> int:
    """Double-fork away from the starter; returns the pipe end to report readiness on.

    The starting process only exits once the daemon wrote "ok" (or died), so `lab up` learns
    about start-up failures from the exit status instead of a timeout.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(w)
        ready, _, _ = select.select([r], [], [], READY_WAIT)
        answer = os.read(r, 16) if ready else b""
        os.waitpid(pid, 0)
        if answer != b"ok":
            sys.stderr.write(f"lab services did not start; see {log_file}\n")
        os._exit(0 if answer == b"ok" else 1)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
    pid_file.write_text(f"{os.getpid()}\n")
    return w


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="outguard lab: internet services")
    parser.add_argument("--runtime-dir", type=Path, default=t.RUNTIME_DIR)
    parser.add_argument("--foreground", action="store_true", help="do not daemonize")
    args = parser.parse_args(argv)
    paths = t.LabPaths(args.runtime_dir)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s services[%(process)d] %(message)s",
    )
    try:
        bound = bind_all(t.SERVICE_LISTENERS)
    except OSError as exc:
        sys.stderr.write(f"lab services: {exc.strerror or exc}\n")
        return 1
    ready_fd = None if args.foreground else daemonize(paths.services_pid, paths.services_log)
    try:
        asyncio.run(serve(paths, bound, ready_fd))
    finally:
        if not args.foreground:
            paths.services_pid.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
