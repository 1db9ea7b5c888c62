"""Simulated hosts for the fleet tests: enrol with a token, then speak the API with httpx
(the agent side's own client is w20b's; these speak the wire as FLEET-API.md says)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import psycopg

from outguard.fleet import ops


def token(dsn: str, host: str | None = None) -> str:
    from datetime import timedelta

    with ops.connect(dsn) as conn:
        return ops.enroll_token(conn, host, timedelta(hours=1))


class SimHost:
    def __init__(self, url: str, dsn: str, name: str) -> None:
        self.url = url
        self.name = name
        got = httpx.post(f"{url}/v1/enroll", json={"token": token(dsn, name), "host": name,
                                                    "agent_version": "test"})
        assert got.status_code == 201, got.text
        self.host_id = got.json()["host_id"]
        self.credential = got.json()["credential"]
        self.http = httpx.Client(base_url=url, timeout=70,
                                 headers={"Authorization": f"Bearer {self.credential}"})

    def policy(self, wait: float = 0, etag: str | None = None) -> httpx.Response:
        headers = {"If-None-Match": etag} if etag else {}
        return self.http.get("/v1/policy", params={"wait": wait}, headers=headers)

    def report(self, version: int | None, rollout_id: int | None, result: str,
               blocked_rate: float = 0.0, detail: str = "") -> httpx.Response:
        got = self.http.post("/v1/report", json={
            "version": version, "rollout_id": rollout_id, "result": result, "detail": detail,
            "mode": "enforce", "agent_version": "test", "lockdown_until": None,
            "blocked_rate": blocked_rate})
        assert got.status_code == 200, got.text
        return got

    def incidents(self, records: list[dict[str, Any]], ids: list[str] | None = None
                  ) -> httpx.Response:
        ids = ids or [uuid.uuid4().hex for _ in records]
        return self.http.post("/v1/incidents", json={"incidents": [
            {"id": i, "ts": time.time(), "record": r} for i, r in zip(ids, records, strict=True)]})


def incident(n: int, rule: str = "default", exe: str = "/usr/bin/curl", severity: str = "low",
             count: int = 1) -> dict[str, Any]:
    return {"id": f"inc{n}", "severity": severity, "signature": "none", "title": "blocked",
            "count": count, "first_seen": "2026-12-03T00:00:00+00:00",
            "last_seen": "2026-12-03T00:00:00+00:00",
            "process": {"exe": exe, "pid": 1, "uid": 0, "user": "root", "cmdline": [],
                        "unit": None, "container": None, "ppid": None, "parent": None,
                        "attribution_failure": None},
            "dst": "203.0.113.7", "dport": 443, "proto": "tcp", "rule": rule, "action": "dropped",
            "names": [], "feed": None, "classifications": []}


def rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]
