"""Who is asking: enrolment with a one-time token, the per-host credential, the rate per host.

Place in the data flow: every host request of `fleet.server` passes `authenticate` (Bearer
credential → the host's row) and `RateLimiter.allow` before it touches anything else; `enroll`
turns a token from `outguard fleet enroll-token` into a host and its credential. Secrets are
random (`secrets`), shown once, and stored as sha256 only: a copy of the database lets nobody
act as a host. The rate limit is per replica (in memory): with N replicas a host gets at most N
times the rate, which bounds it all the same without shared state.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import psycopg

from outguard.fleet.wire import EnrollRequest, EnrollResponse


class HttpError(Exception):
    """A request refused: the status and the `{"error": ...}` text the client gets."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Host:
    id: int
    name: str


async def authenticate(conn: psycopg.AsyncConnection, header: str | None) -> Host:
    """The host whose credential `header` (`Bearer ...`) carries; 401 otherwise, 403 revoked."""
    if not header or not header.startswith("Bearer "):
        raise HttpError(401, "Authorization: Bearer <credential> is required")
    cur = await conn.execute("SELECT id, name, revoked FROM hosts WHERE credential_sha256 = %s",
                             (sha256(header[len("Bearer "):].strip()),))
    row = await cur.fetchone()
    if row is None:
        raise HttpError(401, "unknown credential")
    if row[2] is not None:
        raise HttpError(403, f"host {row[1]} was revoked")
    return Host(int(row[0]), str(row[1]))


async def enroll(conn: psycopg.AsyncConnection, req: EnrollRequest) -> EnrollResponse:
    """Spend the one-time token on `req.host`: a new host, or a new credential for the host the
    token was made for (a reinstalled machine). Everything in one transaction, the token row
    locked, so two enrolments with one token cannot both win."""
    credential = new_secret()
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT host, used, expires < now() FROM enroll_tokens WHERE sha256 = %s FOR UPDATE",
            (sha256(req.token),))
        row = await cur.fetchone()
        if row is None:
            raise HttpError(401, "token: unknown enrol token")
        bound, used, expired = row
        if used is not None:
            raise HttpError(409, "enrol token already used")
        if expired:
            raise HttpError(401, "token: the enrol token has expired")
        if bound is not None and bound != req.host:
            raise HttpError(403, f"host: this enrol token is for host {bound!r}")
        cur = await conn.execute("SELECT id FROM hosts WHERE name = %s FOR UPDATE", (req.host,))
        existing = await cur.fetchone()
        if existing is not None and bound is None:
            raise HttpError(409, f"host: {req.host!r} is already enrolled (an enrol token made"
                                 " with --host for it may enrol it again)")
        if existing is None:
            cur = await conn.execute(
                "INSERT INTO hosts (name, credential_sha256, agent_version) VALUES (%s, %s, %s)"
                " RETURNING id", (req.host, sha256(credential), req.agent_version))
            got = await cur.fetchone()
            assert got is not None
            host_id = int(got[0])
        else:
            host_id = int(existing[0])
            await conn.execute(
                "UPDATE hosts SET credential_sha256 = %s, revoked = NULL, agent_version = %s"
                " WHERE id = %s", (sha256(credential), req.agent_version, host_id))
        await conn.execute("UPDATE enroll_tokens SET used = now(), used_by = %s WHERE sha256 = %s",
                           (host_id, sha256(req.token)))
    return EnrollResponse(host_id=host_id, credential=credential)


class RateLimiter:
    """A token bucket per key (host id, or peer address before enrolment)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[object, tuple[float, float]] = {}

    def allow(self, key: object, now: float | None = None) -> float:
        """0 when the request may go; else the seconds to wait (Retry-After)."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > 100_000:  # forget idle hosts: a full bucket is the default
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
        return 0.0
