"""The proxy benchmark's origin and load client (run inside the benchmark's namespace).

    proxy_peer.py origin ADDR                 HTTP on :80 (keep-alive, "ok"; /big: 100 MB), echo on :443
                                              (a first message "big\n": 100 MB back, then close)
    proxy_peer.py connect PROXY SECONDS CONC  CONNECT setups/s (CONNECT, ping, echo, close)
    proxy_peer.py idle PROXY COUNT            open COUNT idle tunnels, print "open N", wait for stdin EOF
    proxy_peer.py tunnelbulk PROXY|direct     100 MB down a CONNECT tunnel (or straight): Mbit/s
    proxy_peer.py latency PROXY|direct RATE SECONDS
                                              GET at a fixed rate (open loop), new connection
                                              each: p50/p99 ms from connect to the whole answer

One JSON line per measurement on stdout. Both proxies are driven by this same client, so its own
cost is the same on both sides of a ratio.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import time

ORIGIN = "198.51.100.10"  # bench/proxy.py's origin (api.example.test)
BIG = 100 * 1024 * 1024
CHUNK = b"x" * (1 << 20)


def raise_fds() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.split(b" ", 2)[1].endswith(b"/big"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
                for _ in range(BIG // len(CHUNK)):
                    writer.write(CHUNK)
                    await writer.drain()
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            if b"close" in head.lower():
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        data = await reader.read(65536)
        if data == b"big\n":
            for _ in range(BIG // len(CHUNK)):
                writer.write(CHUNK)
                await writer.drain()
            writer.close()
            return
        while data:
            writer.write(data)
            await writer.drain()
            data = await reader.read(65536)
    except ConnectionError:
        pass
    writer.close()


async def origin(addr: str) -> None:
    raise_fds()
    await asyncio.start_server(http, addr, 80, backlog=4096)
    await asyncio.start_server(echo, addr, 443, backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _tunnel(proxy: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*proxy)
    writer.write(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200" not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(head[:200].decode("latin-1"))
    return reader, writer


async def connect_rate(proxy: tuple[str, int], seconds: float, conc: int) -> None:
    done, errors = 0, 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.monotonic() < end:
            try:
                reader, writer = await _tunnel(proxy)
                writer.write(b"ping")
                await reader.readexactly(4)
                writer.close()
                done += 1
            except (OSError, RuntimeError, asyncio.IncompleteReadError):
                errors += 1
    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(conc)))
    print(json.dumps({"setups_per_s": done / (time.monotonic() - start), "errors": errors}))


async def _used_tunnel(proxy: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A tunnel that carried one exchange (as a TLS session would) and then sits idle."""
    reader, writer = await _tunnel(proxy)
    writer.write(b"ping")
    await reader.readexactly(4)
    return reader, writer


async def idle(proxy: tuple[str, int], count: int) -> None:
    raise_fds()
    tunnels = []
    for i in range(0, count, 200):
        tunnels += await asyncio.gather(*(_used_tunnel(proxy) for _ in range(min(200, count - i))))
    print(json.dumps({"open": len(tunnels)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def tunnelbulk(proxy: tuple[str, int] | None) -> None:
    """100 MB down a tunnel (or from the origin directly), read with large receives."""
    sock = socket.create_connection(proxy or (ORIGIN, 443))
    if proxy is not None:
        sock.sendall(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        if b" 200" not in head:
            raise RuntimeError(head.decode("latin-1"))
    start = time.monotonic()
    sock.sendall(b"big\n")
    buf, got = bytearray(1 << 20), 0
    while n := sock.recv_into(buf):
        got += n
    took = time.monotonic() - start
    if got != BIG:
        raise RuntimeError(f"got {got} bytes of {BIG}")
    print(json.dumps({"mbit_s": got * 8 / took / 1e6}))


async def _get(proxy: tuple[str, int] | None) -> float:
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(*(proxy or (ORIGIN, 80)))
    target = b"http://api.example.test/" if proxy else b"/"
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: api.example.test\r\n"
                 b"Connection: close\r\n\r\n")
    await reader.read()
    took = time.monotonic() - start
    writer.close()
    return took


async def latency(proxy: tuple[str, int] | None, rate: float, seconds: float) -> None:
    """Open loop: a request every 1/rate s, whatever the answers do."""
    tasks = []
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.ensure_future(_get(proxy)))
    times = sorted(await asyncio.gather(*tasks))
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000  # noqa: E731
    print(json.dumps({"p50_ms": pick(0.5), "p99_ms": pick(0.99), "n": len(times)}))


def _proxy(text: str) -> tuple[str, int] | None:
    if text == "direct":
        return None
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    kind = sys.argv[1]
    if kind == "origin":
        asyncio.run(origin(sys.argv[2]))
    if kind == "tunnelbulk":
        tunnelbulk(_proxy(sys.argv[2]))
        return
    if kind == "latency":
        asyncio.run(latency(_proxy(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
        return
    host, _, port = sys.argv[2].rpartition(":")
    proxy = (host, int(port))
    if kind == "connect":
        asyncio.run(connect_rate(proxy, float(sys.argv[3]), int(sys.argv[4])))
    elif kind == "idle":
        asyncio.run(idle(proxy, int(sys.argv[3])))


if __name__ == "__main__":
    main()
