"""A private PostgreSQL cluster for tests and benchmarks: Debian's binaries, a temporary directory.

`PgServer` runs initdb into a fresh temporary directory, starts `postgres` with pg_ctl on a free
port, listening only on a unix socket inside that directory (no TCP, never the machine's own
cluster), and `stop()` stops it and removes the directory — `with PgServer() as pg:` does both
even when the body fails. Root cannot run initdb, so as root the cluster runs as the `postgres`
user (the directory is chowned to it). `pg.dsn(db)` is a libpq connection string; `create_db`
gives each test a database of its own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN = Path(os.environ.get("OG_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> str | None:
    """None when a cluster can be made here, else why not."""
    if not (BIN / "initdb").exists():
        return f"no PostgreSQL binaries in {BIN} (./dev setup installs postgresql)"
    return None


# A prefix for a child server's command: it gets SIGTERM when the process that started it dies
# (even killed), so that no server outlives a run (util-linux's setpriv, no preexec_fn).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self, *, fast: bool = True) -> None:
        self.fast = fast  # fsync off: tests need no durability; benchmarks keep it on
        self.root = Path(tempfile.mkdtemp(prefix="og-w20a-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.port = _free_port()
        self.user = "postgres"
        self._started = False
        self._dbs = 0

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PgServer:
        try:
            self.sock.mkdir()
            if os.geteuid() == 0:
                pw = pwd.getpwnam(self.user)
                for path in (self.root, self.sock):
                    os.chown(path, pw.pw_uid, pw.pw_gid)
            else:
                self.user = pwd.getpwuid(os.geteuid()).pw_name
            self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-locale", "--no-sync")
            opts = (f"-c listen_addresses='' -c unix_socket_directories={self.sock}"
                    f" -p {self.port} -c max_connections=200")
            if self.fast:
                opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                      "-o", opts, "-w", "-t", "60", "start")
            self._started = True
        except BaseException:
            self.stop()
            raise
        return self

    def halt(self) -> None:
        """Stop the server now (an outage), keeping its files until `stop`."""
        if self._started:
            self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self._started = False

    def stop(self) -> None:
        try:
            self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def dsn(self, db: str = "postgres") -> str:
        return f"host={self.sock} port={self.port} user=postgres dbname={db}"

    def create_db(self) -> str:
        """A new empty database; its DSN."""
        import psycopg

        self._dbs += 1
        name = f"og_test_{self._dbs}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
