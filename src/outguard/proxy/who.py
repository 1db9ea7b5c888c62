"""Who asks: the proxy client's uid, cgroup, process and unit, from its socket.

Place in the data flow: `server` calls an `Identify` once per client connection, before any
decision. The client is local, so its end of the connection is a socket on this host: the
monitor's `Attributor` finds it with sock_diag (the client's socket is the one that sends from
its address and port to ours), its inode's process through /proc, and the process's cgroup and
systemd unit, exactly as for a blocked packet. `for: {user: ...}` and `for: {unit: ...}` rules
then mean in the proxy what they mean in the kernel.

Only the socket's uid is asked for (one sock_diag request, ~20 µs) unless a rule needs the
client's gid or cgroup, or the request is refused (the record then names the process). The uid
is known even when /proc cannot be read (the proxy runs as its own user after binding: other
users' fd links are closed to it); a gid and cgroup only when the process is found.
`guard` refuses a request that a rule about a still-unknown property could decide.
The lookups are synchronous (a netlink request, a few /proc reads) and `SockDiag` is not
thread-safe: they run on one worker thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from outguard.errors import KernelError
from outguard.events import BlockedPacket
from outguard.monitor.attribute import Attributor, SocketLookup
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
    """An `Identify` over an `Attributor` (which owns a `SockDiag` of the proxy's namespace)
    for the process, and a second `SockDiag` of the same namespace for the uid alone: that
    request is answered at once by the kernel and made on the event loop (a hop to a worker
    thread and back costs more than the request: the GIL hand-over)."""

    def __init__(self, attributor: Attributor, sockets: SocketLookup) -> None:
        self.attributor = attributor
        self.sockets = sockets
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="og-proxy-who")

    def lookup(self, addr: str, port: int, ours: str, our_port: int, full: bool) -> Client:
        ends = (addr.partition("%")[0], port, ours.partition("%")[0], our_port)
        if not full:  # one sock_diag request: the socket's uid
            sock = self.sockets.lookup("tcp", ends[0], port, ends[2], our_port)
            uid = sock.uid if sock is not None else None
            return Client(Who(uid=uid), user=self.attributor.user(uid), ends=ends)
        pkt = BlockedPacket(time=datetime.now(UTC), prefix="proxy",
                            family=ipaddress.ip_address(ends[0]).version, proto="tcp",
                            src=ends[0], dst=ends[2], sport=port, dport=our_port)
        found = self.attributor.attribute(pkt)
        gid = _gid(found.pid, self.attributor.proc) if found.pid is not None else None
        return Client(Who(uid=found.uid, gid=gid, cgroup=found.cgroup), pid=found.pid,
                      exe=found.exe, user=found.user, unit=found.unit, ends=ends, full=True)

    async def __call__(self, addr: str, port: int, ours: str, our_port: int,
                       full: bool) -> Client:
        if not full:
            try:
                return self.lookup(addr, port, ours, our_port, False)
            except KernelError:
                return Client(Who())  # unknown: a rule about users that could match refuses
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.lookup, addr, port, ours, our_port,
                                          full)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
