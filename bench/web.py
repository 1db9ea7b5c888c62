#!/usr/bin/env python3
"""The dashboard's incidents page and API over 1,000,000 stored incidents, beside the same
query on the bare store.

    .venv/bin/python bench/web.py [--incidents 1000000] [--requests 200] [--keep DB]

Target (issue 19): p95 <= 100 ms per request on this machine. The incidents are written
straight into a SQLite store (the agent's schema, one transaction): 2,000 processes, 50,000
destinations, 30 days; rules default 70 %, deny:tor 10 %, feed deny:threat-intel 10 %,
deny:ldap-out 5 %, dns:blocked 5 %; severities info 10 %, low 50 %, medium 25 %, high 12 %,
critical 3 %. The dashboard runs as the agent runs it: uvicorn in an asyncio loop (on a thread
here), the store opened read-only; requests go over loopback HTTP with the bearer token
(httpx, one keep-alive connection). The peer is the bare store: the same page query
(`SQLiteStore.incidents_page`, and for the HTML page the rule list too) called directly, in the
same process, same run. Each case is timed `--requests` times under flock /tmp/og-bench.lock.
Prints a table and one JSON line. Not a test: nothing is gated on absolute time.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

from outguard.store.pages import Cursor, PageQuery  # noqa: E402
from outguard.store.sqlite import COLUMNS, SQLiteStore  # noqa: E402

LOCK = "/tmp/og-bench.lock"
SEVERITIES = [("info", 10), ("low", 50), ("medium", 25), ("high", 12), ("critical", 3)]
RULES = [("default", 70), ("deny:tor", 10), ("deny:threat-intel", 10), ("deny:ldap-out", 5),
         ("dns:blocked", 5)]


def _pick(rnd: random.Random, table: list[tuple[str, int]]) -> str:
    return rnd.choices([v for v, _w in table], [w for _v, w in table])[0]


def generate(path: Path, n: int, seed: int = 7) -> float:
    """`n` incidents into a new store at `path`; returns the seconds it took."""
    start = time.perf_counter()
    SQLiteStore(path).close()  # the schema, migrated, as the agent makes it
    rnd = random.Random(seed)
    now = time.time()
    procs = [f"/opt/app{i % 200}/bin/worker-{i}" for i in range(2000)]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    sql = f"INSERT INTO incidents ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    db.execute("BEGIN")
    batch: list[tuple[Any, ...]] = []
    for i in range(n):
        rule, severity = _pick(rnd, RULES), _pick(rnd, SEVERITIES)
        seen = now - rnd.random() * 30 * 86400
        dst = f"198.51.{100 + rnd.randrange(13)}.{rnd.randrange(256)}" if rnd.random() < 0.5 \
            else f"203.0.113.{rnd.randrange(256)}"
        proc = procs[rnd.randrange(len(procs))]
        cls = json.dumps([["explicit-deny", "destination explicitly denied", severity]])
        batch.append((f"b{i:08d}", proc, dst, 443 if rule != "dns:blocked" else 53, rule, "tcp",
                      "explicit-deny", "destination explicitly denied", severity, seen - 5,
                      seen, rnd.randrange(1, 50), 1000 + rnd.randrange(30000), 1000, "app",
                      json.dumps([proc, "--serve"]), f"app{rnd.randrange(200)}.service",
                      "[]", None, None, None, cls, 0, "dropped", 1, "/usr/lib/systemd/systemd"))
        if len(batch) == 20000:
            db.executemany(sql, batch)
            batch.clear()
    db.executemany(sql, batch)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - start


class Served:
    """The dashboard over the store, served by uvicorn on its own loop and thread."""

    def __init__(self, state: Path, store: Path) -> None:
        from outguard.policy.webconf import WebConfig
        from outguard.web.app import WebServer, build
        from outguard.web.auth import Secrets, load_token
        from outguard.web.sources import Sources

        self.token = load_token(state)
        self.app = build(Sources(state_dir=state, store_path=store), Secrets(self.token))
        self.server = WebServer(self.app, WebConfig(listen="127.0.0.1:0"))
        self.url = self.server.url.rstrip("/")
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.server.serve(self._stop))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    fn()  # warm: the first read pages the index in
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def cases(store: SQLiteStore) -> list[tuple[str, str, Callable[[SQLiteStore], Any]]]:
    """(name, the request's path, the bare store's same query)."""
    deep = store.incidents_page(PageQuery(limit=1))[0][0]
    # a cursor half way down the table: page 10,000 of 50, reached without an OFFSET
    mid = store._read("SELECT last_seen, rowid FROM incidents ORDER BY last_seen LIMIT 1 OFFSET ?",
                      [store._read("SELECT COUNT(*) FROM incidents", [])[0][0] // 2])[0]
    cur = Cursor(mid[0], mid[1]).text()
    page = lambda **kw: (lambda s: s.incidents_page(PageQuery(**kw)))  # noqa: E731
    with_rules = lambda **kw: (lambda s: (s.incidents_page(PageQuery(**kw)),  # noqa: E731
                                          s.rule_names()))
    return [
        ("api: newest 50", "/api/incidents?limit=50", page(limit=50)),
        ("api: page at 50 %", f"/api/incidents?limit=50&before={cur}",
         page(limit=50, before=Cursor.parse(cur))),
        ("api: severity >= critical", "/api/incidents?severity=critical",
         page(min_severity="critical")),
        ("api: rule deny:ldap-out", "/api/incidents?rule=deny:ldap-out", page(rule="deny:ldap-out")),
        ("api: process (1 of 200 apps)", "/api/incidents?process=/opt/app17/",
         page(process="/opt/app17/")),
        ("api: process matching none", "/api/incidents?process=no-such-process",
         page(process="no-such-process")),
        ("api: one incident", f"/api/incidents/{deep.id}", lambda s: s.incident(deep.id)),
        ("page: /incidents", "/incidents", with_rules(limit=50)),
        ("page: /incidents filtered", "/incidents?severity=high&rule=deny:tor",
         with_rules(min_severity="high", rule="deny:tor")),
        ("page: /incidents at 50 %", f"/incidents?before={cur}",
         with_rules(limit=50, before=Cursor.parse(cur))),
    ]


def measure(db: Path, n: int) -> list[dict[str, Any]]:
    import httpx

    state = Path(tempfile.mkdtemp(prefix="og-bench-web-state-"))
    served = Served(state, db)
    bare = SQLiteStore(db, readonly=True)
    out = []
    try:
        client = httpx.Client(base_url=served.url, timeout=30,
                              headers={"authorization": f"Bearer {served.token}"})
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for name, path, query in cases(bare):
                def get(path: str = path) -> None:
                    got = client.get(path)
                    assert got.status_code == 200, (path, got.status_code, got.text[:200])
                web = timed(get, n)
                peer = timed(lambda query=query: query(bare), n)
                out.append({"case": name, "web_p50_ms": statistics.median(web),
                            "web_p95_ms": p95(web), "store_p50_ms": statistics.median(peer),
                            "store_p95_ms": p95(peer), "ratio_p95": p95(web) / p95(peer)})
        client.close()
    finally:
        bare.close()
        served.close()
        shutil.rmtree(state, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--incidents", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--keep", type=Path, help="a store to reuse (made there if missing)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="og-bench-web-"))
    db = args.keep or tmp / "events.db"
    try:
        if not db.exists():
            took = generate(db, args.incidents)
            print(f"wrote {args.incidents:,} incidents in {took:.1f} s "
                  f"({db.stat().st_size / 1e6:.0f} MB)")
        rows = measure(db, args.requests)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # (--keep's store is elsewhere: kept)
    print(f"{'case':32} {'web p50':>9} {'web p95':>9} {'store p50':>10} {'store p95':>10}"
          f" {'ratio':>6}")
    for r in rows:
        print(f"{r['case']:32} {r['web_p50_ms']:8.2f}  {r['web_p95_ms']:8.2f}"
              f"  {r['store_p50_ms']:9.2f}  {r['store_p95_ms']:9.2f} {r['ratio_p95']:6.1f}"
              + ("  OVER 100 ms" if r["web_p95_ms"] > 100 else ""))
    print(json.dumps({"bench": "web", "incidents": args.incidents, "requests": args.requests,
                      "target_p95_ms": 100, "cases": rows}))
    return 0 if all(r["web_p95_ms"] <= 100 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
