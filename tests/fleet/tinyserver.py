"""A tiny real fleet server for the agent's tests: Starlette on uvicorn (a thread), HTTP/1.1,
with just what the agent side needs of FLEET-API.md — /v1/incidents and /v1/flows (upsert by
id), /v1/enroll, /v1/policy (ETag, long-poll) and /v1/report — and knobs to misbehave: answer
5xx, 429, refuse an item, lose the answer after the commit, or stop listening altogether.
The real server is w20a's `fleet serve`; this one lets the sender and the client be tested
before it and with failures it cannot be told to have."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Behaviour:
    fail_next: int = 0  # answer 503 to this many batch posts
    throttle_next: int = 0  # answer 429 (Retry-After: throttle_s)
    throttle_s: float = 0.3
    lose_answer_next: int = 0  # commit the batch, then answer 500 (the answer is "lost")
    refuse_ids: set[str] = field(default_factory=set)  # a batch holding one of these: 422
    credential: str = "cred-1"


class Tiny:
    def __init__(self, *, certfile: Path | None = None, keyfile: Path | None = None) -> None:
        self.b = Behaviour()
        self.rows: dict[str, dict[str, dict[str, Any]]] = {"incidents": {}, "flows": {}}
        self.posts: list[tuple[str, int, int]] = []  # (kind, items, status)
        self.reports: list[dict[str, Any]] = []
        self.tokens = {"tok-1"}
        self.policy: dict[str, Any] | None = None  # PolicyResponse body
        self.changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.certfile, self.keyfile = certfile, keyfile
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.certfile else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _auth(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.b.credential}"

    async def _batch(self, request: Request) -> Response:
        kind = request.url.path.rsplit("/", 1)[1]
        if not self._auth(request):
            return JSONResponse({"error": "no or bad credential"}, 401)
        items = json.loads(await request.body())[kind]
        if self.b.fail_next > 0:
            self.b.fail_next -= 1
            self.posts.append((kind, len(items), 503))
            return JSONResponse({"error": "database away"}, 503)
        if self.b.throttle_next > 0:
            self.b.throttle_next -= 1
            self.posts.append((kind, len(items), 429))
            return JSONResponse({"error": "slow down"}, 429,
                                headers={"Retry-After": str(self.b.throttle_s)})
        if any(i["id"] in self.b.refuse_ids for i in items):
            self.posts.append((kind, len(items), 422))
            return JSONResponse({"error": "incidents[0].record: refused"}, 422)
        rows = self.rows[kind]
        new = [i for i in items if i["id"] not in rows]
        for i in new:
            rows[i["id"]] = i
        if self.b.lose_answer_next > 0:
            self.b.lose_answer_next -= 1
            self.posts.append((kind, len(items), 500))
            return JSONResponse({"error": "lost"}, 500)
        self.posts.append((kind, len(items), 200))
        return JSONResponse({"accepted": len(new), "duplicates": len(items) - len(new)})

    async def _enroll(self, request: Request) -> Response:
        body = json.loads(await request.body())
        if body["token"] not in self.tokens:
            return JSONResponse({"error": "enrol token already used"}, 409)
        self.tokens.discard(body["token"])
        return JSONResponse({"host_id": 7, "credential": self.b.credential}, 201)

    def _etag(self) -> str | None:
        p = self.policy
        return None if p is None else f'"{p["version"]}-{p["lockdown_until"] or 0}"'

    async def _policy(self, request: Request) -> Response:
        if not self._auth(request):
            return JSONResponse({"error": "no or bad credential"}, 401)
        wait = float(request.query_params.get("wait", "0"))
        deadline = time.monotonic() + wait
        while True:
            etag = self._etag()
            if etag is not None and etag != request.headers.get("if-none-match"):
                return JSONResponse(self.policy, headers={"ETag": etag})
            left = deadline - time.monotonic()
            if left <= 0:
                return Response(status_code=304 if etag else 204)
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def _report(self, request: Request) -> Response:
        if not self._auth(request):
            return JSONResponse({"error": "no or bad credential"}, 401)
        self.reports.append(json.loads(await request.body()))
        return JSONResponse({"ok": True})

    def set_policy(self, body: dict[str, Any] | None) -> None:
        self.policy = body
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.changed.set)

    def start(self) -> Tiny:
        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            self._loop = asyncio.get_running_loop()
            self.changed = asyncio.Event()
            yield

        app = Starlette(routes=[
            Route("/v1/incidents", self._batch, methods=["POST"]),
            Route("/v1/flows", self._batch, methods=["POST"]),
            Route("/v1/enroll", self._enroll, methods=["POST"]),
            Route("/v1/policy", self._policy, methods=["GET"]),
            Route("/v1/report", self._report, methods=["POST"]),
        ], lifespan=lifespan)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                ssl_certfile=str(self.certfile) if self.certfile else None,
                                ssl_keyfile=str(self.keyfile) if self.keyfile else None,
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("tiny fleet server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = self._thread = None

    def __enter__(self) -> Tiny:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
