"""Real peers on loopback for the alert sinks: HTTP receivers, syslog receivers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """An HTTP server: `mode` ok | fail (500 for the first `failures` posts) | hang | reject."""

    def __init__(self, mode: str = "ok", failures: int = 0, hang: float = 3.0) -> None:
        self.mode, self.failures, self.hang = mode, failures, hang
        self.bodies: list[bytes] = []
        self.posts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.posts += 1
                if outer.mode == "hang":
                    time.sleep(outer.hang)
                    return
                if outer.mode == "reject":
                    code = 400
                elif outer.mode == "fail" and outer.posts <= outer.failures:
                    code = 500
                else:
                    code = 204
                    outer.bodies.append(body)
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def receiver(mode: str = "ok", **kw: Any) -> Iterator[Receiver]:
    r = Receiver(mode, **kw)
    try:
        yield r
    finally:
        r.close()


class SyslogUdp:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.sock.getsockname()[1]}"

    def recv(self) -> bytes:
        return self.sock.recv(65536)


class SyslogTcp:
    """Accepts connections and splits octet-counted frames (RFC 6587)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.frames: list[bytes] = []
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while chunk := conn.recv(65536):
                buf += chunk
                while b" " in buf:
                    length, rest = buf.split(b" ", 1)
                    if len(rest) < int(length):
                        break
                    self.frames.append(rest[:int(length)])
                    buf = rest[int(length):]

    def wait(self, n: int, timeout: float = 3.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.frames) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.frames

    def close(self) -> None:
        self.listener.close()
