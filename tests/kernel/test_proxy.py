"""The proxy's server on real sockets in a private namespace: upstreams on documentation
addresses (on the namespace's lo), clients that are this test (uid 0, found by sock_diag and
/proc like any client), the proxy's own code unmocked (`Proxy`, `SocketIdentity`).

Each test runs one asyncio scenario on a thread inside the namespace.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from outguard.kernel import netns as ns
from outguard.kernel.netns import NetnsThread
from outguard.kernel.sockdiag import SockDiag
from outguard.monitor.attribute import Attributor
from outguard.policy.load import load_text
from outguard.policy.proxyconf import ProxyLimits
from outguard.proxy.resolve import table_resolver
from outguard.proxy.server import Proxy, Record
from outguard.proxy.tunnel import ALERT_UNRECOGNIZED_NAME
from outguard.proxy.who import SocketIdentity
from outguard.ruleset.lower import lower

pytestmark = pytest.mark.kernel

UP4, UP6, DOWN4 = "198.51.100.10", "2001:db8::10", "198.51.100.11"
POLICY = """
version: 1
allow:
  - name: web
    to: [api.example.test, v6.example.test, down.example.test, slow.example.test]
    ports: [80, 443]
"""
DNS = {"api.example.test": [UP4], "v6.example.test": [UP6], "down.example.test": [DOWN4],
       "slow.example.test": [UP4]}
LIMITS = ProxyLimits(header_timeout=1.0, idle_timeout=2.0, connect_timeout=2.0,
                     header_bytes=4096, connections=50)


class Upstream:
    """A small origin on port 80 (HTTP) and 443 (echo after the first bytes), counting hits."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.connections: list[str] = []  # the address each HTTP connection came to
        self.tunnelled: list[bytes] = []

    async def http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer.get_extra_info("sockname")[0])
        while await self.answer(reader, writer):  # /keep…: the connection stays open
            pass
        writer.close()

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        self.requests.append(head)
        path = head.split(b" ")[1]
        if path == b"/hang":
            await asyncio.sleep(30)
        elif path == b"/reset":
            writer.transport.abort()
            return False
        elif path == b"/redirect":
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1/secret\r\n"
                         b"Content-Length: 0\r\n\r\n")
        elif path == b"/eof":  # no length: the body ends when the connection does
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        elif path == b"/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()
        return path.startswith(b"/keep")

    async def echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        self.tunnelled.append(data)
        if data == b"bulk":  # 20 MB down, then the end
            for _ in range(20):
                writer.write(b"x" * (1 << 20))
                await writer.drain()
            writer.write_eof()
            await reader.read()
        while data.startswith(b"ping"):  # a long-lived tunnel: one echo per message
            writer.write(b"echo:" + data)
            await writer.drain()
            data = await reader.read(65536)
        writer.write(b"echo:" + data[:10])
        await writer.drain()
        writer.close()


def client_hello(name: str) -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def exchange(data: bytes, host: str = "127.0.0.1", then: bytes = b"",
                   wait: float = 5.0) -> bytes:
    """Send `data` to the proxy (and `then` after its first answer); everything until EOF."""
    reader, writer = await asyncio.open_connection(host, 3128)
    writer.write(data)
    got = b""
    if then:
        got = await asyncio.wait_for(reader.read(65536), wait)
        writer.write(then)
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), wait):
            got += chunk
    except ConnectionError:
        pass
    writer.close()
    return got


Scenario = Callable[[Proxy, Upstream, list[Record]], Awaitable[None]]


def run_scenario(netns: str, scenario: Scenario) -> None:
    for argv in (["ip", "addr", "add", f"{UP4}/32", "dev", "lo"],
                 ["ip", "addr", "add", f"{UP6}/128", "dev", "lo", "nodad"]):
        ns.run(netns, argv)

    async def main() -> None:
        upstream = Upstream()
        records: list[Record] = []
        ruleset = lower(load_text(POLICY), resolver=lambda n: DNS[n],
                        now=datetime.now(UTC))
        with SockDiag() as diag, SockDiag() as fast:
            identity = SocketIdentity(Attributor(diag), fast)
            proxy = Proxy(lambda: ruleset, table_resolver(DNS), identity, LIMITS,
                          on_record=records.append)
            servers = [await asyncio.start_server(upstream.http, host, 80) for host in (UP4, UP6)]
            servers.append(await asyncio.start_server(upstream.echo, UP4, 443))
            servers += [await asyncio.start_server(proxy.handle, host, 3128)
                        for host in ("127.0.0.1", "::1")]
            try:
                await scenario(proxy, upstream, records)
            finally:
                for server in servers:
                    server.close()
                identity.close()

    with NetnsThread(netns) as thread:
        thread.call(asyncio.run, main())


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def header(response: bytes, name: str) -> str | None:
    for line in response.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode()
    return None


def test_an_allowed_name_over_http_ipv4_and_ipv6_attributed_to_its_user(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        got = await exchange(b"GET http://api.example.test/ HTTP/1.1\r\nHost: evil.example.test"
                             b"\r\nConnection: close\r\n\r\n")
        assert status(got) == 200 and got.endswith(b"hello")
        # the Host header the upstream sees is the host that was decided
        assert b"host: api.example.test\r\n" in upstream.requests[0].lower()
        got6 = await exchange(b"GET http://v6.example.test/chunked HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n", host="::1")
        assert status(got6) == 200 and b"hello" in got6 and b" world" in got6
        assert [r.verdict.rule for r in records] == ["allow:web", "allow:web"]
        # an allowed request needs only the socket's uid (no rule here is about more)
        assert records[0].client.who.uid == 0 and records[0].client.user == "root"

    run_scenario(netns, scenario)


def test_keep_alive_serves_pipelined_requests(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        one = b"GET http://api.example.test/a HTTP/1.1\r\nHost: a\r\n\r\n"
        two = b"GET http://api.example.test/b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        got = await exchange(one + two)
        assert got.count(b"HTTP/1.1 200") == 2
        assert [r.split(b" ")[1] for r in upstream.requests] == [b"/a", b"/b"]

    run_scenario(netns, scenario)


def test_refusals_are_403_naming_the_rule(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        got = await exchange(b"GET http://other.example.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status(got) == 403 and header(got, "X-Outguard-Rule") == "default"
        assert "no allow rule matches" in (header(got, "X-Outguard-Reason") or "")
        got = await exchange(b"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status(got) == 403 and header(got, "X-Outguard-Rule") == "proxy:never-reach"
        assert upstream.requests == [] and [r.status for r in records] == [403, 403]
        # a refusal names the process that asked: this test
        assert {(r.client.who.uid, r.client.pid) for r in records} == {(0, os.getpid())}

    run_scenario(netns, scenario)


@pytest.mark.parametrize(("request_bytes", "code"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET http://api.example.test/ HTTP/1.1\r\nNo colon here\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n", 400),  # origin-form: no proxy request
    (b"GET https://api.example.test/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET http://user@api.example.test/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET http://api.example.test/ HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431),
    (b"CONNECT api.example.test HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40 + b"\r\n\r\n", 400),
])
def test_malformed_requests_get_400_and_the_proxy_goes_on(netns: str, request_bytes: bytes,
                                                           code: int) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        assert status(await exchange(request_bytes)) == code
        got = await exchange(b"GET http://api.example.test/ HTTP/1.1\r\nHost: a\r\n"
                             b"Connection: close\r\n\r\n")
        assert status(got) == 200

    run_scenario(netns, scenario)


def test_redirects_go_to_the_client_and_are_not_followed(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        got = await exchange(b"GET http://api.example.test/redirect HTTP/1.1\r\nHost: a\r\n"
                             b"Connection: close\r\n\r\n")
        assert status(got) == 302 and header(got, "Location") == "http://127.0.0.1/secret"
        assert len(upstream.requests) == 1 and len(records) == 1

    run_scenario(netns, scenario)


def test_slow_clients_and_failing_upstreams(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        # a request head that never completes: 408 after header_timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", 3128)
        writer.write(b"GET http://api.example.test/ HTTP/1.1\r\nHost: a\r\n")
        got = await asyncio.wait_for(reader.read(65536), 10)
        assert status(got) == 408
        writer.close()
        for path, why in ((b"/hang", b"sent nothing"), (b"/reset", b"")):
            got = await exchange(b"GET http://slow.example.test" + path + b" HTTP/1.1\r\n"
                                 b"Host: a\r\n\r\n", wait=10)
            assert status(got) == 502 and why in got
        got = await exchange(b"GET http://down.example.test/ HTTP/1.1\r\nHost: a\r\n\r\n",
                             wait=10)
        assert status(got) == 502 and b"cannot connect" in got
        # an allowed request whose upstream cannot be reached is logged and counted, and
        # its answer names the rule (a newcomer's trial: no line, no count, no rule header)
        assert b"X-Outguard-Rule: allow:web" in got
        got = await exchange(b"CONNECT down.example.test:443 HTTP/1.1\r\nHost: a\r\n\r\n",
                             wait=10)
        assert status(got) == 502 and b"X-Outguard-Rule: allow:web" in got
        assert [(r.method, r.status) for r in records if r.host.startswith("down.")] == \
            [("GET", 502), ("CONNECT", 502)]
        assert proxy.counts["allowed", "allow:web"] >= 2
        assert proxy.active == 0

    run_scenario(netns, scenario)


def test_connect_tunnels_and_the_sni_check(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        hello = client_hello("api.example.test")
        got = await exchange(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: a\r\n\r\n",
                             then=hello)
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"echo:" + hello[:10])
        assert upstream.tunnelled == [hello]
        fronted = client_hello("other.example.test")
        got = await exchange(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: a\r\n\r\n",
                             then=fronted)
        assert got.endswith(ALERT_UNRECOGNIZED_NAME)
        # connected (the decision came before the 200), but not a byte of the hello went out
        assert upstream.tunnelled == [hello, b""]
        assert [r.verdict.rule for r in records] == ["allow:web", "proxy:sni"]
        assert "other.example.test" in records[1].verdict.reason

    run_scenario(netns, scenario)


def test_too_many_clients_get_503(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        idle: list[Any] = [await asyncio.open_connection("127.0.0.1", 3128)
                           for _ in range(LIMITS.connections)]
        await asyncio.sleep(0.2)
        assert proxy.active == LIMITS.connections
        got = await exchange(b"GET http://api.example.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status(got) == 503
        for _reader, writer in idle:
            writer.close()

    run_scenario(netns, scenario)


def test_a_kept_alive_client_reuses_its_upstream_connection_only_where_a_check_allows(
        netns: str) -> None:
    """Every request is decided again: a kept upstream connection carries the next request
    to the same host:port at a checked address; a new policy refuses it, and an answer that
    moved opens a new connection to the new, checked address."""
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", 3128)

        async def get(path: str) -> bytes:
            writer.write(f"GET http://api.example.test{path} HTTP/1.1\r\nHost: a\r\n\r\n"
                         .encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(header(head, "Content-Length") or 0)
            return head + await reader.readexactly(length)

        for path in ("/keep1", "/keep2", "/keep3"):
            assert status(await get(path)) == 200
        assert upstream.connections == [UP4]  # three requests, one upstream connection
        proxy.resolve = table_resolver(DNS | {"api.example.test": [UP6]})
        assert status(await get("/keep4")) == 200
        assert upstream.connections == [UP4, UP6]  # the old address was not checked: not reused
        stricter = lower(load_text("version: 1\n"), now=datetime.now(UTC))
        proxy.ruleset = lambda: stricter
        writer.write(b"GET http://api.example.test/keep5 HTTP/1.1\r\nHost: a\r\n\r\n")
        got = await asyncio.wait_for(reader.read(65536), 5)
        assert status(got) == 403 and header(got, "X-Outguard-Rule") == "default"
        assert len(upstream.requests) == 4 and len(records) == 5
        writer.close()

    run_scenario(netns, scenario)


def test_a_new_ruleset_applies_to_new_requests_while_open_tunnels_go_on(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", 3128)
        writer.write(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert b" 200 " in await reader.readuntil(b"\r\n\r\n")
        writer.write(b"ping1")
        assert await reader.readexactly(10) == b"echo:ping1"
        stricter = lower(load_text("version: 1\n"), now=datetime.now(UTC))
        proxy.ruleset = lambda: stricter
        got = await exchange(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status(got) == 403 and header(got, "X-Outguard-Rule") == "default"
        writer.write(b"ping2")
        assert await reader.readexactly(10) == b"echo:ping2"
        writer.close()

    run_scenario(netns, scenario)


def test_tunnels_carry_bulk_with_flow_control_and_idle_ones_are_closed(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", 3128)
        writer.write(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"bulk")
        total = 0
        while chunk := await asyncio.wait_for(reader.read(1 << 16), 10):
            total += len(chunk)
            if total < (1 << 20):
                await asyncio.sleep(0.01)  # a slow reader at first: the proxy must not buffer it all
        assert total == 20 << 20
        writer.close()
        # an idle tunnel: closed after idle_timeout with no byte either way
        reader, writer = await asyncio.open_connection("127.0.0.1", 3128)
        writer.write(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"ping1")
        assert await reader.readexactly(10) == b"echo:ping1"
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), LIMITS.idle_timeout + 5) == b""
        assert asyncio.get_running_loop().time() - started >= LIMITS.idle_timeout - 0.1
        writer.close()
        await asyncio.sleep(0.1)
        assert proxy.active == 0

    run_scenario(netns, scenario)


def _mutations(seed: int, count: int) -> list[bytes]:
    """Damaged requests: bytes flipped, inserted and cut, odd methods, versions and tokens."""
    import random
    rng = random.Random(seed)
    base = [b"GET http://api.example.test/ HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
            b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n",
            b"POST http://api.example.test/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"]
    specials = [b"\r", b"\n", b"\0", b" ", b":", b"\xff", b"%", b"[", b"]", b"@", b"\t",
                b"\r\n\r\n", b"Transfer-Encoding: chunked\r\n", b"Content-Length: -1\r\n",
                b"Content-Length: 99999999999999999999\r\n", b"HTTP/9.9", b"x" * 300]
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            what = rng.random()
            if what < 0.3:
                data[at] = rng.randrange(256)
            elif what < 0.7:
                data[at:at] = rng.choice(specials)
            else:
                del data[at:at + rng.randint(1, 8)]
        out.append(bytes(data))
    return out


def test_fuzzed_requests_never_crash_the_proxy(netns: str) -> None:
    import logging
    errors: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record)

    handler = Keep(level=logging.ERROR)
    logging.getLogger("outguard.proxy").addHandler(handler)

    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        async def one(data: bytes) -> bytes:
            try:
                return await exchange(data, wait=4)
            except TimeoutError:
                return b""  # a request still waiting for more (a body, the rest of a head)

        statuses = set()
        cases = _mutations(18, 300)
        for i in range(0, len(cases), 25):  # 25 at once: well below `connections`
            for got in await asyncio.gather(*(one(d) for d in cases[i:i + 25])):
                if got.startswith(b"HTTP/1.1 "):
                    statuses.add(status(got))
        assert statuses <= {200, 400, 403, 408, 431, 502}, statuses
        assert 400 in statuses
        ok = await exchange(b"GET http://api.example.test/ HTTP/1.1\r\nHost: a\r\n"
                            b"Connection: close\r\n\r\n")
        assert status(ok) == 200
        assert proxy.active == 0

    try:
        run_scenario(netns, scenario)
    finally:
        logging.getLogger("outguard.proxy").removeHandler(handler)
    assert errors == []


def test_request_bodies_reach_the_upstream_chunked_or_with_a_length(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        chunked = (b"POST http://api.example.test/up HTTP/1.1\r\nHost: a\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   b"3\r\nabc\r\n0\r\n\r\n")
        assert status(await exchange(chunked)) == 200
        assert b"transfer-encoding: chunked" in upstream.requests[0].lower()
        sized = (b"POST http://api.example.test/up HTTP/1.1\r\nHost: a\r\n"
                 b"Content-Length: 3\r\nConnection: close\r\n\r\nabc")
        assert status(await exchange(sized)) == 200
        assert b"content-length: 3" in upstream.requests[1].lower()

    run_scenario(netns, scenario)


def test_a_response_without_length_reaches_the_client_whole(netns: str) -> None:
    async def scenario(proxy: Proxy, upstream: Upstream, records: list[Record]) -> None:
        got = await exchange(b"GET http://api.example.test/eof HTTP/1.1\r\nHost: a\r\n"
                             b"Connection: close\r\n\r\n")
        assert status(got) == 200 and b"until the end" in got
        got = await exchange(b"HEAD http://api.example.test/ HTTP/1.1\r\nHost: a\r\n"
                             b"Connection: close\r\n\r\n")
        assert status(got) == 200 and got.endswith(b"\r\n\r\n")

    run_scenario(netns, scenario)
