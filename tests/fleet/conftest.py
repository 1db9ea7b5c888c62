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
