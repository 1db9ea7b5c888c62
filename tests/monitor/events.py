"""Builders of monitor records for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from outguard.events import Attribution, BlockedPacket, Event

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def packet(dst: str = "203.0.113.7", dport: int | None = 443, *, rule: str = "default",
           proto: str = "tcp", uid: int | None = 1000, at: float = 0.0) -> BlockedPacket:
    return BlockedPacket(time=T0 + timedelta(seconds=at), prefix=f"og:{rule}",
                         family=6 if ":" in dst else 4, proto=proto,
                         src="2001:db8::2" if ":" in dst else "192.0.2.2", dst=dst,
                         sport=40000, dport=dport, uid=uid)


def attribution(exe: str | None = "/usr/bin/curl", *, pid: int | None = 4242,
                parent: str | None = None, user: str | None = "app", uid: int | None = 1000,
                **kw: Any) -> Attribution:
    if exe is None and pid is None:
        return Attribution(uid=uid, failure=kw.get("failure", "socket gone"))
    return Attribution(pid=pid, exe=exe, cmdline=(exe or "",), user=user, uid=uid,
                       parent_exe=parent, **kw)


def event(dst: str = "203.0.113.7", dport: int | None = 443, *, exe: str | None = "/usr/bin/curl",
          rule: str = "default", proto: str = "tcp", names: tuple[str, ...] = ("x.example",),
          feed: str | None = None, parent: str | None = None, user: str | None = "app",
          uid: int | None = 1000, pid: int | None = 4242, at: float = 0.0,
          names_known: bool = True) -> Event:
    return Event(packet(dst, dport, rule=rule, proto=proto, uid=uid, at=at),
                 attribution(exe, pid=pid, parent=parent, user=user, uid=uid),
                 names=names, feed=feed, names_known=names_known)
