"""A fleet on one machine, for the agent's kernel tests and bench/fleet_agents.py: a server
namespace (w20a's real `outguard fleet serve` on 198.51.100.1:8080, in front of a private
PostgreSQL reached over its unix socket) and N host namespaces, each joined to the server's
bridge by a veth pair, each running the real `outguard run --fleet` as its own process.

Everything is made here and removed by `close()` (namespaces — with the processes left in
them, such as rollback watchdogs — temporary directories, the database cluster): the host
namespace's firewall is never touched, and every address is a documentation one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from outguard.kernel import netns as ns
from tests.fleet.hosts import token
from tests.fleet.pgserver import PgServer

PREFIX = "og-w20b-"
SERVER_NS = f"{PREFIX}srv"
SERVER_IP = "198.51.100.1"
PORT = 8080
URL = f"http://{SERVER_IP}:{PORT}"
BLOCKED_NET = "203.0.113."  # where the bursts go: dropped by every host's default rule


def policy_text(tag: str, *, extra_allow: str = "") -> str:
    """A host's policy: only the fleet server may be reached (the agent must reach it under
    every policy, or the confirmation rolls it back); `tag` makes each version distinct."""
    return f"""# fleet test policy {tag}
version: 1
mode: enforce
allow:
  - name: fleet-server
    to: [{SERVER_IP}]
    ports: [{PORT}]
    proto: tcp
{extra_allow}learn: true
options:
  default_action: drop
  log_rate: 1000/second
alerts:
  - stdout: json
"""


def _ip(*argv: str, netns: str | None = None) -> None:
    cmd = ["ip", *argv] if netns is None else ["ip", "netns", "exec", netns, "ip", *argv]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


class Host:
    def __init__(self, lab: AgentLab, index: int) -> None:
        self.index = index
        self.name = f"h{index:02d}"
        self.netns = f"{PREFIX}{self.name}"
        self.ip = f"198.51.100.{11 + index}"
        self.state = lab.root / self.name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = lab.root / f"{self.name}.log"
        self.starts = 0

    @property
    def events_db(self) -> Path:
        return self.state / "events.db"

    def local_incident_ids(self) -> set[str]:
        db = sqlite3.connect(f"file:{self.events_db}?mode=ro", uri=True)
        try:
            return {row[0] for row in db.execute("SELECT id FROM incidents")}
        finally:
            db.close()

    def local_flow_count(self) -> int:
        db = sqlite3.connect(f"file:{self.events_db}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT count(*) FROM flows").fetchone()[0])
        finally:
            db.close()

    def outbox_books(self) -> dict[str, Any]:
        from outguard.fleet.outbox import read_books

        books = read_books(self.state / "fleet" / "outbox.db")
        assert books is not None
        return {k: b.to_json() for k, b in books.items()}

    def follow(self) -> dict[str, Any]:
        return dict(json.loads((self.state / "fleet" / "follow.json").read_text()))


class AgentLab:
    def __init__(self, hosts: int, *, tls: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}lab-"))
        self.tls = tls  # serve HTTPS with a certificate of a CA made here (`ca`)
        self.url = URL.replace("http://", "https://") if tls else URL
        self.root.chmod(0o755)
        self.hosts = [Host(self, i) for i in range(hosts)]
        self.pg: PgServer | None = None
        self.dsn = ""
        self.server: subprocess.Popen[bytes] | None = None
        self.made: list[str] = []

    # the network -------------------------------------------------------------------------

    def build(self) -> AgentLab:
        try:
            self._net()
            if self.tls:
                self._certs()
            self.pg = PgServer().start()
            self.dsn = self.pg.create_db()
            import psycopg

            from outguard.fleet.schema import migrate

            with psycopg.connect(self.dsn, autocommit=True) as conn:
                migrate(conn)
            self.start_server()
        except BaseException:
            self.close()
            raise
        return self

    def _net(self) -> None:
        for name in [SERVER_NS, *(h.netns for h in self.hosts)]:
            ns.delete(name)  # a leftover of an interrupted run
            ns.add(name)
            self.made.append(name)
            _ip("link", "set", "lo", "up", netns=name)
        _ip("link", "add", "br0", "type", "bridge", netns=SERVER_NS)
        _ip("addr", "add", f"{SERVER_IP}/24", "dev", "br0", netns=SERVER_NS)
        _ip("link", "set", "br0", "up", netns=SERVER_NS)
        for h in self.hosts:
            outer = f"w20b{h.name}"
            _ip("link", "add", outer, "netns", SERVER_NS, "type", "veth", "peer", "name", "eth0",
                "netns", h.netns)
            _ip("link", "set", outer, "master", "br0", "up", netns=SERVER_NS)
            _ip("addr", "add", f"{h.ip}/24", "dev", "eth0", netns=h.netns)
            _ip("link", "set", "eth0", "up", netns=h.netns)
            # the bursts' destinations route to the server side (and are dropped before)
            _ip("route", "add", "default", "via", SERVER_IP, netns=h.netns)

    # the server ----------------------------------------------------------------------------

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    def _certs(self) -> None:
        """A CA, and the server's certificate for its address signed by it (openssl)."""
        def ssl(*argv: str) -> None:
            subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)
        r = self.root
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(r / "ca.key"),
            "-out", str(self.ca), "-days", "1", "-subj", "/CN=og-w20b test CA")
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(r / "srv.key"), "-out",
            str(r / "srv.csr"), "-subj", f"/CN={SERVER_IP}")
        (r / "ext").write_text(f"subjectAltName=IP:{SERVER_IP}\n")
        ssl("x509", "-req", "-in", str(r / "srv.csr"), "-CA", str(self.ca), "-CAkey",
            str(r / "ca.key"), "-CAcreateserial", "-out", str(r / "srv.pem"), "-days", "1",
            "-extfile", str(r / "ext"))

    def start_server(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the child's
        self.server = subprocess.Popen(
            ns.exec_argv(SERVER_NS, [sys.executable, "-m", "outguard", "fleet", "serve", "--db",
                                     self.dsn, *self._tls_args(), "--listen",
                                     f"{SERVER_IP}:{PORT}",
                                     "--tick", "0.3", "--rate", "1000"]),
            stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        deadline = time.monotonic() + 30
        while True:
            if self.server.poll() is not None:
                raise RuntimeError(f"fleet serve exited: {(self.root / 'server.log').read_text()}")
            probe = subprocess.run(ns.exec_argv(SERVER_NS, [
                "curl", "-s", "-o", "/dev/null", "-m", "1",
                *(["--cacert", str(self.ca)] if self.tls else []), f"{self.url}/v1/nothing"]),
                capture_output=True, check=False)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("fleet serve does not answer")
            time.sleep(0.1)

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return ["--no-tls"]
        return ["--tls-cert", str(self.root / "srv.pem"), "--tls-key", str(self.root / "srv.key")]

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.server = None

    def stop_db(self) -> None:
        assert self.pg is not None
        self.pg._run(str(self.pg_bin("pg_ctl")), "-D", str(self.pg.data), "-m", "fast", "-w",
                     "stop")

    def start_db(self) -> None:
        assert self.pg is not None
        opts = (f"-c listen_addresses='' -c unix_socket_directories={self.pg.sock}"
                f" -p {self.pg.port} -c max_connections=200 -c fsync=off")
        self.pg._run(str(self.pg_bin("pg_ctl")), "-D", str(self.pg.data), "-l",
                     str(self.pg.root / "log"), "-o", opts, "-w", "-t", "60", "start")

    @staticmethod
    def pg_bin(name: str) -> Path:
        from tests.fleet.pgserver import BIN

        return BIN / name

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            return conn.execute(query, args).fetchall()  # type: ignore[arg-type]

    def fleet_cli(self, *argv: str) -> str:
        got = subprocess.run([sys.executable, "-m", "outguard", "fleet", *argv, "--db", self.dsn],
                             capture_output=True, text=True, timeout=60, check=False)
        if got.returncode != 0:
            raise RuntimeError(f"outguard fleet {' '.join(argv)}: {got.stderr}")
        return got.stdout

    # the agents ----------------------------------------------------------------------------

    def start_agent(self, h: Host, policy: Path | None, *extra: str, ca: bool = True) -> None:
        h.state.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "outguard", "run", "--netns", h.netns, "--state-dir",
                str(h.state), "--fleet", self.url, "--fleet-host", h.name, *extra]
        if self.tls and ca:
            argv += ["--fleet-ca", str(self.ca)]
        if not (h.state / "fleet" / "credential.json").exists():
            argv += ["--enroll", token(self.dsn, h.name)]
        if policy is not None:
            argv.insert(4, str(policy))
        log = open(h.log, "ab")  # noqa: SIM115 - the child's
        h.proc = subprocess.Popen(argv, stdout=log, stderr=log,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        h.starts += 1

    def stop_agent(self, h: Host, timeout: float = 20) -> int | None:
        if h.proc is None:
            return None
        if h.proc.poll() is None:
            h.proc.send_signal(signal.SIGTERM)
            try:
                h.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait()
        code, h.proc = h.proc.returncode, None
        return code

    def burst(self, h: Host, first: int, count: int, port: int = 9000) -> None:
        """`count` UDP datagrams, each to its own blocked destination: `count` incidents."""
        script = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                  "a,n,p=int(sys.argv[1]),int(sys.argv[2]),int(sys.argv[3])\n"
                  "for k in range(a,a+n):\n"
                  " try:\n"
                  f"  s.sendto(b'x',('{BLOCKED_NET}'+str(1+k%250),p+k//250))\n"
                  " except PermissionError:\n  pass\n")  # the drop says EPERM
        subprocess.run(ns.exec_argv(h.netns, [sys.executable, "-c", script, str(first),
                                              str(count), str(port)]),
                       check=True, capture_output=True, timeout=30)

    def wait(self, what: str, cond: Any, timeout: float, step: float = 0.2,
             host: Host | None = None) -> Any:
        """`cond()` once true; on a timeout the error carries `host`'s follow state and the end
        of its agent's log (a clean-clone run once timed out here with nothing to go on)."""
        deadline = time.monotonic() + timeout
        while True:
            got = cond()
            if got:
                return got
            if time.monotonic() > deadline:
                seen = ""
                if host is not None:
                    with contextlib.suppress(OSError):
                        seen = (f"; {host.name} follow {host.follow()}; its log ends:\n"
                                f"{host.log.read_text(errors='replace')[-4000:]}")
                raise AssertionError(f"timed out waiting for {what}{seen}")
            time.sleep(step)

    def close(self) -> None:
        for h in self.hosts:
            with contextlib.suppress(Exception):
                self.stop_agent(h, timeout=10)
        with contextlib.suppress(Exception):
            self.stop_server()
        for name in reversed(self.made):
            with contextlib.suppress(Exception):
                ns.delete(name)
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.stop()
        shutil.rmtree(self.root, ignore_errors=True)
