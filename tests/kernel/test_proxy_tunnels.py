"""Thousands of idle CONNECT tunnels through the real proxy (`outguard proxy serve`, as
outguard-proxy) in bounded memory, all still working afterwards.

A tunnel holds two descriptors in the proxy; this machine's hard RLIMIT_NOFILE is 20,000 per
process (the test raises the soft limit to it: the proxy raises its own), so the default is
9,900 tunnels, not 10,000 (OG_PROXY_TUNNELS sets another count where the limit allows it).
The origin (an echo server) and the clients are separate processes in the namespace.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from outguard.kernel import netns as ns

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

TUNNELS = int(os.environ.get("OG_PROXY_TUNNELS", "9900"))
MAX_RSS_MB = 150.0  # issue 18's bound at 10,000 tunnels
POLICY = """version: 1
allow:
  - {name: api, to: [api.example.test], ports: [443]}
proxy:
  listen: ["127.0.0.1:3128"]
  limits: {connections: 20000, idle_timeout: 600}
"""
ECHO = r'''
import asyncio, resource
_s, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
async def main():
    await asyncio.start_server(echo, "198.51.100.10", 443, backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''
CLIENTS = r'''
import asyncio, resource, sys
_s, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def tunnel(i):
    reader, writer = await asyncio.open_connection("127.0.0.1", 3128)
    writer.write(b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert b" 200 " in await reader.readuntil(b"\r\n\r\n")
    writer.write(b"hi%d" % i)
    assert await reader.readexactly(len(b"hi%d" % i)) == b"hi%d" % i
    return reader, writer
async def main(count):
    tunnels = []
    for start in range(0, count, 100):  # 100 at a time: the proxy's descriptors are counted
        tunnels += await asyncio.gather(*(tunnel(i) for i in range(start, min(count, start + 100))))
    print("open", len(tunnels), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for i, (reader, writer) in enumerate(tunnels):  # every one still carries bytes
        writer.write(b"again%d" % i)
    for i, (reader, writer) in enumerate(tunnels):
        assert await reader.readexactly(len(b"again%d" % i)) == b"again%d" % i
    print("all", len(tunnels), "answered", flush=True)
asyncio.run(main(int(sys.argv[1])))
'''


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def test_many_idle_tunnels_in_bounded_memory(netns: str) -> None:
    ns.run(netns, ["ip", "addr", "add", "198.51.100.10/32", "dev", "lo"])
    etc = Path("/etc/netns") / netns
    etc.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix="og-proxy-tunnels-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        (etc / "hosts").write_text("127.0.0.1 localhost\n198.51.100.10 api.example.test\n")
        (tmp / "policy.yaml").write_text(POLICY)
        tmp.chmod(0o755)
        (tmp / "policy.yaml").chmod(0o644)

        def start(argv: list[str], **kw: object) -> subprocess.Popen[str]:
            proc = subprocess.Popen(ns.exec_argv(netns, argv), text=True, **kw)  # type: ignore[call-overload]
            procs.append(proc)
            return proc  # type: ignore[no-any-return]

        origin = start([sys.executable, "-c", ECHO], stdout=subprocess.PIPE)
        assert origin.stdout is not None and origin.stdout.readline().strip() == "ready"
        outguard = str(Path(sys.executable).parent / "outguard")
        log = (tmp / "proxy.log").open("w")
        proxy = start([outguard, "proxy", "serve", str(tmp / "policy.yaml")],
                      stdout=subprocess.DEVNULL, stderr=log)
        until = time.monotonic() + 30
        while "listening" not in (tmp / "proxy.log").read_text():
            assert proxy.poll() is None and time.monotonic() < until, (tmp / "proxy.log").read_text()
            time.sleep(0.1)
        pid = int(ns.run(netns, ["pgrep", "-n", "-f", f"proxy serve {tmp}"]).stdout.split()[0])
        at_rest = rss_mb(pid)
        clients = start([sys.executable, "-c", CLIENTS, str(TUNNELS)], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
        assert clients.stdout is not None and clients.stdin is not None
        opened = clients.stdout.readline().split()
        assert opened == ["open", str(TUNNELS)], (tmp / "proxy.log").read_text()[-3000:]
        loaded = rss_mb(pid)
        clients.stdin.write("go\n")
        clients.stdin.flush()
        assert clients.stdout.readline().split() == ["all", str(TUNNELS), "answered"]
        print(f"proxy RSS {at_rest:.1f} MB at rest, {loaded:.1f} MB with {TUNNELS} tunnels"
              f" ({(loaded - at_rest) * 1024 / TUNNELS:.1f} kB each)")
        # what 10,000 tunnels would cost at this rate must stay within the bound
        assert at_rest + (loaded - at_rest) * 10_000 / TUNNELS < MAX_RSS_MB
        assert proxy.poll() is None
    finally:
        for proc in reversed(procs):
            proc.kill()
            proc.wait(10)
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
