#!/usr/bin/env python3
"""How fast `suggest` and `simulate` are over a big learned table: 1,000,000 recorded flows
(rows of the store's learned table) to 10,000 distinct destinations.

    .venv/bin/python bench/suggest.py [--rows 1000000] [--destinations 10000]

Targets (issue 16): suggest and simulate each <= 5 s, peak memory <= 300 MB. The table: 50
services (systemd units), each talking to 400 of the destinations (70 % reached by name, under
~2,000 registrable domains, some below public suffixes such as co.uk and s3.amazonaws.com; the
rest bare addresses) from 5 executables in 5 containers on 2 ports: 50 rows per (service,
destination); a hundred rows are classified (JNDI callbacks). It is written once to a real
SQLite store (`record_flows`, not timed) and to a JSON Lines file.

Each measurement runs in a fresh interpreter, so its peak RSS (VmHWM) is its own: the store path
(`Store.flows()` then suggest / simulate, as the CLI does), the `--flows` file path (streamed),
and the floor every path pays, reading the flows alone (the peer the ratios are against).
Prints a table and one JSON line. Not a test: nothing is gated on absolute time.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

TARGET_S = 5.0
TARGET_MB = 300.0
T0 = datetime(2026, 11, 30, tzinfo=UTC)


def destinations(n: int, rnd: random.Random) -> list[tuple[str, tuple[str, ...]]]:
    """(address, names): 70 % named. Addresses from 198.18.0.0/15 (benchmarking range)."""
    out = []
    suffixes = ["com", "net", "org", "co.uk", "io", "de"]
    for i in range(n):
        addr = f"198.18.{i // 250}.{i % 250 + 1}" if i < 60000 else f"2001:db8::{i:x}"
        if rnd.random() < 0.7:
            d = rnd.randrange(2000)
            if d % 50 == 0:
                names: tuple[str, ...] = (f"bucket{i}.s3.amazonaws.com",)
            else:
                names = (f"h{i % 7}.svc{i}.d{d}.example.{suffixes[d % len(suffixes)]}",)
        else:
            names = ()
        out.append((addr, names))
    return out


def make_flows(rows: int, n_dst: int) -> list[dict[str, object]]:
    from outguard.events import LearnedFlow

    rnd = random.Random(16)
    dsts = destinations(n_dst, rnd)
    services = 50
    per = max(1, rows // (services * 50))
    out = []
    for s in range(services):
        unit = f"svc{s}.service"
        ports = (443, 8000 + s)
        chosen = [(s * per + k) % n_dst for k in range(min(per, n_dst))]
        for k, d in enumerate(chosen):
            addr, names = dsts[d]
            for e in range(5):
                for c in range(5):
                    for port in ports:
                        if len(out) >= rows:
                            return out
                        bad = (s * 400 + k) % 10000 == 0 and e == 0 and c == 0
                        first = T0 + timedelta(seconds=rnd.randrange(600000))
                        out.append(LearnedFlow(
                            exe=f"/opt/svc{s}/bin/w{e}", cmdline=(f"/opt/svc{s}/bin/w{e}", "-c"),
                            user=f"svc{s}", uid=2000 + s, unit=unit,
                            cgroup=f"/system.slice/{unit}", container=f"c{c}" if c else None,
                            dst=addr, port=1389 if bad else port, proto="tcp", names=names,
                            count=rnd.randrange(1, 100), first_seen=first,
                            last_seen=first + timedelta(seconds=60), decision="",
                            signature="jndi-callback" if bad else None,
                            severity="critical" if bad else None).to_json())
    return out


CHILD = r'''
import sys, time, json
sys.path.insert(0, SRC)
from pathlib import Path
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
base = hwm()
t = time.perf_counter()
from outguard.journey.flowfile import read_flows
from outguard.journey.render import render
from outguard.journey.suggest import suggest
from outguard.journey.simulate import LearnedNames, simulate
from outguard.pipeline import load_policy, lower_policy
from outguard.store.sqlite import SQLiteStore
t_import = time.perf_counter() - t
REGRESSIONS = []
t = time.perf_counter()
if SOURCE == "store":
    db = SQLiteStore(Path(STORE), readonly=True)
    got = db.flows()
    db.close()
    source = lambda: got
else:
    source = lambda: read_flows(Path(FILE))
if WHAT == "read":
    n = sum(1 for _ in source())
elif WHAT == "suggest":
    text = render(suggest(source(), user_known=lambda _n: True))
    Path(OUT).write_text(text)
    n = text.count("- name:")
else:
    names = LearnedNames(source())
    rs = lower_policy(load_policy(Path(OUT)), resolver=names.resolver)
    s = simulate(rs, source(), names=names)
    n = s.flows
    REGRESSIONS.append(s.regressions)
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": hwm(), "base_mb": base,
                  "n": n, "regressions": REGRESSIONS[0] if REGRESSIONS else None}))
'''


def measure(what: str, source: str, files: dict[str, str]) -> dict[str, float]:
    code = CHILD
    for key, value in {"SRC": str(BENCH.parent / "src"), "WHAT": what, "SOURCE": source,
                       **files}.items():
        code = code.replace(key, repr(value), 1) if key in ("SRC",) else \
            code.replace(f"{key}", repr(value)) if key in ("WHAT", "SOURCE", "STORE", "FILE",
                                                           "OUT") else code
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{what} from {source} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--destinations", type=int, default=10_000)
    args = parser.parse_args()
    from outguard.events import LearnedFlow
    from outguard.store.sqlite import SQLiteStore

    with tempfile.TemporaryDirectory(prefix="og-bench-suggest-") as tmp:
        store, file, out = Path(tmp) / "events.db", Path(tmp) / "flows.jsonl", \
            Path(tmp) / "suggested.yaml"
        t = time.perf_counter()
        rows = make_flows(args.rows, args.destinations)
        with file.open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        db = SQLiteStore(store, max_flows=max(args.rows, 1))
        for i in range(0, len(rows), 50_000):
            db.record_flows([LearnedFlow.from_json(r) for r in rows[i:i + 50_000]])
        db.close()
        distinct = len({r["dst"] for r in rows})
        print(f"setup: {len(rows)} rows, {distinct} destinations, {time.perf_counter() - t:.1f}"
              " s (not timed)", file=sys.stderr)
        del rows
        files = {"STORE": str(store), "FILE": str(file), "OUT": str(out)}
        results: dict[str, dict[str, float]] = {}
        for source in ("store", "file"):
            for what in ("read", "suggest", "simulate"):
                results[f"{what}-{source}"] = got = measure(what, source, files)
                print(f"{what:9} from {source:5}: {got['seconds']:6.2f} s, peak RSS"
                      f" {got['peak_mb']:6.1f} MB", file=sys.stderr)
    print()
    print(f"{'step':22} {'seconds':>8} {'x read':>7} {'peak MB':>8}  target")
    ok = True
    for key, got in results.items():
        what, source = key.split("-")
        floor = results[f"read-{source}"]["seconds"]
        good = what == "read" or (got["seconds"] <= TARGET_S and got["peak_mb"] <= TARGET_MB)
        ok &= good
        target = "" if what == "read" else f"<= {TARGET_S:.0f} s, <= {TARGET_MB:.0f} MB: " + \
            ("ok" if good else "MISSED")
        print(f"{key:22} {got['seconds']:8.2f} {got['seconds'] / floor:7.2f}"
              f" {got['peak_mb']:8.1f}  {target}")
    print(json.dumps({"bench": "suggest", "rows": args.rows,
                      "destinations": args.destinations, "results": results, "ok": ok}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
