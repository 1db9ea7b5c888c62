"""The schema against a real PostgreSQL: migrations once and idempotent, a newer schema refused,
retention drops whole day partitions (and the rows in them)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from outguard.fleet import schema


def test_init_creates_then_is_idempotent(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert schema.current_version(conn) == 0
        with pytest.raises(schema.SchemaError, match="fleet init"):
            schema.check_version(conn)
        assert schema.migrate(conn) == (0, schema.SCHEMA_VERSION)
        assert schema.migrate(conn) == (schema.SCHEMA_VERSION, schema.SCHEMA_VERSION)
        schema.check_version(conn)
        today = datetime.now(UTC).date()
        assert today in schema.existing_partitions(conn, "incidents")
        assert today in schema.existing_partitions(conn, "flows")


def test_a_schema_newer_than_the_code_is_refused_and_untouched(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE og_schema SET version = %s", (schema.SCHEMA_VERSION + 1,))
        conn.execute("CREATE TABLE from_the_future (x int)")
        with pytest.raises(schema.SchemaError, match="newer than this outguard"):
            schema.migrate(conn)
        with pytest.raises(schema.SchemaError, match="upgrade outguard"):
            schema.check_version(conn)
        assert schema.current_version(conn) == schema.SCHEMA_VERSION + 1
        assert conn.execute("SELECT to_regclass('from_the_future')").fetchone() != (None,)


def test_retention_drops_old_partitions_with_their_rows(db: str) -> None:
    today = datetime.now(UTC).date()
    old = [today - timedelta(days=d) for d in (40, 31, 30, 2)]
    with psycopg.connect(db, autocommit=True) as conn:
        schema.ensure_partitions(conn, old)
        for day in [*old, today]:
            ts = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
            conn.execute("INSERT INTO incidents (host_id, id, day, ts, record) VALUES"
                         " (1, %s, %s, %s, '{}')", (f"i{day}", day, ts))
        dropped = schema.drop_before(conn, today - timedelta(days=30))
        assert sorted(dropped) == sorted(schema.partition_name(t, d) for t in schema.PARTITIONED
                                         for d in old[:2])
        left = schema.existing_partitions(conn, "incidents")
        assert old[0] not in left and old[1] not in left and old[2] in left
        ids = {r[0] for r in conn.execute("SELECT id FROM incidents").fetchall()}
        assert ids == {f"i{d}" for d in [*old[2:], today]}


def test_a_rows_day_stays_within_a_day_of_the_servers() -> None:
    from datetime import date

    from outguard.fleet.db import day_of

    today = date(2026, 12, 3)
    noon = datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()
    assert day_of(noon, today) == today
    assert day_of(noon - 86400, today) == date(2026, 12, 2)
    assert day_of(noon - 30 * 86400, today) == date(2026, 12, 2)  # an old outbox: yesterday
    assert day_of(noon + 400 * 86400, today) == date(2026, 12, 4)  # a clock far ahead
    assert day_of(1e300, today) == today


def test_the_servers_housekeeping_keeps_retention_and_makes_tomorrow(db: str) -> None:
    from tests.fleet.conftest import Replicas

    today = datetime.now(UTC).date()
    with psycopg.connect(db, autocommit=True) as conn:
        schema.ensure_partitions(conn, [today - timedelta(days=45), today - timedelta(days=29)])
        conn.execute("DROP TABLE " + schema.partition_name("incidents", today + timedelta(days=1)))
    servers = Replicas(db, count=1)  # --retention-days 30 (the default), a tick every 0.3 s
    try:
        deadline = time.monotonic() + 10
        while True:
            with psycopg.connect(db, autocommit=True) as conn:
                days = schema.existing_partitions(conn, "incidents")
            if today - timedelta(days=45) not in days and today + timedelta(days=1) in days:
                break
            assert time.monotonic() < deadline, days
            time.sleep(0.2)
        assert today - timedelta(days=29) in days
    finally:
        servers.stop()


def test_an_older_schema_is_migrated_step_by_step(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE og_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO og_schema VALUES (1)")
        conn.execute(schema.MIGRATIONS[0])  # a database made by the first release
        with pytest.raises(schema.SchemaError, match="needs"):
            schema.check_version(conn)
        assert schema.migrate(conn) == (1, schema.SCHEMA_VERSION)
        schema.check_version(conn)


def test_policy_versions_are_immutable(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO policy_versions (text, sha256, source) VALUES ('a', 'b', 'c')")
        for sql in ("UPDATE policy_versions SET text = 'x'", "DELETE FROM policy_versions"):
            with pytest.raises(psycopg.errors.RaiseException, match="immutable"):
                conn.execute(sql)
        assert conn.execute("SELECT text FROM policy_versions").fetchall() == [("a",)]
