"""Who asked: the process behind a client's query, and what a blocked query looks like.

Called for blocked queries only, while the client's socket still waits on loopback for our
answer: sock_diag (`kernel.sockdiag`) finds the socket's inode, /proc the process holding it.
`monitor.attribute` (written beside this) is the general attribution stage for packets; this is
the small version a resolver needs, behind the `Attributor` hook so the agent can pass its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from outguard.dns.tunnel import tunneling_hint
from outguard.errors import KernelError


@dataclass(frozen=True)
class Client:
    pid: int | None = None
    exe: str | None = None
    uid: int | None = None
    cmdline: tuple[str, ...] = ()


# (proto, client addr, client port, our addr, our port) → the process, or an empty Client
Attributor = Callable[[str, str, int, str, int], Client]


def _pid_of_inode(inode: int, proc: str = "/proc") -> int | None:
    target = f"socket:[{inode}]"
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"{proc}/{entry.name}/fd"):
                try:
                    if os.readlink(fd.path) == target:
                        return int(entry.name)
                except OSError:
                    continue
        except OSError:
            continue
    return None


def process(pid: int, proc: str = "/proc") -> Client:
    try:
        exe: str | None = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        exe = None
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as fh:
            cmdline = tuple(p.decode(errors="replace") for p in fh.read().split(b"\0") if p)
        uid = os.stat(f"{proc}/{pid}").st_uid
    except OSError:
        return Client(pid, exe)
    return Client(pid, exe, uid, cmdline)


def sockdiag_attributor(netns: str | None) -> Attributor:
    """Attribution through sock_diag in `netns` (opened once, used from one thread)."""
    from outguard.kernel.sockdiag import SockDiag  # noqa: PLC0415

    diag = SockDiag(netns)

    def attribute(proto: str, addr: str, port: int, ours: str, our_port: int) -> Client:
        try:
            found = diag.lookup(proto, addr, port, ours, our_port)
        except KernelError:
            return Client()
        if found is None or not found.inode:
            return Client(uid=found.uid if found else None)
        pid = _pid_of_inode(found.inode)
        return process(pid) if pid is not None else Client(uid=found.uid)

    return attribute


def classify(qname: str, client: Client, unlisted: bool) -> list[str]:
    """Signatures of a blocked query, most specific first."""
    out = []
    exe = os.path.basename(client.exe or (client.cmdline[0] if client.cmdline else ""))
    if unlisted and "java" in exe:
        out.append("java-unknown-name: a Java process resolving a name no rule allows"
                   " (JNDI / Log4Shell callback?)")
    hint = tunneling_hint(qname)
    if hint is not None:
        out.append(f"dns-tunneling: {hint}")
    return out
