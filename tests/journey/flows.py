"""A factory of learned flows for the journey tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from outguard.events import LearnedFlow

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def flow(dst: str, port: int | None = 443, proto: str = "tcp", *, names: tuple[str, ...] = (),
         exe: str | None = "/usr/bin/curl", user: str | None = "root", uid: int | None = 0,
         unit: str | None = None, cgroup: str | None = None, count: int = 1,
         decision: str = "", signature: str | None = None, severity: str | None = None,
         age: int = 0, **extra: Any) -> LearnedFlow:
    if unit is not None and cgroup is None:
        cgroup = f"/system.slice/{unit}"
    first = T0 + timedelta(minutes=age)
    return LearnedFlow(exe=exe, cmdline=(exe or "?",), user=user, uid=uid, unit=unit,
                       cgroup=cgroup, container=extra.get("container"), dst=dst, port=port,
                       proto=proto, names=names, count=count, first_seen=first,
                       last_seen=first + timedelta(minutes=5), decision=decision,
                       signature=signature, severity=severity)
