"""`outguard fleet serve`: the stateless HTTPS API (Starlette on uvicorn) in front of PostgreSQL.

Place in the data flow: agents (`fleet.client`, `fleet.sender`) → this app → `fleet.auth`
(who), `fleet.db` (rows, policy, heartbeats), `fleet.rollout` (wave progression) → PostgreSQL.
The app keeps nothing a second replica would need: every fact is in the database, progression
happens in transactions that lock the rollout row, and long-polls wake on LISTEN/NOTIFY, so any
number of replicas can run behind any load balancer. Every request is bounded before it is
parsed (1 MiB, a token bucket per host) and validated by the strict models of `fleet.wire`;
a refused request changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from outguard.fleet import db, rollout, schema
from outguard.fleet.auth import Host, HttpError, RateLimiter, authenticate, enroll
from outguard.fleet.wire import (
    MAX_BODY,
    MAX_WAIT,
    BatchResponse,
    EnrollRequest,
    FlowBatch,
    IncidentBatch,
    OkResponse,
    PolicyResponse,
    ReportRequest,
    etag,
)

M = TypeVar("M", bound=BaseModel)


@dataclass
class Settings:
    dsn: str
    rate: float = 20.0  # requests/s per host (per replica), and per peer address for enrolment
    burst: float = 60.0
    pool_size: int = 10
    tick_seconds: float = 5.0  # the periodic rollout check
    retention_days: int = 30
    listen_dsn: str | None = None  # LISTEN's own, when `dsn` is a transaction-mode PgBouncer


@dataclass
class _State:
    settings: Settings
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]
    sync_pool: ConnectionPool[psycopg.Connection[Any]]
    notifier: db.Notifier
    limiter: RateLimiter
    known_days: set[date] = field(default_factory=set)


def _json(body: BaseModel | dict[str, Any], status: int = 200,
          headers: dict[str, str] | None = None) -> Response:
    data = body.model_dump() if isinstance(body, BaseModel) else body
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


async def _body(request: Request, model: type[M]) -> M:
    return (await _raw_body(request, model))[0]


async def _raw_body(request: Request, model: type[M]) -> tuple[M, bytes]:
    """The request's body as `model`: 413 past MAX_BODY (counted as it arrives, whatever
    Content-Length says), 400 not a JSON object, 422 the wrong shape, naming the field."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise HttpError(413, f"body larger than {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HttpError(413, f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        # pydantic's own JSON parser: one pass, no intermediate Python objects to walk twice
        return model.model_validate_json(raw), raw
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise HttpError(400, f"malformed JSON: {first['msg']}") from None
        if first["type"] == "model_type" and not first["loc"]:
            raise HttpError(400, "the body must be a JSON object") from None
        where = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise HttpError(422, f"{where}: {first['msg']}{more}") from None


def _state(request: Request) -> _State:
    state: _State = request.app.state.fleet
    return state


def _limit(state: _State, key: object) -> None:
    wait = state.limiter.allow(key)
    if wait:
        raise HttpError(429, "too many requests: slow down",
                        {"Retry-After": str(max(1, round(wait + 0.5)))})


async def _host(request: Request) -> Host:
    state = _state(request)
    async with state.pool.connection() as conn:
        host = await authenticate(conn, request.headers.get("authorization"))
    _limit(state, host.id)
    return host


async def post_enroll(request: Request) -> Response:
    state = _state(request)
    _limit(state, ("peer", request.client.host if request.client else "?"))
    req = await _body(request, EnrollRequest)
    async with state.pool.connection() as conn:
        try:
            got = await enroll(conn, req)
        except psycopg.errors.UniqueViolation:
            # another token enrolled this name at the same moment (the token stays unspent)
            raise HttpError(409, f"host: {req.host!r} is already enrolled") from None
    # the late-host rule (rollout.on_enroll): its own transaction, after the enrolment's; should
    # it fail, the housekeeping tick adopts the host into a running rollout all the same
    with contextlib.suppress(psycopg.Error):
        await run_in_threadpool(_on_enroll, state, got.host_id)
    return _json(got, 201)


def _on_enroll(state: _State, host_id: int) -> None:
    with state.sync_pool.connection() as conn:
        rollout.on_enroll(conn, host_id)


def _wait_param(request: Request) -> float:
    raw = request.query_params.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        raise HttpError(400, f"wait: not a number: {raw!r}") from None
    if not 0 <= wait <= MAX_WAIT:
        raise HttpError(400, f"wait: must be 0..{MAX_WAIT:g} seconds")
    return wait


async def get_policy(request: Request) -> Response:
    """The host's version and lockdown; with `wait` and a matching If-None-Match, held until
    either changes (a NOTIFY from anywhere wakes it) or the time is up (304)."""
    wait = _wait_param(request)
    host = await _host(request)
    state = _state(request)
    deadline = time.monotonic() + wait
    seen = request.headers.get("if-none-match")
    while True:
        changed = state.notifier.event()  # before the read: a change after it sets this
        async with state.pool.connection() as conn:
            got = await db.assigned(conn, host.id, time.time())
        if got.version is None and got.lockdown_until is None:
            tag = '"none"'
        else:
            tag = etag(got.version or 0, got.lockdown_until)
        left = deadline - time.monotonic()
        if tag != seen or left <= 0:
            break
        if got.lockdown_until is not None:  # its end changes the answer: wake for it
            left = min(left, max(0.0, got.lockdown_until - time.time()) + 0.05)
        # no periodic re-read: a NOTIFY (or the listener's reconnect) is what wakes a waiter,
        # so 10,000 waiting hosts cost the database nothing until something changes
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout=left)
    headers = {"ETag": tag}
    if tag == seen:
        return Response(status_code=304, headers=headers)
    if tag == '"none"':
        return Response(status_code=204, headers=headers)
    return _json(PolicyResponse(version=got.version or 0, policy=got.policy,
                                rollout_id=got.rollout_id, lockdown_until=got.lockdown_until),
                 headers=headers)


async def post_report(request: Request) -> Response:
    host = await _host(request)
    rep = await _body(request, ReportRequest)
    state = _state(request)
    async with state.pool.connection() as conn:
        in_rollout = await db.record_report(conn, host.id, rep)
    if in_rollout or rep.rollout_id is not None:
        # rare (a host in a rollout): the progression's transaction runs on the sync pool
        await run_in_threadpool(_on_report, state, host.id, rep)
    return _json(OkResponse(ok=True))


def _on_report(state: _State, host_id: int, rep: ReportRequest) -> None:
    with state.sync_pool.connection() as conn:
        rollout.on_report(conn, host_id, rep)


async def _items(request: Request, table: str, model: type[IncidentBatch] | type[FlowBatch]
                 ) -> Response:
    host = await _host(request)
    batch, raw = await _raw_body(request, model)
    items = batch.incidents if isinstance(batch, IncidentBatch) else batch.flows
    state = _state(request)
    async with state.pool.connection() as conn:
        try:
            new = await db.insert_items(conn, table, host.id, items, raw, state.known_days)
        except psycopg.errors.UntranslatableCharacter as exc:
            raise HttpError(422, f"{table}: a record holds text PostgreSQL refuses: {exc}") from None
    return _json(BatchResponse(accepted=new, duplicates=len(items) - new))


async def post_incidents(request: Request) -> Response:
    return await _items(request, "incidents", IncidentBatch)


async def post_flows(request: Request) -> Response:
    return await _items(request, "flows", FlowBatch)


async def get_health(request: Request) -> Response:
    """For the load balancer: 200 when this replica reaches the database and is listening for
    changes (else its long-polls would miss them), 503 otherwise. No credential, no detail."""
    state = _state(request)
    if not state.notifier.listening.is_set():
        raise HttpError(503, "not listening for changes")
    async with state.pool.connection() as conn:
        await conn.execute("SELECT 1")
    return _json(OkResponse(ok=True))


def _guard(handler: Callable[[Request], Awaitable[Response]]
           ) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except HttpError as exc:
            return _json({"error": exc.message}, exc.status, exc.headers)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # the database is away or saturated: the agent's outbox keeps the rows, retry later
            return _json({"error": f"database unavailable: {type(exc).__name__}"}, 503,
                         {"Retry-After": "5"})
    return run


async def _housekeeping(state: _State) -> None:
    """The periodic part of progression (a soak time that ended with no report to trigger
    it), and today's partitions made ahead; every replica runs it, the row locks keep it once."""
    while True:
        # the database may be away: the next tick tries again, requests say so meanwhile
        with contextlib.suppress(psycopg.Error):
            await run_in_threadpool(_tick, state)
        await asyncio.sleep(state.settings.tick_seconds)


def _tick(state: _State) -> None:
    today = datetime.now(UTC).date()
    with state.sync_pool.connection() as conn:
        rollout.tick(conn)
        schema.ensure_partitions(conn, [today, today + timedelta(days=1)])
        if state.settings.retention_days:
            schema.drop_before(conn, today - timedelta(days=state.settings.retention_days))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (404, 405) in the API's error shape."""
    status = getattr(exc, "status_code", 500)
    return _json({"error": str(getattr(exc, "detail", "")) or "error"}, status)


def create_app(settings: Settings) -> Starlette:
    """The API as an ASGI app; the schema is checked at start-up (an old or new one refuses)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            schema.check_version(conn)
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            settings.dsn, min_size=2, max_size=settings.pool_size, open=False, timeout=10,
            kwargs={"autocommit": True})
        sync_pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            settings.dsn, min_size=1, max_size=4, open=False, kwargs={"autocommit": True})
        await pool.open()
        sync_pool.open()
        state = _State(settings, pool, sync_pool, db.Notifier(settings.listen_dsn or settings.dsn),
                       RateLimiter(settings.rate, settings.burst))
        app.state.fleet = state
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(state.notifier.run()),
                         group.create_task(_housekeeping(state))]
                await asyncio.wait_for(state.notifier.listening.wait(), 30)
                yield
                for task in tasks:
                    task.cancel()
        finally:
            await pool.close()
            sync_pool.close()

    routes = [Route("/healthz", _guard(get_health), methods=["GET"]),
              Route("/v1/enroll", _guard(post_enroll), methods=["POST"]),
              Route("/v1/policy", _guard(get_policy), methods=["GET"]),
              Route("/v1/report", _guard(post_report), methods=["POST"]),
              Route("/v1/incidents", _guard(post_incidents), methods=["POST"]),
              Route("/v1/flows", _guard(post_flows), methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: _http_error})


def serve(settings: Settings, host: str, port: int, certfile: str | None, keyfile: str | None,
          max_connections: int = 10_000) -> None:
    """Run the API until SIGTERM/SIGINT (uvicorn's own handling: it drains requests first)."""
    import uvicorn  # noqa: PLC0415 (only `serve` needs the server)

    uvicorn.run(create_app(settings), host=host, port=port, ssl_certfile=certfile,
                ssl_keyfile=keyfile, log_level="warning", access_log=False,
                limit_concurrency=max_connections, timeout_graceful_shutdown=5)
