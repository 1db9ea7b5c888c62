"""Attribution: which process sent a blocked packet. BlockedPacket → Attribution.

Place in the data flow: after `kernel.nflog_decode` (via `kernel.nflog.NflogSource`), before
classification. For each packet: sock_diag (`kernel.sockdiag`) finds the sending socket and its
inode; an inode → pid index built from ``/proc/<pid>/fd`` links names the process; ``/proc/<pid>``
gives exe, cmdline, user, parent, cgroup, systemd unit and container id.

    with SockDiag(netns="ogt-1234") as diag:
        attributor = Attributor(diag)                # scans /proc once, then incrementally
        a = attributor.attribute(pkt)                # sync, cached; never raises for a lost race
        a.pid, a.exe, a.unit, a.container, a.failure  # failure: why, when there is no pid

Never a full /proc scan per event. The index remembers every socket inode it has seen and the
pids it has listed. On a miss it lists /proc (names only), forgets dead pids, and reads the fd
links of the *new* pids only (a short-lived process that just connected is one of them); if the
socket is still not found, it re-reads the known processes of the socket's uid (sock_diag's,
the same as NFLOG's NFULA_UID) and root's, youngest first, stopping at the first hit, but only
those last read before the packet arrived, and within a budget of process reads per second
(a flood of misses costs bounded work). Only then, at most once per
`full_rescan_interval`, every other process (a socket opened before a setuid). Results are
cached per socket inode: a SYN retried every second is looked up in sock_diag again (cheap, and
it tells that it is the same socket) but not in /proc.

A blocked TCP connect stays in SYN_SENT while it retries, so it is attributed as long as its
process lives; UDP only while its socket is open (best effort). A failure is recorded in
`Attribution.failure` with the reason, and counted in `Attributor.stats`.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from outguard.errors import KernelError
from outguard.events import Attribution, BlockedPacket
from outguard.kernel.sockdiag import SocketInfo
from outguard.policy import accounts

_CONTAINER_RES = (
    # systemd scopes of the runtimes: docker-<id>.scope, cri-containerd-<id>.scope, crio-…, libpod-…
    re.compile(r"(docker|cri-containerd|crio|libpod|containerd)-([0-9a-f]{64})\.scope"),
    # cgroupfs drivers: /docker/<id>, /kubepods/…/<id>, /containerd/<id>
    re.compile(r"/(docker|kubepods|containerd|libpod_parent|machine\.slice)[^ ]*?/([0-9a-f]{64})(?:/|$)"),
    re.compile(r"/(lxc)(?:\.payload\.|/)([^/]+)"),
)
_UNIT_RE = re.compile(r"[^/]+\.(?:service|scope)$")
_RUNTIMES = {"cri-containerd": "containerd", "libpod": "podman", "libpod_parent": "podman",
             "crio": "cri-o", "machine.slice": "machine"}


class SocketLookup(Protocol):
    def lookup(self, proto: str, src: str, sport: int, dst: str, dport: int,
               ifindex: int = 0) -> SocketInfo | None: ...



# Options whose value is a secret: an incident is stored, alerted and sent to the fleet, and a
# command line such as `outguard run --fleet URL --enroll TOKEN` must not carry it there.
SECRET_OPTIONS = ("--enroll", "--token", "--password", "--passwd", "--secret", "--api-key")


def redact(argv: list[str]) -> tuple[str, ...]:
    """`argv` with the values of SECRET_OPTIONS (`--opt VALUE` and `--opt=VALUE`) replaced."""
    out: list[str] = []
    hide = False
    for arg in argv:
        if hide:
            out.append("***")
            hide = False
            continue
        name, eq, _value = arg.partition("=")
        if name.lower() in SECRET_OPTIONS:
            out.append(f"{name}=***" if eq else arg)
            hide = not eq
            continue
        out.append(arg)
    return tuple(out)

def parse_cgroup(text: str) -> tuple[str | None, str | None, str | None]:
    """(cgroup path, systemd unit, container) from the text of ``/proc/<pid>/cgroup``.

    The unified (v2) line ``0::/path`` wins; on a hybrid hierarchy the ``name=systemd`` line.
    The unit is the innermost ``*.service`` / ``*.scope`` component; the container is
    ``<runtime>:<id>`` (docker, containerd, podman, cri-o, kubepods, lxc).
    """
    lines = [line.split(":", 2) for line in text.splitlines() if line.count(":") >= 2]
    path = next((p for h, c, p in lines if h == "0" and c == ""), None)
    if path in (None, "/"):  # hybrid hierarchy: the v2 tree may be empty, systemd's is not
        path = next((p for _h, c, p in lines if c == "name=systemd"), path)
    if path is None and lines:
        path = lines[0][2]
    if not path:
        return None, None, None
    units = [part for part in path.split("/") if _UNIT_RE.fullmatch(part)]
    unit = units[-1] if units else None
    container = None
    for pattern in _CONTAINER_RES:
        if m := pattern.search(path):
            container = f"{_RUNTIMES.get(m.group(1), m.group(1))}:{m.group(2)}"
            break
    return path, unit, container


def parse_stat(text: str) -> tuple[int, int]:
    """(ppid, starttime) from ``/proc/<pid>/stat``; comm may hold spaces and parentheses."""
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[19])


class InodeIndex:
    """socket inode → pid, from ``/proc/<pid>/fd``, refreshed incrementally (see module doc).

    `clock` is wall-clock seconds (the `since` of `find` is a packet's time). A known process
    is read again for a miss only if its last read is older than the packet (else the socket
    would have been seen): the packets of one received batch share their time, so a batch of
    misses re-reads each process once at most. On top, re-reads draw from a budget of
    `reread_budget` process reads per second: a flood of misses costs bounded work.
    """

    def __init__(self, proc: str = "/proc", *, full_rescan_interval: float = 1.0,
                 reread_budget: float = 5000, clock: Callable[[], float] = time.time) -> None:
        self.proc = proc
        self.full_rescan_interval = full_rescan_interval
        self.reread_budget = reread_budget
        self.clock = clock
        self._tokens = reread_budget
        self._tokens_at = clock()
        self.budget_exhausted = 0  # misses cut short by the budget
        self._owner: dict[int, int] = {}  # inode → pid
        self._sockets: dict[int, set[int]] = {}  # pid → its socket inodes at the last read
        self._read_at: dict[int, float] = {}  # pid → when its fds were last read
        self._listed: set[int] = set()  # pids seen at the last listing
        self._last_full = -1e18
        self.listings = 0  # /proc listings
        self.fd_scans = 0  # /proc/<pid>/fd directories read

    def _pids(self) -> list[int]:
        self.listings += 1
        return [int(n) for n in os.listdir(self.proc) if n.isdigit()]

    def scan(self, pid: int) -> set[int]:
        """Read the socket inodes of one process; remember them. Empty if it is gone."""
        base = f"{self.proc}/{pid}/fd"
        self.fd_scans += 1
        self._read_at[pid] = self.clock()
        found: set[int] = set()
        try:
            names = os.listdir(base)
        except OSError:  # gone, or not ours to read
            names = []
        for fd in names:
            try:
                link = os.readlink(f"{base}/{fd}")
            except OSError:
                continue  # closed meanwhile
            if link.startswith("socket:["):
                found.add(int(link[8:-1]))
        for inode in self._sockets.get(pid, set()) - found:
            if self._owner.get(inode) == pid:
                del self._owner[inode]
        for inode in found:
            self._owner.setdefault(inode, pid)  # shared after fork: the first holder seen
        if found:
            self._sockets[pid] = found
        else:
            self._sockets.pop(pid, None)
        return found

    def _forget(self, pid: int) -> None:
        self._read_at.pop(pid, None)
        for inode in self._sockets.pop(pid, set()):
            if self._owner.get(inode) == pid:
                del self._owner[inode]

    def _uid_of(self, pid: int) -> int | None:
        try:
            return os.stat(f"{self.proc}/{pid}").st_uid
        except OSError:
            return None

    def warm(self) -> None:
        """Read every process once (at start-up, not per event)."""
        listed = self._pids()
        for pid in listed:
            self.scan(pid)
        self._listed = set(listed)

    def find(self, inodes: Iterable[int], uid: int | None = None,
             since: float | None = None) -> dict[int, int]:
        """pid of each inode that a process holds (inodes no process holds are left out).

        `uid`: the socket's owner (narrows the re-reads); `since`: when the packet was sent
        (clock seconds; default now).
        """
        want = set(inodes)
        out = {i: self._owner[i] for i in want if i in self._owner}
        missing = want - out.keys()
        if not missing:
            return out

        def take(pids: Iterable[int], budgeted: bool = True) -> bool:
            for pid in pids:
                if budgeted:
                    if self._tokens < 1:
                        self.budget_exhausted += 1
                        return False
                    self._tokens -= 1
                for inode in self.scan(pid) & missing:
                    out[inode] = self._owner.get(inode, pid)
                    missing.discard(inode)
                if not missing:
                    return True
            return False

        listed = set(self._pids())
        for pid in self._listed - listed:
            self._forget(pid)
        new = sorted(listed - self._listed, reverse=True)  # youngest first
        self._listed = listed
        if take(new, budgeted=False):  # each pid once in its life: no budget needed
            return out
        now = self.clock()
        self._tokens = min(self.reread_budget,
                           self._tokens + (now - self._tokens_at) * self.reread_budget)
        self._tokens_at = now
        stale = now if since is None else since
        new_set = set(new)
        old = [p for p in sorted(listed, reverse=True)
               if p not in new_set and self._read_at.get(p, -1e18) < stale]
        # NFULA_UID is the fsuid of the socket's opener; /proc/<pid> belongs to the euid
        # (root when the process is not dumpable): try those owners first.
        if uid is not None:
            owners = {uid, 0}
            same = [p for p in old if self._uid_of(p) in owners]
            if take(same):
                return out
            done = set(same)
            old = [p for p in old if p not in done]
        if old and now - self._last_full >= self.full_rescan_interval:
            self._last_full = now  # a socket opened before a setuid: rare, and rate-limited
            take(old)
        return out


@dataclass(frozen=True)
class _Facts:
    pid: int
    exe: str | None
    cmdline: tuple[str, ...]
    uid: int | None
    ppid: int | None
    cgroup: str | None
    unit: str | None
    container: str | None


class Attributor:
    """BlockedPacket → Attribution, through sock_diag and /proc, cached (see module doc)."""

    def __init__(self, sockets: SocketLookup, *, proc: str = "/proc", cache_size: int = 65536,
                 facts_ttl: float = 5.0, clock: Callable[[], float] = time.time,
                 warm: bool = True) -> None:
        self.sockets = sockets
        self.proc = proc
        self.index = InodeIndex(proc, clock=clock)
        self.clock = clock
        self.facts_ttl = facts_ttl
        self.cache_size = cache_size
        self._by_inode: OrderedDict[int, Attribution] = OrderedDict()
        self._facts: dict[int, tuple[float, _Facts]] = {}
        self._users: dict[int, str | None] = {}
        self.stats: Counter[str] = Counter()
        if warm:
            self.index.warm()

    # --- /proc ------------------------------------------------------------------------------

    def _read(self, path: str) -> str:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")

    def facts(self, pid: int) -> _Facts | None:
        """What /proc says about `pid` (cached for `facts_ttl`); None if it is gone."""
        now = self.clock()
        hit = self._facts.get(pid)
        if hit is not None and now - hit[0] < self.facts_ttl:
            return hit[1]
        base = f"{self.proc}/{pid}"
        try:
            ppid, _start = parse_stat(self._read(f"{base}/stat"))
            raw_cmd = self._read(f"{base}/cmdline")
            status = self._read(f"{base}/status")
            cgroup_text = self._read(f"{base}/cgroup")
        except (OSError, ValueError, IndexError):
            return None
        try:
            exe: str | None = os.readlink(f"{base}/exe")
        except OSError:
            exe = None  # a kernel thread, or a process that is exiting
        uid = next((int(line.split()[2]) for line in status.splitlines()
                    if line.startswith("Uid:")), None)  # effective uid
        cgroup, unit, container = parse_cgroup(cgroup_text)
        facts = _Facts(pid, exe, redact(raw_cmd.split("\0")[:-1] if raw_cmd else []), uid,
                       ppid or None, cgroup, unit, container)
        if len(self._facts) > 4 * self.cache_size:
            self._facts.clear()
        self._facts[pid] = (now, facts)
        return facts

    def user(self, uid: int | None) -> str | None:
        if uid is None:
            return None
        if uid not in self._users:
            self._users[uid] = accounts.user_name(uid)
        return self._users[uid]

    # --- attribution ------------------------------------------------------------------------

    def _fail(self, why: str, kind: str, uid: int | None) -> Attribution:
        self.stats[f"failed:{kind}"] += 1
        return Attribution(uid=uid, user=self.user(uid), failure=why, failure_kind=kind)

    def attribute(self, pkt: BlockedPacket) -> Attribution:
        """Who sent `pkt`. Never raises for a process or socket that is already gone."""
        if pkt.hook != "output":
            return self._fail(f"{pkt.hook} packet: not sent by a local process", "not-local",
                              None)
        if pkt.proto not in ("tcp", "udp") or pkt.sport is None or pkt.dport is None:
            return self._fail(f"no socket lookup for {pkt.proto} (only tcp and udp)",
                              "proto", pkt.uid)
        try:
            sock = self.sockets.lookup(pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport,
                                       pkt.ifindex_out or 0)
        except KernelError as exc:
            return self._fail(f"sock_diag failed: {exc}", "sockdiag", pkt.uid)
        if sock is None:
            # with a uid, NFLOG saw a socket (a process's): it closed before the lookup (a
            # connect given up at once, a reject); without, no socket sent it (the kernel)
            return self._fail(f"{pkt.proto} socket {pkt.src}:{pkt.sport} → {pkt.dst}:{pkt.dport}"
                              " not found (closed before it could be looked up)",
                              "closed" if pkt.uid is not None else "no-socket", pkt.uid)
        if sock.inode == 0:
            # a TIME_WAIT socket says uid 0 whoever owned it: the packet's uid (the socket's
            # owner when it sent) is the truth; a learned flow of nobody was recorded as root's
            return self._fail("the socket has no process any more (closing or orphaned)",
                              "orphan", pkt.uid if pkt.uid is not None else sock.uid)
        hit = self._by_inode.get(sock.inode)
        if hit is not None:
            self._by_inode.move_to_end(sock.inode)
            self.stats["cached"] += 1
            return hit
        pid = self.index.find([sock.inode], sock.uid, pkt.time.timestamp()).get(sock.inode)
        if pid is None:
            return self._fail(f"no process holds socket inode {sock.inode} (it exited, "
                              "or its /proc is not readable)", "no-process", sock.uid)
        facts = self.facts(pid)
        if facts is None:
            return self._fail(f"process {pid} exited before it could be read", "exited",
                              sock.uid)
        parent = self.facts(facts.ppid) if facts.ppid else None
        uid = facts.uid if facts.uid is not None else sock.uid
        result = Attribution(
            pid=pid, exe=facts.exe, cmdline=facts.cmdline, user=self.user(uid), uid=uid,
            ppid=facts.ppid, parent_exe=parent.exe if parent else None, unit=facts.unit,
            cgroup=facts.cgroup, container=facts.container)
        self._by_inode[sock.inode] = result
        if len(self._by_inode) > self.cache_size:
            self._by_inode.popitem(last=False)
        self.stats["attributed"] += 1
        return result

    def attribute_many(self, packets: Iterable[BlockedPacket]) -> list[Attribution]:
        return [self.attribute(p) for p in packets]
