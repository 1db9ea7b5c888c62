"""A two-host test network for the kernel acceptance tests, and probes that cross it.

    server (ogt-<hex>)                         peer (ogt-<hex>)
      og0 192.0.2.2/24, 2001:db8::2/64  ─veth─   og0 192.0.2.1/24, 2001:db8::1/64
      routes 198.51.100.0/24,                    lo: every other destination a test
      203.0.113.0/24, 2001:db8::/32 and one      probes (/32, /128)
      host route per extra destination,
      all via the peer

The policy is applied in the server namespace. The peer runs no listener and no firewall, so
every packet that leaves the server is answered at once: a TCP SYN by a RST (ECONNREFUSED), a UDP
datagram by an ICMP port unreachable (ECONNREFUSED on a connected socket). The peer's ICMP rate
limits are switched off, or a burst of UDP probes would look like drops.

A probe asks "does a TCP connect / UDP datagram from the server to (addr, port) as uid U pass the
firewall?". Outcomes:

    connected, refused, reply   passed (answered by the peer, or a listener)
    eperm                       dropped in the output hook (a UDP send() fails with EPERM, and
                                no ICMP error follows within the timeout)
    timeout                     dropped (no answer within the timeout: a TCP SYN that never left)
    rejected:<ERRNO>            a UDP send() failed with EPERM and an ICMP error followed: what a
                                local `reject` gives (EHOSTUNREACH for IPv4, EACCES for IPv6)
    lost                        a UDP datagram that left (send() succeeded) but got no answer:
                                neither passed nor dropped; means the topology is broken
    err:<ERRNO>                 anything else

A `reject` verdict for TCP gives ECONNREFUSED like the peer's RST: tests of `reject` tell them
apart with counters. Probes run concurrently (non-blocking sockets, one selector), uid 0 in this
process on a `NetnsThread`, other uids in a real child process that runs as that user
(`setpriv --reuid U --regid U --clear-groups`), started with `ip netns exec`.

Only namespaces named ``ogt-<hex>`` (created here) and only documentation addresses are used.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outguard.errors import KernelError
from outguard.kernel import counters as kc
from outguard.kernel import netns as ns
from outguard.kernel.netns import NetnsThread

SERVER4, PEER4 = "192.0.2.2", "192.0.2.1"
SERVER6, PEER6 = "2001:db8::2", "2001:db8::1"
LINK = "og0"
NOBODY = 65534
PROBE_TIMEOUT = 0.6  # < 1 s: a dropped TCP connect sends exactly one SYN (the first RTO is 1 s)
PASSED = frozenset({"connected", "refused", "reply"})
DROPPED = frozenset({"eperm", "timeout"})
DOC_NETS = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
ROUTED = ("198.51.100.0/24", "203.0.113.0/24")
ROUTED6 = "2001:db8::/32"


def is_doc_address(addr: str) -> bool:
    """A documentation address (an IPv4-mapped IPv6 one counts as its IPv4 address)."""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in DOC_NETS)


def peer_address(addr: str) -> str:
    """The address the peer must own to answer `addr` (IPv4-mapped IPv6: its IPv4 address)."""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


# --- the probe itself: stdlib only, also run as a script in a child process ------------------


def probe_batch(specs: Sequence[Sequence[Any]], timeout: float) -> list[str]:
    """Probe every (addr, port, proto) at once from the calling thread's namespace."""
    import errno
    import selectors
    import socket
    import time

    def name(code: int) -> str:
        if code == errno.ECONNREFUSED:
            return "refused"
        if code == errno.EPERM:
            return "eperm"
        return "err:" + errno.errorcode.get(code, str(code))

    results: list[str | None] = [None] * len(specs)
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for i, (addr, port, proto) in enumerate(specs):
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(family, kind)
            socks.append(s)
            s.setblocking(False)
            if proto == "tcp":
                code = s.connect_ex((addr, port))
                if code == 0:
                    results[i] = "connected"
                elif code == errno.EINPROGRESS:
                    sel.register(s, selectors.EVENT_WRITE, i)
                else:
                    results[i] = name(code)
            else:
                s.connect((addr, port))  # no packet: only fixes the peer of the socket
                try:
                    s.send(b"outguard-probe")
                except OSError as exc:
                    results[i] = name(exc.errno or 0)
                    if exc.errno != errno.EPERM:
                        continue
                    # dropped in the output hook; a `reject` also queues an ICMP error
                sel.register(s, selectors.EVENT_READ, i)
        deadline = time.monotonic() + timeout
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _events in sel.select(left):
                i, s = key.data, key.fileobj
                if specs[i][2] == "tcp":
                    code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    results[i] = "connected" if code == 0 else name(code)
                else:
                    try:
                        s.recv(2048)
                        got = "reply"
                    except OSError as exc:
                        got = name(exc.errno or 0)
                    # after EPERM: the ICMP error of a local `reject`
                    results[i] = ("rejected:" + got.removeprefix("err:")
                                  if results[i] == "eperm" else got)
                sel.unregister(s)
        return [r if r is not None else ("timeout" if specs[i][2] == "tcp" else "lost")
                for i, r in enumerate(results)]
    finally:
        sel.close()
        for s in socks:
            s.close()


_CHILD_MAIN = """
import json, os, sys
job = json.load(sys.stdin)
out = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
       "results": probe_batch(job["specs"], job["timeout"])}
json.dump(out, sys.stdout)
"""


def _probe_source() -> str:
    import inspect

    return "from __future__ import annotations\n" + inspect.getsource(probe_batch) + _CHILD_MAIN


def _child_python() -> str:
    # The venv's interpreter may sit under a directory that `nobody` cannot traverse.
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


@dataclass(frozen=True)
class Probe:
    addr: str
    port: int
    proto: str = "tcp"
    uid: int = 0

    def __str__(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"{self.proto} {host}:{self.port} uid {self.uid}"


# --- NFLOG: a tiny reader, to see what the log rules really send ---------------------------

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_QTHRESH = 1, 2, 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD, NFULA_PREFIX, NFULA_UID = 9, 10, 11


@dataclass(frozen=True)
class LogRecord:
    prefix: str
    dst: str | None
    uid: int | None


def _nflog_config(group: int, attrs: bytes, seq: int) -> bytes:
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", group) + attrs
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return struct.pack("=IHHII", 16 + len(body), kind, kc.NLM_F_REQUEST | kc.NLM_F_ACK, seq,
                       0) + body


def _dst_of(payload: bytes) -> str | None:
    if payload[:1] and payload[0] >> 4 == 4 and len(payload) >= 20:
        return socket.inet_ntop(socket.AF_INET, payload[16:20])
    if payload[:1] and payload[0] >> 4 == 6 and len(payload) >= 40:
        return socket.inet_ntop(socket.AF_INET6, payload[24:40])
    return None


class NflogReader:
    """Binds NFLOG group `group` in a namespace and collects (prefix, dst, uid) of each packet."""

    def __init__(self, netns: str, group: int = 0) -> None:
        with NetnsThread(netns) as t:  # the socket belongs to the namespace it is opened in
            self.sock = t.call(socket.socket, socket.AF_NETLINK, socket.SOCK_RAW,
                               kc.NETLINK_NETFILTER)
        self.sock.settimeout(5)
        self.sock.bind((0, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        mode = struct.pack(">IBx", 0xFFFF, NFULNL_COPY_PACKET)
        for seq, attrs in enumerate((
                kc.attr(NFULA_CFG_CMD, struct.pack("=B", NFULNL_CFG_CMD_BIND)),
                kc.attr(NFULA_CFG_MODE, mode) + kc.attr(NFULA_CFG_QTHRESH, struct.pack(">I", 1))),
                start=1):
            self.sock.send(_nflog_config(group, attrs, seq))
            self._ack(seq)
        self.records: list[LogRecord] = []

    def _ack(self, seq: int) -> None:
        while True:
            for msg in kc.parse_messages(self.sock.recv(1 << 16)):
                if msg.type == kc.NLMSG_ERROR and msg.seq == seq:
                    if code := kc.error_code(msg):
                        raise OSError(code, f"NFLOG config: {os.strerror(code)}")
                    return

    def collect(self, until: float = 1.0) -> list[LogRecord]:
        """Read what arrives within `until` seconds (at least one recv); return all so far."""
        deadline = time.monotonic() + until
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                break
            for msg in kc.parse_messages(data):
                if msg.type != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
                    continue
                attrs = kc.parse_attrs(msg.payload[4:])
                uid = attrs.get(NFULA_UID)
                self.records.append(LogRecord(
                    attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode(),
                    _dst_of(attrs.get(NFULA_PAYLOAD, b"")),
                    struct.unpack(">I", uid)[0] if uid else None))
        return self.records

    def close(self) -> None:
        self.sock.close()


# --- the topology --------------------------------------------------------------------------


def _ip_batch(netns: str, lines: Iterable[str]) -> None:
    text = "".join(f"{line}\n" for line in lines)
    if not text:
        return
    proc = subprocess.run(["ip", "-n", netns, "-batch", "-"], input=text, capture_output=True,
                          text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip -n {netns} -batch failed: {proc.stderr.strip()}\n{text}")


@dataclass
class Topology:
    server: str
    peer: str
    state_dir: Path
    thread: NetnsThread
    extra: set[str] = field(default_factory=set)
    _nft: Any = None

    # outguard, in this process ---------------------------------------------------------------

    def kernel(self) -> Any:
        """An `Nft` in the server namespace (one per topology, closed with it)."""
        if self._nft is None:
            from outguard.kernel.libnft import Nft

            self._nft = Nft(self.server)
        return self._nft

    def apply(self, policy: Path | str, **kwargs: Any) -> Any:
        """`apply.run.apply_policy` in this process: policy text or a file; returns the report."""
        from outguard.apply.run import apply_policy
        from outguard.state import StateDir

        path = policy if isinstance(policy, Path) else self.write_policy(policy)
        return apply_policy(path, StateDir(self.state_dir), self.kernel(), **kwargs)

    def close(self) -> None:
        if self._nft is not None:
            self._nft.close()
            self._nft = None

    # addresses ----------------------------------------------------------------------------

    def add_addresses(self, *addrs: str) -> None:
        """Put documentation addresses on the peer's `lo` and route them from the server."""
        new = []
        for addr in dict.fromkeys(addrs):
            canon = peer_address(addr)
            if not is_doc_address(canon):
                raise ValueError(f"{addr} is not a documentation address")
            if canon not in self.extra and canon not in (SERVER4, PEER4, SERVER6, PEER6):
                new.append(canon)
        if not new:
            return
        peer, server = [], []
        for addr in new:
            if ":" in addr:
                peer.append(f"addr add {addr}/128 dev lo nodad")
                server.append(f"route replace {addr}/128 via {PEER6}")
            else:
                peer.append(f"addr add {addr}/32 dev lo")
                server.append(f"route replace {addr}/32 via {PEER4}")
        _ip_batch(self.peer, peer)
        _ip_batch(self.server, server)
        self.extra.update(new)

    # probes -------------------------------------------------------------------------------

    def probe(self, probes: Sequence[Probe], timeout: float = PROBE_TIMEOUT) -> list[str]:
        """Outcome of each probe (see the module docstring); all run at once."""
        for p in probes:
            if not is_doc_address(p.addr):
                raise ValueError(f"probe to {p.addr}: only documentation addresses")
        by_uid: dict[int, list[int]] = {}
        for i, p in enumerate(probes):
            by_uid.setdefault(p.uid, []).append(i)
        results: list[str] = [""] * len(probes)

        def run(uid: int, idx: list[int]) -> None:
            specs = [(probes[i].addr, probes[i].port, probes[i].proto) for i in idx]
            got = (self.thread.call(probe_batch, specs, timeout) if uid == 0
                   else self._probe_as(uid, specs, timeout))
            for i, r in zip(idx, got, strict=True):
                results[i] = r

        with ThreadPoolExecutor(max_workers=max(1, len(by_uid))) as pool:
            for fut in [pool.submit(run, uid, idx) for uid, idx in by_uid.items()]:
                fut.result()
        return results

    def _probe_as(self, uid: int, specs: list[tuple[str, int, str]], timeout: float) -> list[str]:
        """The probes from a real child process running as `uid` (gid = uid, no groups)."""
        argv = ns.exec_argv(self.server, [
            "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
            _child_python(), "-I", "-S", "-c", _probe_source()])
        proc = subprocess.run(argv, input=json.dumps({"specs": specs, "timeout": timeout}),
                              capture_output=True, text=True, timeout=timeout + 20, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"probe child as uid {uid} failed: {proc.stderr.strip()}")
        out = json.loads(proc.stdout)
        if (out["uid"], out["euid"]) != (uid, uid):
            raise RuntimeError(f"probe child ran as uid {out['uid']}/{out['euid']}, not {uid}")
        return list(out["results"])

    def passes(self, *probes: Probe) -> list[bool | None]:
        """True passed, False dropped, None neither (a broken topology or a reject)."""
        return [True if r in PASSED else False if r in DROPPED else None
                for r in self.probe(probes)]

    # kernel views -------------------------------------------------------------------------

    def counters(self, *, logged: bool = False) -> dict[str, int]:
        """Packets of every named counter of `inet outguard` (by raw netlink); the counters of
        what was logged (`log.<rule>`) only with `logged`."""
        return {k: v[0] for k, v in self.thread.call(kc.read_counters).items()
                if logged or not k.startswith("log.")}

    def tables(self) -> list[tuple[str, str]]:
        return self.thread.call(kc.list_tables)

    def nft(self, *args: str, input: str | None = None) -> str:
        return ns.run(self.server, ["nft", *args], input=input).stdout

    def ruleset(self) -> str:
        """`nft list ruleset` in the server namespace, as text."""
        return self.nft("list", "ruleset")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`outguard ARGS --netns SERVER --state-dir STATE` (the real CLI, a subprocess)."""
        argv = [sys.executable, "-m", "outguard", *args, "--netns", self.server,
                "--state-dir", str(self.state_dir)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def status_cli(self) -> dict[str, Any]:
        """`outguard status --json`, through the CLI."""
        proc = self.cli("status", "--json")
        assert proc.returncode == 0, proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def status(self) -> dict[str, Any]:
        """What `status --json` prints, computed in this process (`apply.status.status`): cheap enough
        to poll."""
        from outguard.apply.status import status
        from outguard.state import StateDir

        present = self.thread.call(kc.table_exists)
        found = self.thread.call(kc.read_counters) if present else {}
        return status(StateDir(self.state_dir), found, present)

    def write_policy(self, text: str, name: str = "policy.yaml") -> Path:
        path = self.state_dir.parent / name
        path.write_text(text)
        return path


def deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that moved, and by how many packets (a counter that appeared counts from 0)."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def normalize_counters(ruleset: str) -> str:
    return re.sub(r"packets \d+ bytes \d+", "packets 0 bytes 0", ruleset)


def _sysctl(netns: str, *settings: str) -> None:
    ns.run(netns, ["sysctl", "-q", "-w", *settings])


def _wait_link(topo: Topology, deadline_s: float = 5.0) -> None:
    probes = [Probe(PEER4, 9, "tcp"), Probe(PEER6, 9, "tcp")]
    deadline = time.monotonic() + deadline_s
    while True:
        got = topo.probe(probes, timeout=0.5)
        if all(r == "refused" for r in got):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test link does not work: {got}")
        time.sleep(0.05)


@contextlib.contextmanager
def build(new_netns: Any, addresses: Iterable[str] = ()) -> Iterator[Topology]:
    """Create server + peer namespaces, the link and addresses; remove everything afterwards."""
    made: list[str] = []
    thread: NetnsThread | None = None
    topo: Topology | None = None
    tmp = Path(tempfile.mkdtemp(prefix="ogt-"))
    try:
        server = new_netns()
        made.append(server)
        peer = new_netns()
        made.append(peer)
        for name in (server, peer):
            _sysctl(name, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        _sysctl(peer, "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
                "net.ipv4.icmp_msgs_per_sec=1000000", "net.ipv4.icmp_msgs_burst=1000000")
        # Created inside the namespaces: the host namespace never sees the link.
        ns.run(server, ["ip", "link", "add", LINK, "type", "veth", "peer", "name", LINK,
                        "netns", peer])
        _ip_batch(peer, [
            f"addr add {PEER4}/24 dev {LINK}", f"addr add {PEER6}/64 dev {LINK} nodad",
            f"link set {LINK} up"])
        _ip_batch(server, [
            f"addr add {SERVER4}/24 dev {LINK}", f"addr add {SERVER6}/64 dev {LINK} nodad",
            f"link set {LINK} up",
            *(f"route add {net} via {PEER4}" for net in ROUTED),
            f"route add {ROUTED6} via {PEER6}"])
        thread = NetnsThread(server)
        state = tmp / "state"
        topo = Topology(server, peer, state, thread)
        topo.add_addresses(*addresses)
        _wait_link(topo)
        yield topo
    finally:
        if topo is not None:
            topo.close()
        if thread is not None:
            thread.close()
        errors = []
        for name in reversed(made):
            try:
                ns.delete(name)  # kills what is left inside (watchdogs, probe children)
            except Exception as exc:
                errors.append(exc)
        shutil.rmtree(tmp, ignore_errors=True)
        if errors:
            raise errors[0]


class Background:
    """A prober that runs until stopped, in the server namespace, on its own thread.

    Keeps probing a DENIED and an ALLOWED destination over TCP and UDP. UDP answers at once
    (send() fails with EPERM when dropped, succeeds when the packet passed the output hook);
    TCP connects stay open until answered or until `tcp_wait` (denied) / `tcp_pass` (allowed).
    Counts every probe and every gap: a denied probe that passed, an allowed one that did not.
    """

    def __init__(self, netns: str, denied: tuple[str, int], allowed: tuple[str, int],
                 *, tcp_wait: float = 0.3, tcp_pass: float = 2.0, limit_s: float = 120) -> None:
        self.netns, self.denied, self.allowed = netns, denied, allowed
        self.tcp_wait, self.tcp_pass, self.limit_s = tcp_wait, tcp_pass, limit_s
        self.stop_event = threading.Event()
        self.counts: dict[str, int] = {}
        self.gaps: list[str] = []
        self.error: BaseException | None = None
        self._thread = NetnsThread(netns)
        self._done = threading.Event()
        self._worker = threading.Thread(target=self._run_outside, daemon=True)

    def __enter__(self) -> Background:
        self._worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        if self._worker.is_alive():
            self._worker.join(timeout=self.limit_s + 10)
        self._thread.close()

    def _run_outside(self) -> None:
        try:
            self._thread.call(self._loop)
        except BaseException as exc:
            self.error = exc
        finally:
            self._done.set()

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _loop(self) -> None:
        import errno
        import selectors

        sel = selectors.DefaultSelector()
        open_tcp: dict[socket.socket, tuple[str, float]] = {}
        end = time.monotonic() + self.limit_s

        def family(addr: str) -> int:
            return socket.AF_INET6 if ":" in addr else socket.AF_INET

        def finish(s: socket.socket) -> None:
            sel.unregister(s)
            del open_tcp[s]
            s.close()

        try:
            while not self.stop_event.is_set() and time.monotonic() < end:
                for what, (addr, port) in (("denied", self.denied), ("allowed", self.allowed)):
                    with socket.socket(family(addr), socket.SOCK_DGRAM) as u:
                        u.connect((addr, port))
                        try:
                            u.send(b"outguard-probe")
                            left = True
                        except OSError as exc:
                            if exc.errno != errno.EPERM:
                                raise
                            left = False
                    self._count(f"udp-{what}")
                    if left != (what == "allowed"):
                        self.gaps.append(f"udp to {what} {addr}:{port} "
                                         f"{'passed' if left else 'was dropped'}")
                    if len(open_tcp) < 64:
                        t = socket.socket(family(addr), socket.SOCK_STREAM)
                        t.setblocking(False)
                        code = t.connect_ex((addr, port))
                        if code not in (0, errno.EINPROGRESS):
                            t.close()
                            raise OSError(code, f"connect to {addr}:{port}")
                        open_tcp[t] = (what, time.monotonic())
                        sel.register(t, selectors.EVENT_WRITE)
                        self._count(f"tcp-{what}")
                for key, _ in sel.select(0.002):
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    what = open_tcp[s][0]
                    code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if what == "denied":
                        self.gaps.append(f"tcp to denied {self.denied} answered: "
                                         f"{errno.errorcode.get(code, code) if code else 'connected'}")
                    elif code not in (0, errno.ECONNREFUSED):
                        self.gaps.append(f"tcp to allowed {self.allowed}: "
                                         f"{errno.errorcode.get(code, code)}")
                    finish(s)
                now = time.monotonic()
                for s, (what, t0) in list(open_tcp.items()):
                    if what == "denied" and now - t0 > self.tcp_wait:
                        finish(s)  # blocked, as it should be
                    elif what == "allowed" and now - t0 > self.tcp_pass:
                        self.gaps.append(f"tcp to allowed {self.allowed} got no answer")
                        finish(s)
            # drain: let the last allowed connects finish, so none is judged early
            drain_end = time.monotonic() + self.tcp_pass
            while any(w == "allowed" for w, _ in open_tcp.values()) and \
                    time.monotonic() < drain_end:
                for key, _ in sel.select(0.05):
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    what = open_tcp[s][0]
                    code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if what == "denied":
                        self.gaps.append(f"tcp to denied {self.denied} answered")
                    elif code not in (0, errno.ECONNREFUSED):
                        self.gaps.append(f"tcp to allowed {self.allowed}: {code}")
                    finish(s)
            for what, _t0 in open_tcp.values():
                if what == "allowed":
                    self.gaps.append(f"tcp to allowed {self.allowed} got no answer (at the end)")
        finally:
            for s in list(open_tcp):
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(s)
                s.close()
            sel.close()


REFUSED_MARK = "refused-by-the-test-kernel"


class RefusingKernel:
    """A real kernel that refuses every batch carrying REFUSED_MARK (a rule comment): what a
    machine without a kernel feature does, for a policy `check` cannot fault."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def _refuse(self, doc: Any) -> None:
        if REFUSED_MARK in str(doc):
            raise KernelError("Operation not supported (a kernel without what the rule needs)")

    def run_json(self, doc: Any) -> Any:
        self._refuse(doc)
        return self.real.run_json(doc)

    def run_text(self, cmd: str) -> str:
        self._refuse(cmd)
        result: str = self.real.run_text(cmd)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)
