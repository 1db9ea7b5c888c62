"""Fixtures of the fleet tests: one private PostgreSQL cluster per session (`pg`), a fresh
database per test (`dsn`, schema not yet made) and one migrated (`db`). w20b's agent tests reuse
them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fleet.pgserver import PgServer, available


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    why = available()
    if why:
        pytest.fail(why)  # a missing dependency is a failure, never a silent skip
    with PgServer() as server:
        yield server


@pytest.fixture
def dsn(pg: PgServer) -> str:
    return pg.create_db()


@pytest.fixture
def db(dsn: str) -> str:
    import psycopg

    from outguard.fleet.schema import migrate

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    return dsn


class Replicas:
    """`outguard fleet serve` processes against one database: their base URLs."""

    def __init__(self, dsn: str, count: int = 2, tls: tuple[str, str] | None = None,
                 rate: float = 500) -> None:
        import os
        import subprocess
        import sys
        import time

        import httpx

        from tests.fleet.pgserver import DIE_WITH_PARENT, _free_port

        self.dsn = dsn
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        try:
            for index in range(count):
                port = _free_port()
                # the second replica LISTENs through --listen-db (same cluster): the option's
                # path is what a PgBouncer deployment uses
                listen = ["--listen-db", dsn] if index == 1 else []
                self.procs.append(subprocess.Popen(
                    [*DIE_WITH_PARENT, sys.executable, "-m", "outguard", "fleet", "serve", "--db", dsn,
                     "--listen", f"127.0.0.1:{port}", "--tick", "0.3", "--rate", str(rate),
                     *(["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else ["--no-tls"]),
                     *listen],
                    env={**os.environ, "PYTHONUNBUFFERED": "1"}))
                self.urls.append(f"{'https' if tls else 'http'}://127.0.0.1:{port}")
            deadline = time.monotonic() + 30
            for url, proc in zip(self.urls, self.procs, strict=True):
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"fleet serve exited with {proc.returncode}")
                    try:
                        httpx.get(url + "/v1/nothing", timeout=1, verify=False)
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except Exception:
                proc.kill()
                proc.wait()


@pytest.fixture
def replicas(db: str) -> Iterator[Replicas]:
    servers = Replicas(db)
    try:
        yield servers
    finally:
        servers.stop()
