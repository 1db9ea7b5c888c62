"""systemd's readiness protocol (sd_notify) for `outguard run` under `Type=notify`.

`READY=1` goes out once the agent serves (NFLOG bound, the resolver listening): units ordered
after the agent find its resolver answering, and `systemctl reload` is not delivered before the
agent handles SIGHUP (its default action would end the process). `STATUS=` shows in
`systemctl status` which policy the agent serves. Outside systemd (no `NOTIFY_SOCKET`) every
call does nothing. Eight lines of protocol: not worth a dependency.
"""

from __future__ import annotations

import contextlib
import os
import socket


def notify(*fields: str) -> None:
    """Send `KEY=value` fields to systemd, if it is listening; never fails the caller."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where or not fields:
        return
    addr = "\0" + where[1:] if where.startswith("@") else where
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(addr)
        sock.sendall("\n".join(fields).encode())
