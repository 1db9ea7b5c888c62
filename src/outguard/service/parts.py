"""The agent's default kernel parts and its internal alert sink, for `service.runner`.

Place in the data flow: `runner._build` / `runner._watch_kernel` take the packet source (NFLOG)
and the attributor (sock_diag + /proc) from here when a caller (a test, the lab) gives none,
and every alert also goes to the `MemorySink` (what `AgentHandle.alerts` shows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from outguard.monitor.agent import Attributor, PacketSource


class MemorySink:
    """Keeps every alert it is given (the handle's view of what was alerted). Internal: not a
    sink of the policy, so not in the alert metrics, and it does not widen what is alerted."""

    name = "memory"
    internal = True

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []

    async def send(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)

    async def close(self) -> None:
        return None


def default_source(group: int, netns: str | None) -> PacketSource:
    from outguard.kernel.nflog import NflogSource  # noqa: PLC0415 - needs netlink

    return NflogSource(group, netns=netns)


def default_attributor(netns: str | None) -> tuple[Attributor, Callable[[], None]]:
    """sock_diag (in `netns`) + /proc; and how to release it."""
    from outguard.kernel.sockdiag import SockDiag  # noqa: PLC0415 - needs netlink
    from outguard.monitor.attribute import Attributor as ProcAttributor  # noqa: PLC0415

    diag = SockDiag(netns=netns)
    try:
        return ProcAttributor(diag), diag.close
    except BaseException:
        diag.close()
        raise
