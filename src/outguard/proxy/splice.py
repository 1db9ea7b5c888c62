"""A decided tunnel's bytes moved by the kernel: splice(2) through a pipe, never into Python.

Place in the data flow: `tunnel.relay` hands both ends of an open tunnel here (on Linux).
Each end's socket is taken out of asyncio's transport (the transport's socket object gives
up its descriptor, then the transport is closed: nothing is sent), and each direction
moves data socket → pipe → socket with `os.splice` on the event loop's readiness callbacks:
up to `PIPE_SIZE` bytes per call, without a copy into user space. A full receiver stops the
sender's reading until the pipe is drained (flow control), an end of file is passed on as a
half-close, and the tunnel ends when both directions ended, on an error (reset), or when
neither direction moved for the idle timeout.

An idle tunnel holds its two sockets and a timer, and no pipe: a direction takes a pipe (from
a small pool) when data arrives and gives it back once it is drained, so 10,000 idle tunnels
cost 20,000 descriptors, not 60,000 (`bench/proxy.py` measures the memory).
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


# Drained pipes, kept for the next direction that has data: a burst costs no pipe2/fcntl, and
# the descriptors held in pipes stay bounded by how many directions move data at once.
_POOL: list[tuple[int, int]] = []
POOL_MAX = 16


def _take_pipe() -> tuple[int, int]:
    if _POOL:
        return _POOL.pop()
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # a smaller pipe works, only slower
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


def _give_pipe(pipe: tuple[int, int], empty: bool) -> None:
    if empty and len(_POOL) < POOL_MAX:
        _POOL.append(pipe)
    else:  # bytes still in it (a tunnel that ended early) must not reach another tunnel
        os.close(pipe[0])
        os.close(pipe[1])


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
            try:
                self.pipe = _take_pipe()
            except OSError:  # out of descriptors for a pipe: this burst is copied instead
                self._copy()
                return
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

    def _copy(self) -> None:
        """One read through Python, sent as `first` (no pipe to be had)."""
        try:
            data = os.read(self.src, 1 << 16)
        except OSError as exc:
            if exc.errno not in _AGAIN:
                self.tunnel.close()
            return
        self.eof = not data
        self.first, self.count = data, self.count + len(data)
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
            _give_pipe(self.pipe, empty=self.in_pipe == 0)
            self.pipe = None

    def close(self) -> None:
        loop = self.tunnel.loop
        loop.remove_reader(self.src)
        loop.remove_writer(self.dst)
        self._release()


class IdleTunnel:
    """One timer per open tunnel, re-armed for the time left: the tunnel closes after `idle`
    seconds without a byte either way (`last` is set by whoever moves data). Subclasses
    close their own ends and settle `done`."""

    def __init__(self, idle: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.idle = idle
        self.last = time.monotonic()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.timer = self.loop.call_later(idle, self._check)

    def _check(self) -> None:
        quiet = time.monotonic() - self.last
        if quiet >= self.idle:
            self.close()
        else:
            self.timer = self.loop.call_later(self.idle - quiet, self._check)

    def close(self) -> None:
        raise NotImplementedError


class SpliceTunnel(IdleTunnel):
    def __init__(self, idle: float) -> None:
        super().__init__(idle)
        self.socks: dict[int, socket.socket] = {}
        self.ways: list[_Direction] = []

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
    """The stream's socket as a socket of our own; the transport is closed without closing
    it, and nothing is sent on it. The transport's socket object gives up its descriptor
    (`socket.detach`: no duplicate, which would need a second descriptor per end at the
    moment the proxy is fullest); a transport without one (not asyncio's selector
    transport) is left a duplicate to close."""
    inner = getattr(writer.transport, "_sock", None)
    if isinstance(inner, socket.socket):
        own = socket.socket(inner.family, inner.type, inner.proto, fileno=inner.detach())
    else:
        own = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
    own.setblocking(False)
    writer.transport.close()
    return own


def start(down: tuple[socket.socket, bytes, bool], up: tuple[socket.socket, bytes, bool],
          idle: float) -> SpliceTunnel:
    """(socket, bytes to send it first, its end of file seen) for the client and the
    upstream: copy both ways until both ended, an error, or `idle` (`SpliceTunnel.done`)."""
    tunnel = SpliceTunnel(idle)
    tunnel.socks = {down[0].fileno(): down[0], up[0].fileno(): up[0]}
    # what one end's reader had buffered came from that end: it goes to the other first
    upward = _Direction(tunnel, down[0].fileno(), up[0].fileno(), down[1], down[2])
    downward = _Direction(tunnel, up[0].fileno(), down[0].fileno(), up[1], up[2])
    tunnel.ways = [upward, downward]
    upward.start()
    downward.start()
    return tunnel


async def relay(down: tuple[socket.socket, bytes, bool], up: tuple[socket.socket, bytes, bool],
                idle: float) -> tuple[int, int]:
    """`start`, awaited: (bytes up, bytes down)."""
    tunnel = start(down, up, idle)
    await tunnel.done
    return tunnel.ways[0].count, tunnel.ways[1].count
