"""The NFLOG netlink source: blocked packets from the kernel, in batches, with every loss counted.

Place in the data flow: outguard's ruleset logs each blocked packet with ``log prefix "og:…"
group N``; this module binds group N (in the calling namespace, or in ``netns``), receives the
kernel's batches and hands their bytes to `kernel.nflog_decode`; the `BlockedPacket` batches go
on to `monitor.attribute` and the rest of the monitor.

    async with NflogSource(group=0, netns="ogt-1234") as source:
        async for batch in source:                   # list[BlockedPacket], never empty
            for pkt in batch:
                attribution = attributor.attribute(pkt)
        ...
    source.stats.received, source.stats.lost, source.stats.enobufs, source.stats.seq_gaps

Batching: the kernel holds packets until `qthreshold` of them are queued or `timeout` seconds
passed (NFULA_CFG_QTHRESH / NFULA_CFG_TIMEOUT), then sends them as one datagram of at most
`nlbufsiz` bytes; one `recv` then brings many packets. Only `copy_range` bytes of each packet
are copied: the IP and transport headers are all the monitor reads.

Losses are never silent. The group is configured with NFULNL_CFG_F_SEQ, so every logged packet
carries the instance's sequence number (0, 1, 2, … from the bind); a jump means the kernel
dropped that many packets (its socket buffer was full: that batch is lost whole). The kernel
also flags the overflow on the socket, and `recv` fails once with ENOBUFS: counted too. Memory
stays bounded: nothing is queued in user space beyond the batch being handed out; under a
flood the kernel drops at the socket buffer (`rcvbuf`) and the sequence numbers count it.
A loss at the very end of a burst shows when the next packet arrives (ENOBUFS, at once).
`on_datagram`, if set, sees every raw datagram (fixtures, debugging).

UID/GID: the kernel has no "uid flag" (linux/netfilter/nfnetlink_log.h defines only F_SEQ,
F_SEQ_GLOBAL and F_CONNTRACK): NFULA_UID/NFULA_GID are attached to every packet whose socket
has a file (a local process's socket), always. tests/kernel/test_nflog.py checks that.

Hand-written rather than through pyroute2: pyroute2 has no NFLOG (nfnetlink_log) support, and
the receive path must avoid per-attribute objects (see `kernel.nflog_decode`).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from outguard.errors import KernelError
from outguard.events import BlockedPacket
from outguard.kernel.netns import NetnsThread
from outguard.kernel.nflog_decode import NFNL_SUBSYS_ULOG, decode

NETLINK_NETFILTER = 12
NFULNL_MSG_CONFIG = 1
NLM_F_REQUEST, NLM_F_ACK = 0x01, 0x04
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_NLBUFSIZ = 1, 2, 3
NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH, NFULA_CFG_FLAGS = 4, 5, 6
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_SEQ = 0x0001
NLBUFSIZ_MAX = 131072  # the kernel caps nlbufsiz here (NFULNL_NLBUFSIZ_MAX is not exported)

log = logging.getLogger("outguard.nflog")
_seq = itertools.count(int.from_bytes(os.urandom(2), "little") + 1)


def _attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def config_message(group: int, attrs: bytes, seq: int) -> bytes:
    """An NFULNL_MSG_CONFIG request for `group` (nfgenmsg family AF_UNSPEC, res_id = group)."""
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", group) + attrs
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def bind_attrs() -> bytes:
    return _attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND))


def settings_attrs(*, copy_range: int, qthreshold: int, timeout_cs: int, nlbufsiz: int,
                   flags: int = NFULNL_CFG_F_SEQ) -> bytes:
    """Copy mode and range, batching, buffer size and flags, in one config message."""
    return (_attr(NFULA_CFG_MODE, struct.pack(">IBx", copy_range, NFULNL_COPY_PACKET))
            + _attr(NFULA_CFG_QTHRESH, struct.pack(">I", qthreshold))
            + _attr(NFULA_CFG_TIMEOUT, struct.pack(">I", timeout_cs))
            + _attr(NFULA_CFG_NLBUFSIZ, struct.pack(">I", nlbufsiz))
            + _attr(NFULA_CFG_FLAGS, struct.pack(">H", flags)))


@dataclass
class NflogStats:
    """Counters of one source. Books: packets the kernel logged = received + malformed + lost."""

    received: int = 0  # packets decoded and handed out
    datagrams: int = 0  # recv calls that returned data
    lost: int = 0  # packets missing from the sequence numbers: dropped by the kernel
    seq_gaps: int = 0  # how many times the sequence jumped (each jump: one lost batch or more)
    enobufs: int = 0  # recv failed with ENOBUFS: the socket buffer overflowed
    overruns: int = 0  # NLMSG_OVERRUN messages
    reordered: int = 0  # a sequence number behind the expected one (never seen; counted anyway)
    malformed: int = 0  # messages that could not be decoded (reasons are logged)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


P = TypeVar("P")


class Decoded(Protocol[P]):
    """What a decoder makes of one datagram (`nflog_decode.DecodedBatch` is one)."""

    @property
    def packets(self) -> list[P]: ...
    @property
    def seqs(self) -> list[int]: ...
    @property
    def errors(self) -> list[int]: ...
    @property
    def malformed(self) -> list[str]: ...
    @property
    def overrun(self) -> bool: ...


Decoder = Callable[[memoryview, int, datetime], Decoded[P]]


class NflogGroup(Generic[P]):
    """One bound NFLOG group whose datagrams `decoder` turns into records of type P (the
    monitor's `BlockedPacket`s: `NflogSource`; DNS answers: `kernel.nflog_payload`).
    Async-iterate for batches; `stats` counts packets and losses."""

    def __init__(self, decoder: Decoder[P], group: int = 0, *, netns: str | None = None,
                 copy_range: int = 128,
                 qthreshold: int = 256, timeout: float = 0.01, nlbufsiz: int = NLBUFSIZ_MAX,
                 rcvbuf: int = 8 << 20, max_batch: int = 2048,
                 clock: Callable[[], datetime] | None = None,
                 on_datagram: Callable[[bytes], None] | None = None) -> None:
        self._decode = decoder
        if not 0 <= group <= 0xFFFF:
            raise KernelError(f"NFLOG group {group} is out of range 0-65535")
        self.group, self.netns = group, netns
        self.copy_range, self.qthreshold = copy_range, max(1, qthreshold)
        self.timeout_cs = max(0, round(timeout * 100))  # the kernel counts in 1/100 s
        self.nlbufsiz = min(max(nlbufsiz, 4096), NLBUFSIZ_MAX)
        self.rcvbuf, self.max_batch = rcvbuf, max(1, max_batch)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.stats = NflogStats()
        self.on_datagram = on_datagram
        self._sock: socket.socket | None = None
        self._buf = bytearray(self.nlbufsiz + 65536)
        self._view = memoryview(self._buf)
        self._next_seq = 0
        self._last_warning = 0.0
        self._pending: list[P] = []

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Create the socket (in `netns` if given), bind the group, configure it. Idempotent."""
        if self._sock is not None:
            return
        try:
            if self.netns is None:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            else:  # a socket belongs to the namespace it was created in, whichever thread uses it
                with NetnsThread(self.netns) as thread:
                    sock = thread.call(socket.socket, socket.AF_NETLINK, socket.SOCK_RAW,
                                       NETLINK_NETFILTER)
        except OSError as exc:
            raise KernelError(f"cannot open a netfilter netlink socket: {exc.strerror}") from exc
        try:
            sock.bind((0, 0))
            try:  # FORCE passes net.core.rmem_max (we are root); the plain option is capped by it
                sock.setsockopt(socket.SOL_SOCKET, 33, self.rcvbuf)  # SO_RCVBUFFORCE
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.settimeout(5)
            self._next_seq = 0  # a fresh instance numbers its packets from 0
            # One message: the kernel binds first, then configures, before any packet is logged
            # with the default settings (whole packets, no sequence numbers).
            self._request(sock, bind_attrs() + settings_attrs(
                copy_range=self.copy_range, qthreshold=self.qthreshold,
                timeout_cs=self.timeout_cs, nlbufsiz=self.nlbufsiz), "bind")
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def _request(self, sock: socket.socket, attrs: bytes, what: str) -> None:
        seq = next(_seq) & 0xFFFFFFFF
        sock.send(config_message(self.group, attrs, seq))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            n = sock.recv_into(self._buf)
            batch = self._decode(self._view, n, self.clock())
            if batch.seqs:
                self._account(batch.seqs)
            self._pending += batch.packets  # a packet ahead of the ACK is still a packet
            if batch.errors:
                code = batch.errors[0]
                if code == 0:
                    return
                # EPERM: the group's instance belongs to another socket (EBUSY: to this one)
                hint = (" (the group is busy: another process, e.g. ulogd or another outguard,"
                        " has bound it in this namespace)"
                        if code in (errno.EPERM, errno.EBUSY) else "")
                raise KernelError(f"cannot {what} NFLOG group {self.group}: "
                                  f"{os.strerror(code)}{hint}")
        raise KernelError(f"no answer from the kernel to the NFLOG {what} request")

    def close(self) -> None:
        """Unbind (by closing: the kernel destroys the group's instance) and release. Idempotent."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> NflogGroup[P]:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> NflogGroup[P]:
        self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def fileno(self) -> int:
        if self._sock is None:
            raise KernelError("the NFLOG source is not open")
        return self._sock.fileno()

    # --- reading ----------------------------------------------------------------------------

    def read_nowait(self) -> list[P]:
        """Every packet the socket holds now, up to `max_batch`; [] if none (never blocks)."""
        sock = self._sock
        if sock is None:
            raise KernelError("the NFLOG source is not open")
        out, self._pending = self._pending, []
        stats = self.stats
        while len(out) < self.max_batch:
            try:
                n = sock.recv_into(self._buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    stats.enobufs += 1  # how many it were, the sequence numbers tell
                    continue
                raise KernelError(f"NFLOG receive failed: {exc}") from exc
            if n == 0:
                break
            stats.datagrams += 1
            if self.on_datagram is not None:
                self.on_datagram(bytes(self._view[:n]))
            batch = self._decode(self._view, n, self.clock())
            if batch.seqs:
                self._account(batch.seqs)
            if batch.malformed:
                stats.malformed += len(batch.malformed)
                log.warning("NFLOG: skipped %d malformed message(s): %s",
                            len(batch.malformed), batch.malformed[0])
            if batch.overrun:
                stats.overruns += 1
            out += batch.packets
        stats.received += len(out)
        return out

    def _account(self, seqs: list[int]) -> None:
        expected, lost, gaps = self._next_seq, 0, 0
        for s in seqs:
            if s != expected:
                jump = (s - expected) & 0xFFFFFFFF
                if jump >= 1 << 31:
                    self.stats.reordered += 1
                    continue
                lost += jump
                gaps += 1
            expected = (s + 1) & 0xFFFFFFFF
        self._next_seq = expected
        if gaps:
            self.stats.lost += lost
            self.stats.seq_gaps += gaps
            now = time.monotonic()
            if now - self._last_warning >= 5:  # a flood must not turn into a flood of warnings
                self._last_warning = now
                log.warning("NFLOG group %d: the kernel dropped %d packet(s) so far "
                            "(%d gap(s), %d ENOBUFS): the monitor cannot keep up",
                            self.group, self.stats.lost, self.stats.seq_gaps, self.stats.enobufs)

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        fd = self.fileno()

        def wake() -> None:
            if not fut.done():  # the reader may fire again before this task runs
                fut.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await fut
        finally:
            loop.remove_reader(fd)

    async def batches(self) -> AsyncIterator[list[P]]:
        """Non-empty batches until the source is closed."""
        while self._sock is not None:
            try:
                got = self.read_nowait()
            except KernelError:
                if self._sock is None:
                    return  # closed while we were reading
                raise
            if got:
                yield got
                continue
            await self._readable()

    def __aiter__(self) -> AsyncIterator[list[P]]:
        return self.batches()


def _decode_packets(view: memoryview, n: int, now: datetime) -> Decoded[BlockedPacket]:
    return decode(view, n, now)


class NflogSource(NflogGroup[BlockedPacket]):
    """The monitor's source: NFLOG datagrams decoded into `BlockedPacket`s
    (`kernel.nflog_decode`). Arguments as `NflogGroup`'s, without the decoder."""

    def __init__(self, group: int = 0, *, netns: str | None = None, copy_range: int = 128,
                 qthreshold: int = 256, timeout: float = 0.01, nlbufsiz: int = NLBUFSIZ_MAX,
                 rcvbuf: int = 8 << 20, max_batch: int = 2048,
                 clock: Callable[[], datetime] | None = None,
                 on_datagram: Callable[[bytes], None] | None = None) -> None:
        super().__init__(_decode_packets, group, netns=netns, copy_range=copy_range,
                         qthreshold=qthreshold, timeout=timeout, nlbufsiz=nlbufsiz,
                         rcvbuf=rcvbuf, max_batch=max_batch, clock=clock,
                         on_datagram=on_datagram)
