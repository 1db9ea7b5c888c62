"""Attribution's pure parts and its /proc index, on a fake /proc tree (no root, no kernel).

The fake tree has what the index reads: ``<pid>/fd/<n>`` symlinks to ``socket:[inode]`` (they
dangle, as in the real /proc), ``stat``, ``status``, ``cmdline``, ``cgroup`` and ``exe``.
The real thing is tested against real processes in tests/kernel/test_attribution.py.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outguard.events import BlockedPacket
from outguard.kernel.sockdiag import SocketInfo
from outguard.monitor.attribute import Attributor, InodeIndex, parse_cgroup, parse_stat

DOCKER_ID = "4f" * 32


@pytest.mark.parametrize(("text", "want"), [
    ("0::/system.slice/nginx.service\n", ("/system.slice/nginx.service", "nginx.service", None)),
    ("12:pids:/x\n1:name=systemd:/user.slice/user-1000.slice/session-3.scope\n0::/\n",
     ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope", None)),
    ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo-1.scope\n",
     ("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo-1.scope",
      "app-foo-1.scope", None)),
    (f"0::/system.slice/docker-{DOCKER_ID}.scope\n",
     (f"/system.slice/docker-{DOCKER_ID}.scope", f"docker-{DOCKER_ID}.scope",
      f"docker:{DOCKER_ID}")),
    (f"0::/docker/{DOCKER_ID}\n", (f"/docker/{DOCKER_ID}", None, f"docker:{DOCKER_ID}")),
    (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/"
     f"cri-containerd-{DOCKER_ID}.scope\n",
     (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/"
      f"cri-containerd-{DOCKER_ID}.scope", f"cri-containerd-{DOCKER_ID}.scope",
      f"containerd:{DOCKER_ID}")),
    (f"0::/machine.slice/libpod-{DOCKER_ID}.scope/container\n",
     (f"/machine.slice/libpod-{DOCKER_ID}.scope/container", f"libpod-{DOCKER_ID}.scope",
      f"podman:{DOCKER_ID}")),
    ("0::/lxc.payload.web1/system.slice/cron.service\n",
     ("/lxc.payload.web1/system.slice/cron.service", "cron.service", "lxc:web1")),
    ("0::/\n", ("/", None, None)),
    ("", (None, None, None)),
])
def test_parse_cgroup(text: str, want: tuple[str | None, ...]) -> None:
    assert parse_cgroup(text) == want


def test_parse_stat_with_a_hostile_comm() -> None:
    text = "4242 (evil) (x) S 17 4242 4242 0 -1 4194560 " + " ".join(["0"] * 12) + " 999 0 0\n"
    assert parse_stat(text) == (17, 999)


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, pid: int, sockets: list[int], *, exe: str = "/usr/bin/app", ppid: int = 1,
            uid: int = 0, cgroup: str = "0::/system.slice/app.service\n") -> None:
        base = self.root / str(pid)
        (base / "fd").mkdir(parents=True)
        for fd, inode in enumerate(sockets, start=3):
            os.symlink(f"socket:[{inode}]", base / "fd" / str(fd))
        os.symlink("/dev/null", base / "fd" / "0")
        os.symlink(exe, base / "exe")
        (base / "stat").write_text(f"{pid} (app) S {ppid} 0 0 0 -1 0 " + "0 " * 13 + "77 0\n")
        (base / "status").write_text(f"Name:\tapp\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
        (base / "cmdline").write_bytes(f"{exe}\0--flag\0".encode())
        (base / "cgroup").write_text(cgroup)

    def add_socket(self, pid: int, inode: int, fd: int = 50) -> None:
        os.symlink(f"socket:[{inode}]", self.root / str(pid) / "fd" / str(fd))

    def remove(self, pid: int) -> None:
        import shutil

        shutil.rmtree(self.root / str(pid))


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    fake = FakeProc(tmp_path)
    fake.add(1, [100], exe="/sbin/init", ppid=0)
    for pid in range(200, 260):  # a crowd of processes the index must not re-read per event
        fake.add(pid, [1000 + pid], uid=1000 + pid % 3)
    return fake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _owned_by_users(proc: FakeProc) -> None:
    for pid in range(200, 260):
        os.chown(proc.root / str(pid), 1000 + pid % 3, 0)


def test_index_reads_only_new_pids_on_a_miss(proc: FakeProc) -> None:
    clock = Clock()
    index = InodeIndex(str(proc.root), clock=clock)
    index.warm()
    scans = index.fd_scans
    assert index.find([1230]) == {1230: 230}  # known from the warm-up: no read at all
    assert index.fd_scans == scans
    proc.add(300, [5000])
    assert index.find([5000], uid=0) == {5000: 300}
    assert index.fd_scans == scans + 1  # the new pid only
    proc.remove(300)
    clock.now += 5
    assert index.find([5001], uid=4242) == {}  # nobody holds it
    assert 5000 not in index.find([5000])  # the dead pid's sockets are forgotten


def test_index_rereads_processes_of_the_packet_uid_youngest_first(proc: FakeProc) -> None:
    clock = Clock()
    _owned_by_users(proc)
    index = InodeIndex(str(proc.root), clock=clock, full_rescan_interval=3600)
    index.warm()
    proc.add_socket(204, 7777)  # an old process opened a new socket after it was read
    clock.now += 10
    scans = index.fd_scans
    assert index.find([7777], uid=1000 + 204 % 3, since=clock.now - 0.1) == {7777: 204}
    # root's and that uid's processes, youngest first, up to the hit: not all 61
    assert index.fd_scans - scans == len(range(206, 260, 3)) + 1


def test_index_miss_floods_are_bounded(proc: FakeProc) -> None:
    clock = Clock()
    _owned_by_users(proc)
    index = InodeIndex(str(proc.root), clock=clock, full_rescan_interval=1.0)
    index.warm()
    clock.now += 10
    scans = index.fd_scans
    assert index.find([424242], uid=99, since=clock.now) == {}  # first miss: one full re-read
    assert index.fd_scans - scans == 61
    for _ in range(100):  # a flood of misses at the same moment reads nothing more
        assert index.find([424243], uid=99, since=clock.now) == {}
    assert index.fd_scans - scans == 61
    clock.now += 0.5  # a newer packet: root's process again; the full re-read waits 1 s
    assert index.find([424244], uid=99, since=clock.now) == {}
    assert index.fd_scans - scans == 62
    clock.now += 5  # a packet older than the last read of every process: nothing to re-read
    index.find([424245], uid=99, since=clock.now - 5.6)
    assert index.fd_scans - scans == 62


class FakeDiag:
    def __init__(self, table: dict[tuple[str, int], SocketInfo]) -> None:
        self.table = table

    def lookup(self, proto: str, src: str, sport: int, dst: str, dport: int,
               ifindex: int = 0) -> SocketInfo | None:
        return self.table.get((proto, sport))


def _pkt(proto: str = "tcp", sport: int | None = 40000, hook: str = "output") -> BlockedPacket:
    return BlockedPacket(datetime(2030, 1, 1, tzinfo=UTC), "og:deny:x", 4, proto, "192.0.2.2",
                         "198.51.100.7", sport, 389, uid=0, hook=hook)


def test_attributor_fields_cache_and_failures(proc: FakeProc) -> None:
    proc.add(4000, [9000], exe="/usr/lib/jvm/bin/java", ppid=1, uid=0,
             cgroup=f"0::/system.slice/docker-{DOCKER_ID}.scope\n")
    diag = FakeDiag({("tcp", 40000): SocketInfo(9000, 0, "SYN_SENT", 2),
                     ("tcp", 40001): SocketInfo(0, 0, "SYN_SENT", 2),
                     ("udp", 40002): SocketInfo(9999, 0, "UDP", 2)})
    attributor = Attributor(diag, proc=str(proc.root))
    a = attributor.attribute(_pkt())
    assert (a.pid, a.exe, a.cmdline, a.uid, a.user) == (
        4000, "/usr/lib/jvm/bin/java", ("/usr/lib/jvm/bin/java", "--flag"), 0, "root")
    assert (a.ppid, a.parent_exe, a.unit, a.container) == (
        1, "/sbin/init", f"docker-{DOCKER_ID}.scope", f"docker:{DOCKER_ID}")
    assert attributor.attribute(_pkt()) is a and attributor.stats["cached"] == 1
    kernel = _pkt(sport=2)
    failures = {
        "closed": _pkt(sport=1),  # NFLOG gave the socket's uid: a process's, closed already
        "no-socket": BlockedPacket(kernel.time, kernel.prefix, kernel.family, "tcp", kernel.src,
                                   kernel.dst, 2, 389, uid=None, hook="output"),
        "orphan": _pkt(sport=40001),
        "no-process": _pkt("udp", 40002),
        "proto": _pkt("icmp", None),
        "not-local": _pkt(hook="forward"),
    }
    for kind, pkt in failures.items():
        got = attributor.attribute(pkt)
        assert got.pid is None and got.failure, kind
        assert attributor.stats[f"failed:{kind}"] == 1, (kind, got.failure)
        assert got.failure_kind == kind
    closed = attributor.attribute(_pkt(sport=1))
    assert (closed.uid, closed.user) == (0, "root")  # the user filled in from NFLOG's uid


def test_index_rereads_have_a_budget(proc: FakeProc) -> None:
    clock = Clock()
    index = InodeIndex(str(proc.root), clock=clock, reread_budget=10)
    index.warm()
    for step in range(1, 4):  # every process is root's here: each miss may re-read all 61
        clock.now += 0.5
        scans = index.fd_scans
        assert index.find([424242 + step], uid=0, since=clock.now) == {}
        assert index.fd_scans - scans <= 10  # the budget (refilled at 10/s), not 61
    assert index.budget_exhausted >= 3


def test_a_socket_without_process_keeps_the_packets_user(proc: FakeProc) -> None:
    """sock_diag reports a TIME_WAIT socket with uid 0: nobody's closed curl was learned (and
    suggested) as root's, and the suggested `for: {user: root}` rule blocked nobody."""
    diag = FakeDiag({("tcp", 40001): SocketInfo(0, 0, "TIME_WAIT", 2)})
    attributor = Attributor(diag, proc=str(proc.root))
    pkt = replace(_pkt(sport=40001), uid=65534)
    got = attributor.attribute(pkt)
    assert (got.failure_kind, got.uid, got.user) == ("orphan", 65534, "nobody")


def test_secret_option_values_are_redacted_from_command_lines() -> None:
    # a trial: the fleet agent's own blocked connection was an incident whose cmdline held
    # `--enroll TOKEN`, stored locally, alerted and sent to the fleet's database
    from outguard.monitor.attribute import redact

    argv = ["outguard", "run", "--fleet", "https://f.example", "--enroll", "s3cret",
            "--token=abc", "--Password", "pw", "--enrolled", "x", "--enroll"]
    assert redact(argv) == ("outguard", "run", "--fleet", "https://f.example", "--enroll", "***",
                            "--token=***", "--Password", "***", "--enrolled", "x", "--enroll")
