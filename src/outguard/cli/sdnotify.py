"""systemd's readiness protocol (sd_notify) for `outguard run` under `Type=notify`.

`READY=1` goes out once the agent serves (NFLOG bound, the resolver listening): units ordered
after the agent find its resolver answering, and `systemctl reload` is not delivered before the
agent handles SIGHUP (its default action would end the process). `STATUS=` shows in
`systemctl status` which policy the agent serves. `WATCHDOG=1` goes out every half of the
unit's `WatchdogSec=` from the agent's event loop (`Watchdog`), `STOPPING=1` on SIGTERM.
Outside systemd (no `NOTIFY_SOCKET`) every call does nothing. A few lines of protocol: not
worth a dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping


def notify(*fields: str) -> None:
    """Send `KEY=value` fields to systemd, if it is listening; never fails the caller."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where or not fields:
        return
    addr = "\0" + where[1:] if where.startswith("@") else where
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(addr)
        sock.sendall("\n".join(fields).encode())


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between `WATCHDOG=1` pings: half of systemd's `WATCHDOG_USEC` (its advice), or
    None when no watchdog is asked of this process (`WATCHDOG_PID` names another one)."""
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Watchdog:
    """`WATCHDOG=1` every `interval` seconds from the agent's event loop (not a thread): a loop
    that hangs stops the pings, and systemd kills and restarts the unit (`Restart=on-failure`).
    A timer callback rather than a task: it owns nothing and cannot outlive `stop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop, self.interval = loop, interval
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """The first ping now, then one every interval until `stop`."""
        notify("WATCHDOG=1")
        self._handle = self._loop.call_later(self.interval, self.start)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
