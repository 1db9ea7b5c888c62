#!/usr/bin/env python3
"""Fleet: incidents through the API into PostgreSQL, beside `COPY` of the same rows.

    .venv/bin/python bench/fleet.py [--rows N] [--batch B] [--clients C] [--replicas R]

Issue target: the API's sustained rows/s >= 0.5x `COPY` of the same rows from one client. Both
go to one private PostgreSQL cluster (tests/fleet/pgserver.py: Debian's binaries, a temporary
directory, a unix socket, durable settings: fsync and synchronous_commit on) with the fleet
schema. outguard: `outguard fleet serve` replicas (plain HTTP on 127.0.0.1), C concurrent
clients, one enrolled host each, POSTing pre-encoded batches of B incidents (each ~650 bytes of
JSON, an `Incident.to_json()`), round robin over the replicas; every batch is one statement
(validate, partition check, INSERT ... FROM jsonb_to_recordset ON CONFLICT). Peer: one psycopg
client `COPY incidents (...) FROM STDIN` of the same rows in one transaction. The tables are emptied
between runs; runs alternate API, COPY, and the medians are compared. Holds flock
/tmp/og-bench.lock while timing. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import benchlib as bl

sys.path.insert(0, str(bl.REPO_DIR))
sys.path.insert(0, str(bl.REPO_DIR / "src"))

import httpx
import orjson
import psycopg

from outguard.fleet import ops, schema
from tests.fleet.pgserver import DIE_WITH_PARENT, PgServer, _free_port


def record(n: int) -> dict[str, object]:
    return {"id": f"{n:016x}", "severity": "high", "signature": "jndi-ldap",
            "title": "Java process to LDAP port: JNDI callback", "count": 1 + n % 7,
            "first_seen": "2026-12-03T10:00:00+00:00", "last_seen": "2026-12-03T10:00:05+00:00",
            "process": {"exe": "/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "pid": 4242 + n % 100,
                        "uid": 998, "user": "tomcat", "cmdline": ["java", "-jar", "/srv/app.jar"],
                        "unit": "app.service", "container": None, "ppid": 1, "parent": "/sbin/init",
                        "attribution_failure": None},
            "dst": f"203.0.113.{n % 250}", "dport": 1389, "proto": "tcp", "rule": "default",
            "action": "dropped", "names": ["evil.example"], "feed": None,
            "classifications": [{"signature": "jndi-ldap", "title": "JNDI callback",
                                 "severity": "high"}]}


def start_replicas(dsn: str, count: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    procs, urls = [], []
    for _ in range(count):
        port = _free_port()
        procs.append(subprocess.Popen(
            [*DIE_WITH_PARENT, str(bl.VENV_PYTHON), "-m", "outguard", "fleet", "serve", "--db",
             dsn, "--no-tls", "--listen", f"127.0.0.1:{port}", "--rate", "100000",
             "--pool-size", "12"]))
        urls.append(f"http://127.0.0.1:{port}")
    for url in urls:
        bl.wait_for(lambda url=url: _up(url), f"fleet serve at {url}", 30)
    return procs, urls


def _up(url: str) -> bool:
    try:
        httpx.get(url + "/v1/nothing", timeout=1)
        return True
    except httpx.TransportError:
        return False


def enrol(dsn: str, url: str, n: int) -> list[tuple[int, str]]:
    out = []
    with ops.connect(dsn) as conn:
        for i in range(n):
            tok = ops.enroll_token(conn, None, timedelta(hours=1))
            got = httpx.post(url + "/v1/enroll", json={"token": tok, "host": f"bench-{i}",
                                                       "agent_version": "bench"}).json()
            out.append((got["host_id"], got["credential"]))
    return out


def api_run(urls: list[str], hosts: list[tuple[int, str]], bodies: list[list[bytes]]) -> float:
    """Every client sends its batches; seconds until the last answer."""
    errors: list[str] = []
    go = threading.Barrier(len(hosts) + 1)

    def client(k: int) -> None:
        url = urls[k % len(urls)]
        with httpx.Client(base_url=url, timeout=120, headers={
                "Authorization": f"Bearer {hosts[k][1]}",
                "Content-Type": "application/json"}) as http:
            go.wait()
            for body in bodies[k]:
                got = http.post("/v1/incidents", content=body)
                if got.status_code != 200:
                    errors.append(got.text)
                    return

    threads = [threading.Thread(target=client, args=(k,)) for k in range(len(hosts))]
    for t in threads:
        t.start()
    go.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    if errors:
        raise bl.BenchError(f"API refused a batch: {errors[0]}")
    return took


def copy_run(conn: psycopg.Connection, rows: list[tuple[int, str, object, datetime, str]]
             ) -> float:
    start = time.perf_counter()
    with conn.cursor() as cur, cur.copy(
            "COPY incidents (host_id, id, day, ts, record) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    conn.commit()
    return time.perf_counter() - start


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_side(pg: PgServer, replicas: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far of the cluster's processes (the postmaster's children; backends that
    exited are not counted: the pools keep theirs), of the replicas and of this process."""
    master = int((pg.data / "postmaster.pid").read_text().split()[0])
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == master:
                kids.append(int(entry.name))
    return {"postgres": _cpu(master) + sum(_cpu(k) for k in kids),
            "replicas": sum(_cpu(p.pid) for p in replicas), "clients": _cpu(os.getpid())}


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        got = conn.execute("SELECT count(*) FROM incidents").fetchone()
        return int(got[0]) if got else 0


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE incidents")
        conn.execute("CHECKPOINT")  # neither run pays for the other's dirty pages


def measure(args: argparse.Namespace) -> dict[str, object]:
    with PgServer(fast=False) as pg:
        dsn = pg.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            schema.migrate(conn)
        procs, urls = start_replicas(dsn, args.replicas)
        try:
            hosts = enrol(dsn, urls[0], args.clients)
            per = args.rows // args.clients
            now = time.time()
            bodies, copy_rows, n = [], [], 0
            for host_id, _cred in hosts:
                mine = []
                for start in range(0, per, args.batch):
                    items = []
                    for _ in range(min(args.batch, per - start)):
                        rec, key = record(n), uuid.uuid4().hex
                        items.append({"id": key, "ts": now, "record": rec})
                        copy_rows.append((host_id, key, datetime.fromtimestamp(now, UTC).date(),
                                          datetime.fromtimestamp(now, UTC),
                                          orjson.dumps(rec).decode()))
                        n += 1
                    mine.append(orjson.dumps({"incidents": items}))
                bodies.append(mine)
            total = n
            api_times, copy_times, api_cpus, copy_cpus = [], [], [], []
            with open("/tmp/og-bench.lock", "w") as lock, psycopg.connect(dsn) as copier:
                bl.log("waiting for /tmp/og-bench.lock")
                fcntl.flock(lock, fcntl.LOCK_EX)
                load = os.getloadavg()[0]  # the machine is shared: say how busy it was
                for rep in range(args.repeats):
                    truncate(dsn)
                    before = cpu_by_side(pg, procs)
                    api_times.append(api_run(urls, hosts, bodies))
                    after = cpu_by_side(pg, procs)
                    api_cpu = {k: round(after[k] - before[k], 2) for k in after}
                    api_cpus.append(sum(api_cpu.values()))
                    if count(dsn) != total:
                        raise bl.BenchError(f"API stored {count(dsn)} rows of {total}")
                    truncate(dsn)
                    before = cpu_by_side(pg, procs)
                    copy_times.append(copy_run(copier, copy_rows))
                    after = cpu_by_side(pg, procs)
                    copy_cpu = {k: round(after[k] - before[k], 2) for k in after}
                    copy_cpus.append(sum(copy_cpu.values()))
                    if count(dsn) != total:
                        raise bl.BenchError(f"COPY stored {count(dsn)} rows of {total}")
                    bl.log(f"run {rep + 1}: API {total / api_times[-1]:,.0f} rows/s"
                           f" in {api_times[-1]:.2f}s (CPU s: {api_cpu}),"
                           f" COPY {total / copy_times[-1]:,.0f} rows/s in {copy_times[-1]:.2f}s"
                           f" (CPU s: {copy_cpu})")
        finally:
            for proc in procs:
                with contextlib.suppress(Exception):
                    bl.stop_process(proc, "fleet serve")  # type: ignore[arg-type]
    api = total / bl.median(api_times)
    peer = total / bl.median(copy_times)
    return {"rows": total, "batch": args.batch, "clients": args.clients,
            "replicas": args.replicas, "api_rows_per_s": round(api),
            "copy_rows_per_s": round(peer), "ratio": round(api / peer, 3), "target": 0.5,
            # CPU microseconds a row, all sides: steadier than rows/s on a shared machine
            "api_cpu_us_per_row": round(bl.median(api_cpus) / total * 1e6, 1),
            "copy_cpu_us_per_row": round(bl.median(copy_cpus) / total * 1e6, 1),
            "cpus": os.cpu_count(), "load_before": load,
            "cpu_seconds_last_run": {"api": api_cpu, "copy": copy_cpu}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bl.install_signal_handlers()
    result = measure(args)
    print(f"API  {result['api_rows_per_s']:>9,} rows/s  ({args.clients} clients, batches of"
          f" {args.batch}, {args.replicas} replicas)")
    print(f"COPY {result['copy_rows_per_s']:>9,} rows/s  (one client, one transaction)")
    print(f"ratio API/COPY {result['ratio']:.3f} (target >= 0.5); CPU a row, all sides: API"
          f" {result['api_cpu_us_per_row']} us, COPY {result['copy_cpu_us_per_row']} us"
          f" (load {result['load_before']:.1f} on {result['cpus']} CPUs)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
