"""The fleet's PostgreSQL schema: numbered migrations, day partitions, retention.

`outguard fleet init DSN` runs `migrate`; `fleet serve` and the operator commands call
`check_version` first. Every migration runs in its own transaction with the version row, under
an advisory lock so two `init`s never run one migration twice; a database whose schema is newer
than this code is refused, not touched. Incidents and learned flows live in tables partitioned
by day (native range partitioning): `ensure_partitions` creates the days rows need, `drop_before`
is retention (a partition dropped is a day gone, no DELETE, no vacuum debt). Policies are
immutable numbered versions (`policy_versions`, never updated).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from outguard.errors import OutguardError

MIGRATIONS: tuple[str, ...] = (
    # 1: hosts and their credentials, policies, rollouts, day-partitioned incidents and flows
    """
    CREATE TABLE policy_versions (
        version integer PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
        text text NOT NULL, sha256 text NOT NULL, source text NOT NULL,
        created timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE hosts (
        id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
        name text NOT NULL UNIQUE,
        credential_sha256 text NOT NULL UNIQUE,
        enrolled timestamptz NOT NULL DEFAULT now(),
        revoked timestamptz,
        last_seen timestamptz,
        agent_version text, mode text, applied_version integer, last_result text,
        last_detail text, reported_lockdown double precision, blocked_rate double precision,
        assigned_version integer REFERENCES policy_versions,
        assigned_rollout bigint,
        lockdown_until double precision
    );
    CREATE TABLE enroll_tokens (
        sha256 text PRIMARY KEY, host text,
        created timestamptz NOT NULL DEFAULT now(), expires timestamptz NOT NULL,
        used timestamptz, used_by bigint REFERENCES hosts
    );
    CREATE TABLE rollouts (
        id bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY,
        version integer NOT NULL REFERENCES policy_versions,
        selector text NOT NULL, waves integer NOT NULL, current_wave integer NOT NULL DEFAULT 0,
        state text NOT NULL CHECK (state IN ('running', 'paused', 'halted', 'aborted', 'done')),
        reason text NOT NULL DEFAULT '',
        max_rate_jump double precision NOT NULL, soak_seconds double precision NOT NULL,
        created timestamptz NOT NULL DEFAULT now(), wave_started timestamptz
    );
    CREATE TABLE rollout_hosts (
        rollout_id bigint NOT NULL REFERENCES rollouts,
        host_id bigint NOT NULL REFERENCES hosts,
        wave integer NOT NULL,
        previous_version integer,
        assigned timestamptz, result text, detail text, reported timestamptz,
        baseline_rate double precision,
        PRIMARY KEY (rollout_id, host_id)
    );
    CREATE TABLE incidents (
        host_id bigint NOT NULL, id text NOT NULL, day date NOT NULL,
        ts timestamptz NOT NULL, received timestamptz NOT NULL DEFAULT now(),
        record jsonb NOT NULL,
        PRIMARY KEY (host_id, id, day)
    ) PARTITION BY RANGE (day);
    CREATE TABLE flows (
        host_id bigint NOT NULL, id text NOT NULL, day date NOT NULL,
        ts timestamptz NOT NULL, received timestamptz NOT NULL DEFAULT now(),
        record jsonb NOT NULL,
        PRIMARY KEY (host_id, id, day)
    ) PARTITION BY RANGE (day);
    CREATE INDEX incidents_ts ON incidents (ts);
    CREATE INDEX flows_ts ON flows (ts);
    """,
    # 2: a stored policy version can never change or go away (hosts and rollouts refer to it)
    """
    CREATE FUNCTION og_policy_version_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'policy version % is immutable: push a new version', OLD.version;
    END $$;
    CREATE TRIGGER policy_versions_immutable BEFORE UPDATE OR DELETE ON policy_versions
        FOR EACH ROW EXECUTE FUNCTION og_policy_version_immutable();
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
PARTITIONED = ("incidents", "flows")
LOCK = 0x6F67_666C  # pg_advisory_xact_lock key of migrations and partition DDL ("ogfl")


class SchemaError(OutguardError):
    """The database's schema cannot be used by this code (too new, too old, not initialised)."""


def current_version(conn: psycopg.Connection) -> int:
    """The schema version the database records; 0 for a database never initialised."""
    row = conn.execute("SELECT to_regclass('og_schema')").fetchone()
    if row is None or row[0] is None:
        return 0
    got = conn.execute("SELECT version FROM og_schema").fetchone()
    return int(got[0]) if got else 0


def _too_new(found: int) -> SchemaError:
    return SchemaError(
        f"the database's fleet schema is version {found}, newer than this outguard's"
        f" ({SCHEMA_VERSION}): upgrade outguard on this machine; nothing was changed")


def migrate(conn: psycopg.Connection) -> tuple[int, int]:
    """Bring the schema to SCHEMA_VERSION, one transaction per migration: (from, to)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS og_schema (version integer NOT NULL)")
        if conn.execute("SELECT count(*) FROM og_schema").fetchone() == (0,):
            conn.execute("INSERT INTO og_schema VALUES (0)")
    start = current_version(conn)
    if start > SCHEMA_VERSION:
        raise _too_new(start)
    for number in range(start + 1, SCHEMA_VERSION + 1):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
            # another `init` may have run it while we waited for the lock
            if current_version(conn) >= number:
                continue
            conn.execute(MIGRATIONS[number - 1])
            conn.execute("UPDATE og_schema SET version = %s", (number,))
    today = datetime.now(UTC).date()
    ensure_partitions(conn, [today + timedelta(days=d) for d in range(3)])
    return start, SCHEMA_VERSION


def check_version(conn: psycopg.Connection) -> None:
    """Refuse a database this code cannot use, saying what to do."""
    found = current_version(conn)
    if found > SCHEMA_VERSION:
        raise _too_new(found)
    if found < SCHEMA_VERSION:
        raise SchemaError(
            f"the database's fleet schema is version {found}, this outguard needs"
            f" {SCHEMA_VERSION}: run `outguard fleet init DSN` first")


def partition_name(table: str, day: date) -> str:
    return f"{table}_{day:%Y%m%d}"


def existing_partitions(conn: psycopg.Connection, table: str) -> list[date]:
    """The days `table` has a partition for, oldest first."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", (table,)).fetchall()
    days = [datetime.strptime(r[0][len(table) + 1:], "%Y%m%d").date() for r in rows]
    return sorted(days)


def ensure_partitions(conn: psycopg.Connection, days: list[date]) -> None:
    """Create the day partitions of both tables that `days` need, in one transaction. Replicas
    may race here: the advisory lock makes the second wait and then find them made."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        for table in PARTITIONED:
            have = set(existing_partitions(conn, table))
            for day in sorted(set(days) - have):
                conn.execute(sql.SQL(
                    "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(partition_name(table, day)), sql.Identifier(table),
                    sql.Literal(day), sql.Literal(day + timedelta(days=1))))


def drop_before(conn: psycopg.Connection, cutoff: date) -> list[str]:
    """Retention: drop every day partition older than `cutoff`; the names dropped."""
    dropped = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        for table in PARTITIONED:
            for day in existing_partitions(conn, table):
                if day < cutoff:
                    name = partition_name(table, day)
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                    dropped.append(name)
    return dropped
