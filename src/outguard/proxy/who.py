"""Who asks: the proxy client's uid, cgroup, process and unit, from its socket.

Place in the data flow: `server` calls an `Identify` once per client connection, before any
decision. The client is local, so its end of the connection is a socket on this host: the
monitor's `Attributor` finds it with sock_diag (the client's socket is the one that sends from
its address and port to ours), its inode's process through /proc, and the process's cgroup and
systemd unit, exactly as for a blocked packet. `for: {user: ...}` and `for: {unit: ...}` rules
then mean in the proxy what they mean in the kernel.

sock_diag's answer carries the socket's uid even when /proc cannot be read (the proxy runs as
its own user after binding: other users' fd links are closed to it), so a uid is nearly always
known; a cgroup only when the process is found. `guard.identity_gap` refuses a request that a
rule about a still-unknown property could decide. The lookups are synchronous (a netlink
request, a few /proc reads) and `SockDiag` is not thread-safe: they run on one worker thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from outguard.events import BlockedPacket
from outguard.monitor.attribute import Attributor
from outguard.proxy.guard import Who
from outguard.proxy.server import Client


def _gid(pid: int, proc: str) -> int | None:
    try:
        with open(f"{proc}/{pid}/status", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("Gid:"):
                    return int(line.split()[2])  # effective gid, as the kernel's skgid
    except (OSError, ValueError, IndexError):
        return None
    return None


class SocketIdentity:
    """An `Identify` over an `Attributor` (which owns a `SockDiag` of the proxy's namespace)."""

    def __init__(self, attributor: Attributor) -> None:
        self.attributor = attributor
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="og-proxy-who")

    def lookup(self, addr: str, port: int, ours: str, our_port: int) -> Client:
        family = ipaddress.ip_address(addr.partition("%")[0]).version
        pkt = BlockedPacket(time=datetime.now(UTC), prefix="proxy", family=family, proto="tcp",
                            src=addr.partition("%")[0], dst=ours.partition("%")[0], sport=port,
                            dport=our_port)
        found = self.attributor.attribute(pkt)
        gid = _gid(found.pid, self.attributor.proc) if found.pid is not None else None
        return Client(Who(uid=found.uid, gid=gid, cgroup=found.cgroup), pid=found.pid,
                      exe=found.exe, user=found.user, unit=found.unit)

    async def __call__(self, addr: str, port: int, ours: str, our_port: int) -> Client:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.lookup, addr, port, ours, our_port)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
