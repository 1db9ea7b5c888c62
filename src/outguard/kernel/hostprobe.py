"""What `outguard doctor` asks the host: the nftables tools, the kernel's NFLOG, the sockets
listening on a port and who holds them, systemd's view of a unit.

Place in the data flow: beside the rest of `kernel/` (the only code that runs programs and
reads the kernel's tables); `service.doctor` turns these facts into ok/warn/fail lines. Every
probe answers in the network namespace of the thread that asks (`/proc/thread-self/net`), so
`doctor --netns NAME` sees that namespace. Each probe returns facts, never raises for a host
that lacks something: a missing thing is the answer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from outguard.errors import KernelError
from outguard.kernel import procs

# /proc/thread-self/net, not /proc/net (the thread group leader's): the namespace of the thread
# that asks, also a `kernel.netns.NetnsThread`
PROC_NET = "/proc/thread-self/net"
NFLOG_PROC = f"{PROC_NET}/netfilter/nfnetlink_log"
_TCP_LISTEN, _UDP_UNCONN = "0A", "07"


def nft_version() -> str | None:
    """`nft --version`'s version ("1.0.6"), or None when nft is not installed."""
    try:
        done = procs.run(["nft", "--version"], timeout=10)
    except KernelError:
        return None
    found = re.search(r"v(\d+(?:\.\d+)+)", done.stdout)
    return found.group(1) if found else None


def libnftables_loads() -> str | None:
    """None when libnftables.so.1 loads here; else why not."""
    from outguard.kernel import libnft  # noqa: PLC0415 - ctypes only when asked

    try:
        libnft._load()
    except KernelError as exc:
        return str(exc)
    return None


def nflog_state(release: str | None = None, modules: Path = Path("/lib/modules")) -> str:
    """"loaded" (the kernel serves NFLOG now), "builtin", "module" (loaded at the first
    `log group` rule), or "missing"."""
    if os.path.exists(NFLOG_PROC):
        return "loaded"
    tree = modules / (release or os.uname().release)
    try:
        if "nfnetlink_log.ko" in (tree / "modules.builtin").read_text():
            return "builtin"
    except OSError:
        pass
    return "module" if any(tree.glob("kernel/net/netfilter/nfnetlink_log.ko*")) else "missing"


@dataclass(frozen=True)
class Listener:
    """A socket bound to a port: its address, and the process holding it when one is found."""
    proto: str
    addr: str
    pid: int | None
    cmdline: tuple[str, ...]


def _hex_addr(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]  # four host-order 32-bit words
    import ipaddress  # noqa: PLC0415

    return str(ipaddress.IPv6Address(b"".join(words)))


def _holders() -> dict[int, int]:
    """Socket inode → pid, over every process /proc lets us read."""
    found: dict[int, int] = {}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    found.setdefault(int(target[8:-1]), int(pid_dir.name))
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> tuple[str, ...]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def listeners(port: int, protos: tuple[str, ...] = ("tcp", "udp")) -> list[Listener]:
    """Every socket of this network namespace bound to `port` (TCP listening, UDP bound)."""
    rows: list[tuple[str, str, int]] = []
    for proto in protos:
        for family in ("", "6"):
            try:
                lines = Path(f"{PROC_NET}/{proto}{family}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                addr, _, hexport = fields[1].partition(":")
                wanted = _TCP_LISTEN if proto == "tcp" else _UDP_UNCONN
                if int(hexport, 16) == port and fields[3] == wanted:
                    rows.append((proto, _hex_addr(addr), int(fields[9])))
    if not rows:
        return []
    holders = _holders()
    out = []
    for proto, addr, inode in rows:
        pid = holders.get(inode)
        out.append(Listener(proto, addr, pid, _cmdline(pid) if pid is not None else ()))
    return out


def systemd_running() -> bool:
    """True when systemd is the init system here (sd_booted's test)."""
    return os.path.isdir("/run/systemd/system")


def unit_state(unit: str) -> tuple[str, str]:
    """(`systemctl is-active`, `systemctl is-enabled`) of `unit`: "active", "inactive",
    "failed", ... and "enabled", "disabled", "not-found", ..."""
    answers = []
    for verb in ("is-active", "is-enabled"):
        try:
            done = procs.run(["systemctl", verb, unit], timeout=15)
            answers.append(done.stdout.strip() or done.stderr.strip() or "unknown")
        except KernelError as exc:
            answers.append(f"unknown ({exc})")
    return answers[0], answers[1]
