"""The egress proxy as part of `outguard run`: a child process, told each new policy.

Place in the data flow: `service.live` starts a `ProxyRun` when the policy in service has a
`proxy:` section, and hands it every new policy at a reload (`update`). The child is `outguard
proxy serve POLICY --agent` (`proxy.control`): it binds as root and runs as `proxy.user`, so
the code that parses what local processes send keeps no root, as with `outguard proxy serve`
by hand. Its stdout lines (requests decided, listening, connections open) go to
`monitor.proxy_incidents.ProxyRecords`: refusals become incidents through the agent's
pipeline, every decision is counted for the metrics and `outguard status`.

A new policy with the same `proxy:` section goes down the child's stdin: new requests are
decided by it, open tunnels go on. A changed `proxy:` section (listen, user, limits,
transparent) needs new sockets: the child is restarted, which ends its open connections. A
child that dies is started again after a pause, doubling up to a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Literal

from outguard.kernel.privsep import Child, spawn_piped
from outguard.monitor.proxy_incidents import ProxyRecords
from outguard.policy.loaded import Policy
from outguard.policy.proxyconf import ProxyConfig

log = logging.getLogger("outguard.monitor")
Step = Literal["same", "restart", "stop"]


def step(old: ProxyConfig, new: ProxyConfig | None) -> Step:
    """What a policy change does to the running proxy."""
    if new is None:
        return "stop"
    return "same" if new == old else "restart"


class ProxyRun:
    def __init__(self, policy: Policy, netns: str | None, records: ProxyRecords) -> None:
        assert policy.doc.proxy is not None
        self.policy, self.config, self.netns = policy, policy.doc.proxy, netns
        self.records = records
        self.proc: Child | None = None
        self.restarts = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def _argv(self) -> list[str]:
        argv = ["proxy", "serve", self.policy.source, "--agent"]
        return argv + (["--netns", self.netns] if self.netns else [])

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outguard-proxy")

    async def _run(self) -> None:
        delay = 1.0
        while not self._closing:
            code = await self._once()
            if self._closing:
                return
            log.error("the egress proxy exited (code %s): started again in %.0f s", code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
            self.restarts += 1

    async def _once(self) -> int:
        """One child, from its start to its end: its exit code."""
        proc = self.proc = await asyncio.to_thread(spawn_piped, "outguard", self._argv())
        reader = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), proc.stdout)
        try:
            await self._read(reader)
        finally:
            transport.close()
            self.records.stopped()
        return await asyncio.to_thread(proc.wait)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                self.records.handle(doc)

    def send(self, policy: Policy) -> None:
        """The new policy to the child (no await: `Live.switch` calls this)."""
        self.policy = policy
        proc = self.proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return  # a child started later reads the file itself
        try:
            proc.stdin.write(json.dumps({"policy": policy.text}).encode() + b"\n")
            proc.stdin.flush()
        except OSError as exc:
            log.error("cannot send the new policy to the egress proxy: %s", exc)

    async def close(self) -> None:
        self._closing = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)
            except TimeoutError:
                proc.kill()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
