"""The proxy as `outguard run`'s child: new policies come on stdin, what it did goes to stdout.

Place in the data flow: `service.proxyrun` starts `outguard proxy serve POLICY --agent` and
keeps both pipes. Each stdin line is one JSON object `{"policy": TEXT}`: the policy the agent
now serves, lowered here (beside POLICY's path, so its list files resolve as for the agent) and
swapped in for new requests, open tunnels untouched (`serve`'s reload). Stdout carries one JSON
line per decided request (`serve.Lines`), `{"listening": [...]}` once bound, and
`{"connections": N}` every few seconds: the agent turns refusals into incidents, counts the
rest per rule, and shows the proxy in `outguard status` and its metrics.

The text comes through a pipe rather than by reading the file again at a reload: the proxy
runs as its own user, which may not read a policy kept for root.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable

STATUS_EVERY = 5.0


class StdinPolicies:
    """Reads `{"policy": TEXT}` lines from fd 0 on the loop; `on_policy(TEXT)` for each.
    The end of stdin (the agent is gone) calls `on_end`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_policy: Callable[[str], None],
                 on_end: Callable[[], None], fd: int = 0) -> None:
        self.loop, self.on_policy, self.on_end, self.fd = loop, on_policy, on_end, fd
        self.buffer = b""
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            self.loop.remove_reader(self.fd)
            self.on_end()
            return
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            try:
                text = json.loads(line)["policy"]
            except (ValueError, KeyError, TypeError):
                print("outguard proxy: a control line that is no {\"policy\": TEXT}: ignored",
                      file=sys.stderr, flush=True)
                continue
            if isinstance(text, str):
                self.on_policy(text)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)


def emit(doc: dict[str, object]) -> None:
    print(json.dumps(doc), flush=True)


def every(loop: asyncio.AbstractEventLoop, active: Callable[[], int]) -> None:
    """`{"connections": N}` now and every STATUS_EVERY seconds."""
    emit({"connections": active()})
    loop.call_later(STATUS_EVERY, every, loop, active)
