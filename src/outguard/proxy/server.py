"""The proxy's connections: requests read with h11, decided, connected, relayed.

Place in the data flow: `serve` binds the listeners and hands each accepted connection to
`Proxy.handle`. Per request: `http.parse_absolute` or the CONNECT authority → `guard` (by
name, then every resolved address; the client's uid and cgroup from `identify`) → one
connection to a checked address (never a second lookup) → the request forwarded with h11 on
both sides (keep-alive towards the client, one upstream connection per request, redirects
passed to the client, never followed) or the tunnel relayed (`tunnel`).

Answers the proxy writes itself close the connection: 400 for what cannot be read (a
malformed head, a bad host), 431 for a head over `header_bytes`, 403 for a refusal (headers
X-Outguard-Rule and X-Outguard-Reason), 502 when the upstream cannot be resolved, reached or
read, 503 when `connections` clients are already served, 408 when a client is too slow with
its request head. No exception of one connection reaches another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11

from outguard.policy.proxyconf import ProxyLimits
from outguard.proxy import exchange, guard, http, tunnel
from outguard.proxy.exchange import RefusedError, Slot, Streams, Upstream
from outguard.proxy.guard import Verdict, Who
from outguard.proxy.resolve import Resolve, ResolveError
from outguard.proxy.target import BadHostError, IPAddress, Target, split_authority
from outguard.ruleset.ir import Ruleset

log = logging.getLogger("outguard.proxy")
__all__ = ["Client", "Proxy", "RefusedError", "Streams"]  # RefusedError, Streams: from exchange


@dataclass(frozen=True)
class Client:
    """Who asks: what `guard` needs, and what a record shows."""

    who: Who
    pid: int | None = None
    exe: str | None = None
    user: str | None = None
    unit: str | None = None
    ends: tuple[str, int, str, int] | None = None  # client addr, port, our addr, port
    full: bool = False  # the process was looked for (not only the socket's uid)


# (client addr, client port, our addr, our port, full) → the client. Without `full` only the
# socket's uid is needed (one sock_diag request); with it, the process, its gid and cgroup.
Identify = Callable[[str, int, str, int, bool], Awaitable[Client]]


@dataclass(frozen=True)
class Record:
    """One decided request (the log line; counted per rule in `Proxy.counts`)."""

    method: str
    host: str
    port: int
    client: Client
    verdict: Verdict
    status: int


class Proxy:
    """The proxy's logic around its sockets; `ruleset()` is read per request, so a new policy
    applies to new requests while open tunnels go on."""

    def __init__(self, ruleset: Callable[[], Ruleset], resolve: Resolve, identify: Identify,
                 limits: ProxyLimits, on_record: Callable[[Record], None] | None = None) -> None:
        self.ruleset = ruleset
        self.resolve = resolve
        self.identify = identify
        self.limits = limits
        self.on_record = on_record
        self.active = 0
        self.counts: Counter[tuple[str, str]] = Counter()  # (allowed|refused, rule)
        self._seen: Ruleset | None = None
        self._rules: Ruleset | None = None

    def rules(self) -> Ruleset:
        """The ruleset the proxy decides with: the current one without its kernel-only
        proxy rules (`only_egress` would refuse every client, `transparent` accept every one:
        they say what the kernel does around the proxy, not what the proxy decides)."""
        current = self.ruleset()
        if current is not self._seen or self._rules is None:
            self._seen, self._rules = current, guard.for_proxy(current)
        return self._rules

    # --- connections ----------------------------------------------------------------------

    def keep(self, tunnel_done: asyncio.Future[None]) -> None:
        """A tunnel that runs on after its connection's coroutine ended: still a connection."""
        if not tunnel_done.done():
            self.active += 1
            tunnel_done.add_done_callback(self._tunnel_ended)

    def _tunnel_ended(self, _done: asyncio.Future[None]) -> None:
        self.active -= 1

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """asyncio.start_server's callback: one client connection, start to end."""
        self.active += 1
        try:
            if self.active > self.limits.connections:
                writer.write(http.error_response(503, "too many client connections"))
                await writer.drain()
                return
            await self._serve(reader, writer)
        except RefusedError as exc:
            await _answer(writer, exc.answer)
        except (ConnectionError, TimeoutError, OSError):
            pass  # the client went away or timed out
        except Exception:  # one connection's bug must not stop the proxy
            log.exception("proxy: unexpected error on a client connection")
        finally:
            self.active -= 1
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        client = await self.identify(peer[0], peer[1], local[0], local[1],
                                     guard.needs_process(self.rules()))
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.header_bytes)
        slot = Slot()
        try:
            while True:
                request = await self.next_request(conn, reader)
                if request is None:
                    return
                if request.method == b"CONNECT":
                    slot.close()
                    await self._connect(conn, request, client, (reader, writer))
                    return
                await self.forward(conn, request, client, (reader, writer),
                                   slot=slot if http.client_keeps(request) else None)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        finally:
            slot.close()

    async def next_request(self, conn: h11.Connection,
                            reader: asyncio.StreamReader) -> h11.Request | None:
        """The next request head; None when the client closed between requests."""
        first = conn.their_state is h11.IDLE and not conn.trailing_data[0]
        wait = self.limits.idle_timeout if first else self.limits.header_timeout
        deadline: float | None = None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise RefusedError(exc.error_status_hint if exc.error_status_hint in (400, 431)
                              else 400, f"malformed request: {exc}") from None
            if isinstance(event, h11.Request):
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None
            if deadline is None:
                deadline = time.monotonic() + wait
            try:
                # never more than the limit at once: h11 bounds only a head still incomplete
                async with asyncio.timeout_at(loop_deadline(deadline)):
                    data = await reader.read(self.limits.header_bytes + 1)
            except TimeoutError:
                if conn.their_state is h11.IDLE and not conn.trailing_data[0] and first:
                    return None  # an idle kept-alive connection: close it quietly
                raise RefusedError(408, "the request head did not arrive in time") from None
            if data and first and deadline is not None:
                first = False  # the head has begun: from now on, the header timeout
                deadline = time.monotonic() + self.limits.header_timeout
            conn.receive_data(data)

    # --- decisions ------------------------------------------------------------------------

    async def refused(self, method: str, target: Target, port: int, client: Client,
                       verdict: Verdict, status: int) -> None:
        """Record a refusal with the client's process (looked up now if it was not yet: a
        refusal is rare and is what someone will investigate)."""
        if not client.full and client.ends is not None:
            client = await self.identify(*client.ends, True)
        self.record(method, target, port, client, verdict, status)

    def record(self, method: str, target: Target, port: int, client: Client, verdict: Verdict,
                status: int) -> None:
        self.counts["allowed" if verdict.allowed else "refused", verdict.rule] += 1
        record = Record(method, str(target), port, client, verdict, status)
        if self.on_record is not None:
            self.on_record(record)

    async def decide(self, method: str, target: Target, port: int, client: Client,
                      orig: IPAddress | None = None) -> tuple[list[IPAddress], Verdict]:
        """The addresses to connect to, checked, and the verdict; RefusedError(403/502) if none.
        With `orig` (a redirected connection's original destination) the only address is
        `orig`, and it must be one the name resolves to: a forged Host or server name opens
        nothing."""
        ruleset = self.rules()
        if target.name is not None:
            verdict = guard.decide_name(ruleset, target.name, port, client.who)
            if verdict.allowed:
                try:
                    addrs = await self.resolve(target.name)
                except ResolveError as exc:
                    await self.refused(method, target, port, client, verdict, 502)
                    raise RefusedError(502, str(exc)) from None
                checked = guard.decide_addresses(ruleset, addrs, port, client.who, target.name)
                verdict = verdict if checked.allowed else checked
        else:
            assert target.addr is not None
            addrs = [target.addr]
            verdict = guard.decide_addresses(ruleset, addrs, port, client.who)
        if verdict.allowed and orig is not None and orig not in addrs:
            verdict = Verdict(False, "proxy:not-this-address",
                              f"the connection went to {orig}, which is not an address of"
                              f" {target} (a Host header or TLS server name that does not"
                              " belong to the destination)")
        if not verdict.allowed:
            await self.refused(method, target, port, client, verdict, 403)
            raise RefusedError(403, f"{target}:{port} refused: {verdict.reason}", verdict.rule)
        return ([orig] if orig is not None else addrs), verdict

    async def upstream(self, method: str, target: Target, port: int, client: Client,
                       addrs: list[IPAddress], verdict: Verdict) -> Streams:
        """`open_upstream` for an allowed request; one that cannot be reached is logged and
        counted as allowed with status 502 (it was silent: no line, no count), and its answer
        names the rule that allowed it."""
        try:
            return await self.open_upstream(addrs, port)
        except RefusedError as exc:
            self.record(method, target, port, client, verdict, 502)
            raise RefusedError(502, exc.reason, verdict.rule) from None

    async def open_upstream(self, addrs: list[IPAddress], port: int) -> Streams:
        """A connection to the first checked address that answers (literal: no lookup)."""
        errors = []
        for addr in addrs:
            try:
                async with asyncio.timeout(self.limits.connect_timeout):
                    return await asyncio.open_connection(str(addr), port)
            except TimeoutError:
                errors.append(f"{addr}: no answer in {self.limits.connect_timeout:g}s")
            except OSError as exc:
                errors.append(f"{addr}: {exc.strerror or exc}")
        raise RefusedError(502, f"cannot connect to port {port}: {'; '.join(errors)}")

    # --- CONNECT --------------------------------------------------------------------------

    async def _connect(self, conn: h11.Connection, request: h11.Request, client: Client,
                       down: Streams) -> None:
        try:
            target, port = split_authority(request.target.decode("ascii", "replace"), None)
        except BadHostError as exc:
            raise RefusedError(400, f"bad CONNECT target: {exc}") from None
        addrs, verdict = await self.decide("CONNECT", target, port, client)
        up = await self.upstream("CONNECT", target, port, client, addrs, verdict)
        try:
            while not isinstance(conn.next_event(), h11.EndOfMessage | h11.PAUSED):
                pass  # a CONNECT has no body; h11 pauses at its end
            down[1].write(conn.send(h11.Response(status_code=200, headers=[],
                                                 reason=b"Connection established")) or b"")
            await down[1].drain()
            first = conn.trailing_data[0]
            try:
                data, hello = await tunnel.read_hello(down[0], first, self.limits.header_timeout)
                problem = tunnel.sni_problem(hello, target)
            except ValueError as exc:
                data, problem = b"", str(exc)
            if problem is not None:
                refusal = Verdict(False, "proxy:sni", problem)
                await self.refused("CONNECT", target, port, client, refusal, 403)
                await _answer(down[1], tunnel.ALERT_UNRECOGNIZED_NAME)
                return
            self.record("CONNECT", target, port, client, verdict, 200)
            up[1].write(data)
            del data, first, hello  # an open tunnel keeps only what it needs
            self.keep(await tunnel.hand_over(down, up, self.limits.idle_timeout))
        finally:
            up[1].close()

    # --- plain HTTP -----------------------------------------------------------------------

    async def forward(self, conn: h11.Connection, request: h11.Request, client: Client,
                       down: Streams, orig: tuple[IPAddress, int] | None = None,
                       slot: Slot | None = None) -> None:
        """One request, forwarded; `orig`: a redirected connection's original destination
        (the request is origin-form, its Host header names the target); `slot`: the client
        connection's kept upstream connection (without: one upstream connection for this
        request alone)."""
        method = request.method.decode("ascii", "replace")
        try:
            where = (http.parse_absolute(request.target) if orig is None
                     else http.parse_origin(request, orig[1]))
        except BadHostError as exc:
            raise RefusedError(400, str(exc)) from None
        addrs, verdict = await self.decide(method, where.target, where.port, client,
                                            orig[0] if orig is not None else None)
        key = (str(where.target), where.port)
        up = slot.take(key, addrs) if slot is not None else None  # only to a checked address
        again = False
        while True:
            if up is None:
                up = Upstream.opened(key, await self.upstream(
                    method, where.target, where.port, client, addrs, verdict))
            try:
                status = await self._exchange(conn, request, where, up, down, slot, again)
            except BaseException:
                up.close()
                raise
            if status is not None:
                break
            up.close()  # a kept connection the upstream had closed: once more, on a new one
            up, again = None, True
        self.record(method, where.target, where.port, client, verdict, status)
        if slot is not None:
            slot.give(up)
        else:
            up.close()

    async def _exchange(self, conn: h11.Connection, request: h11.Request, where: http.HttpTarget,
                        up: Upstream, down: Streams, slot: Slot | None, again: bool) -> int | None:
        """The request to `up`, its response to the client: the status; None when `up` was
        a reused connection that failed before any answer and no body byte went up."""
        upconn, writer = up.conn, up.streams[1]
        writer.write(upconn.send(h11.Request(
            method=request.method, target=where.path,
            headers=http.forward_headers(list(request.headers), where.authority,
                                         keep=slot is not None))) or b"")
        sent = False
        if again:  # the body was empty, and read from the client the first time
            writer.write(upconn.send(h11.EndOfMessage()) or b"")
        else:
            if conn.client_is_waiting_for_100_continue:
                down[1].write(conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                              or b"")
            sent = await exchange.copy_body(conn, down[0], upconn, writer,
                                            self.limits.idle_timeout)
        try:
            return await exchange.copy_response(upconn, up.streams[0], conn, down[1],
                                                self.limits.idle_timeout)
        except RefusedError:
            if up.reused and not sent:
                return None
            raise


def loop_deadline(monotonic: float) -> float:
    """A `time.monotonic()` deadline on the running loop's clock (`asyncio.timeout_at`: a
    timer, where `wait_for` would start a task per read)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic - time.monotonic())


async def _answer(writer: asyncio.StreamWriter, data: bytes) -> None:
    try:
        writer.write(data)
        await writer.drain()
    except (ConnectionError, OSError):
        pass
