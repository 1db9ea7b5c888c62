"""A decided tunnel's bytes moved by the kernel: splice(2) through a pipe, never into Python.

Place in the data flow: `tunnel.relay` hands both ends of an open tunnel here (on Linux).
Each end's socket is taken out of asyncio's transport (a duplicate descriptor, then the
transport is closed: the socket lives on in the duplicate, nothing is sent), and each direction
moves data socket → pipe → socket with `os.splice` on the event loop's readiness callbacks:
up to `PIPE_SIZE` bytes per call, without a copy into user space. A full receiver stops the
sender's reading until the pipe is drained (flow control), an end of file is passed on as a
half-close, and the tunnel ends when both directions ended, on an error (reset), or when
neither direction moved for the idle timeout.

An idle tunnel holds its two sockets and a timer, and no pipe: a direction takes a pipe when
data arrives and gives it back once it is drained, so 10,000 idle tunnels cost 20,000
descriptors, not 60,000 (`bench/proxy.py` measures the memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import time

PIPE_SIZE = 1 << 20  # per busy direction: fewer calls per megabyte (fs.pipe-max-size allows it)
F_SETPIPE_SZ = 1031  # linux/fcntl.h
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


class _Direction:
    """src → pipe → dst, with what Python held before the handover sent first."""

    def __init__(self, tunnel: SpliceTunnel, src: int, dst: int, first: bytes,
                 eof: bool) -> None:
        self.tunnel, self.src, self.dst = tunnel, src, dst
        self.first = first  # bytes read before the handover: they go out first
        self.pipe: tuple[int, int] | None = None
        self.in_pipe = 0
        self.eof = eof  # src sent its end of file
        self.done = False  # ... and everything before it reached dst
        self.count = len(first)

    def start(self) -> None:
        if self.first or self.eof:
            self.flush()
        else:
            self.tunnel.loop.add_reader(self.src, self.readable)

    def readable(self) -> None:
        if self.pipe is None:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # a smaller pipe works, only slower
                fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
            self.pipe = (r, w)
        try:
            n = os.splice(self.src, self.pipe[1], PIPE_SIZE, flags=_FLAGS)
        except OSError as exc:
            if exc.errno in _AGAIN:
                return
            self.tunnel.close()
            return
        if n == 0:
            self.eof = True
        self.in_pipe += n
        self.count += n
        self.tunnel.last = time.monotonic()
        self.flush()

    def flush(self) -> None:
        """Send what is held; wait for the receiver when it is full."""
        loop = self.tunnel.loop
        try:
            while self.first:
                sent = os.write(self.dst, self.first)
                self.first = self.first[sent:]
            while self.in_pipe:
                assert self.pipe is not None
                self.in_pipe -= os.splice(self.pipe[0], self.dst, self.in_pipe, flags=_FLAGS)
        except OSError as exc:
            if exc.errno not in _AGAIN:
                self.tunnel.close()
                return
            loop.remove_reader(self.src)  # the receiver is full: stop taking more
            loop.add_writer(self.dst, self.flush)
            return
        loop.remove_writer(self.dst)
        self._release()
        if self.eof:
            self._finish()
        else:
            loop.add_reader(self.src, self.readable)

    def _finish(self) -> None:
        self.tunnel.loop.remove_reader(self.src)
        self.done = True
        with contextlib.suppress(OSError):  # the half-close, passed on
            self.tunnel.socks[self.dst].shutdown(socket.SHUT_WR)
        self.tunnel.ended()

    def _release(self) -> None:
        if self.pipe is not None:
            os.close(self.pipe[0])
            os.close(self.pipe[1])
            self.pipe = None

    def close(self) -> None:
        loop = self.tunnel.loop
        loop.remove_reader(self.src)
        loop.remove_writer(self.dst)
        self._release()


class SpliceTunnel:
    def __init__(self, idle: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.idle = idle
        self.last = time.monotonic()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.timer = self.loop.call_later(idle, self._check)
        self.socks: dict[int, socket.socket] = {}
        self.ways: list[_Direction] = []

    def _check(self) -> None:
        quiet = time.monotonic() - self.last
        if quiet >= self.idle:
            self.close()
        else:
            self.timer = self.loop.call_later(self.idle - quiet, self._check)

    def ended(self) -> None:
        if all(way.done for way in self.ways):
            self.close()

    def close(self) -> None:
        if self.done.done():
            return
        self.timer.cancel()
        for way in self.ways:
            way.close()
        for sock in self.socks.values():
            sock.close()
        self.done.set_result(None)


def detach(writer: asyncio.StreamWriter) -> socket.socket:
    """The stream's socket as a socket of our own (a duplicate descriptor); the transport is
    closed: its socket stays open through ours, and nothing is sent on it."""
    sock = writer.get_extra_info("socket")
    own = socket.socket(fileno=os.dup(sock.fileno()))
    own.setblocking(False)
    writer.transport.close()
    return own


async def relay(down: tuple[socket.socket, bytes, bool], up: tuple[socket.socket, bytes, bool],
                idle: float) -> tuple[int, int]:
    """(socket, bytes to send it first, its end of file seen) for the client and the
    upstream: copy both ways until both ended, an error, or `idle`; (bytes up, bytes down)."""
    tunnel = SpliceTunnel(idle)
    tunnel.socks = {down[0].fileno(): down[0], up[0].fileno(): up[0]}
    # what one end's reader had buffered came from that end: it goes to the other first
    upward = _Direction(tunnel, down[0].fileno(), up[0].fileno(), down[1], down[2])
    downward = _Direction(tunnel, up[0].fileno(), down[0].fileno(), up[1], up[2])
    tunnel.ways = [upward, downward]
    upward.start()
    downward.start()
    await tunnel.done
    return upward.count, downward.count
