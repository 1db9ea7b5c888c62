#!/usr/bin/env python3
"""How fast `suggest` and `simulate` are over a big learned table: 1,000,000 recorded flows
(rows of the learned table) to 10,000 distinct destinations.

    .venv/bin/python bench/suggest.py [--rows 1000000] [--destinations 10000]
                                      [--store-rows 100000]

Targets (issue 16): suggest and simulate each <= 5 s, peak memory <= 300 MB. The table: 50
services (systemd units), each talking to 400 destinations (all 10,000 are used; 70 % reached by
name, under ~2,000 registrable domains, some below public suffixes such as co.uk and
s3.amazonaws.com; the rest bare addresses) from 5 executables in 5 containers on 2 ports: 50
rows per (service, destination); a few rows are classified (JNDI callbacks).

Three sources, each step in a fresh interpreter so that its peak RSS (VmHWM) is its own:
- `gen`: the flows made in memory one at a time (no parsing): what suggest and simulate
  themselves cost over 1M flows; the floor is making the flows alone;
- `file`: the JSON Lines file `--flows FILE` reads (streamed, one flow at a time);
- `store`: a real SQLite store (`record_flows`), read as the CLI reads it: suggest and simulate
  over the table summarised in SQL (`store.flowsummary`: GROUP BY walking covering indexes, one
  decision per distinct question), `read` streaming every row as a flow; `--store-rows` rows
  (writing them is the store's own cost, printed, not a target).
The peer each ratio is against is the floor of its source: reading the flows and nothing else.
Prints a table and one JSON line. Not a test: nothing is gated on absolute time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

TARGET_S = 5.0
TARGET_MB = 300.0
T0 = datetime(2026, 11, 30, tzinfo=UTC)
SERVICES = 50


def destination(i: int) -> tuple[str, tuple[str, ...]]:
    """Destination i: (address, names); 70 % named. Addresses in 198.18.0.0/15 (benchmarking)."""
    addr = f"198.18.{i // 250}.{i % 250 + 1}"
    if i % 10 >= 7:
        return addr, ()
    d = (i * 7919) % 2000
    if d % 50 == 0:
        return addr, (f"bucket{i}.s3.amazonaws.com",)
    suffix = ("com", "net", "org", "co.uk", "io", "de")[d % 6]
    return addr, (f"h{i % 7}.svc{i}.d{d}.example.{suffix}",)


def flows(rows: int, n_dst: int) -> Iterator[object]:
    """The table, one LearnedFlow at a time, the same every run."""
    from outguard.events import LearnedFlow

    per = max(1, min(n_dst, rows // (SERVICES * 50)))
    dsts = [destination(i) for i in range(n_dst)]
    made = 0
    for s in range(SERVICES):
        unit, exe_dir = f"svc{s}.service", f"/opt/svc{s}/bin/w"
        for k in range(per):
            addr, names = dsts[(s * per + k) % n_dst]
            for e in range(5):
                for c in range(5):
                    for port in (443, 8000 + s):
                        if made >= rows:
                            return
                        made += 1
                        bad = k == 7 and e == 0 and c == 0 and port == 443
                        first = T0 + timedelta(seconds=(made * 7) % 600000)
                        yield LearnedFlow(
                            exe=f"{exe_dir}{e}", cmdline=(f"{exe_dir}{e}", "-c"), user=f"svc{s}",
                            uid=2000 + s, unit=unit, cgroup=f"/system.slice/{unit}",
                            container=f"c{c}" if c else None, dst=addr,
                            port=1389 if bad else port, proto="tcp", names=names,
                            count=1 + made % 97, first_seen=first,
                            last_seen=first + timedelta(seconds=60), decision="",
                            signature="jndi-callback" if bad else None,
                            severity="critical" if bad else None)


def child(what: str, source: str, rows: int, n_dst: int, tmp: str) -> None:
    """One measurement, in this (fresh) interpreter; prints one JSON line."""
    def hwm() -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    from outguard.journey.flowfile import read_flows, read_names
    from outguard.journey.render import render
    from outguard.journey.simulate import LearnedNames, simulate
    from outguard.journey.suggest import suggest
    from outguard.pipeline import load_policy, lower_policy

    base = hwm()
    start = time.perf_counter()
    if source == "store":
        store_child(what, tmp, base, start)
        return
    if source == "file":
        source_fn = lambda: read_flows(Path(tmp) / "flows.jsonl")  # noqa: E731
    else:
        source_fn = lambda: flows(rows, n_dst)  # noqa: E731
    out: dict[str, object] = {}
    if what == "read":
        out["n"] = sum(1 for _ in source_fn())
    elif what == "suggest":
        text = render(suggest(source_fn(), user_known=lambda _n: True))
        (Path(tmp) / f"suggested-{source}.yaml").write_text(text)
        out["rules"] = text.count("- name:")
    else:
        # as the CLI does: a file's first pass reads only addresses and names
        names = LearnedNames(()).add(read_names(Path(tmp) / "flows.jsonl")) \
            if source == "file" else LearnedNames(source_fn())
        ruleset = lower_policy(load_policy(Path(tmp) / f"suggested-{source}.yaml"),
                               resolver=names.resolver)
        summary = simulate(ruleset, source_fn(), names=names)
        out.update(n=summary.flows, blocked=summary.blocked, regressions=summary.regressions)
    out.update(seconds=time.perf_counter() - start, peak_mb=hwm(), start_mb=base)
    print(json.dumps(out))


def store_child(what: str, tmp: str, base: float, start: float) -> None:
    """As the CLI reads the store: `read` streams every row as a flow (`flows_iter`), the
    floor of any per-flow pass; suggest and simulate read the table summarised in SQL."""
    from outguard.journey.aggregate import collect_summary
    from outguard.journey.render import render
    from outguard.journey.simulate import Replayer, question_names, simulate_questions
    from outguard.journey.suggest import suggest_table
    from outguard.pipeline import load_policy, lower_policy
    from outguard.store import flowsummary as fs
    from outguard.store.sqlite import SQLiteStore

    since = T0 - timedelta(days=1)  # what `--since` gives the CLI: a WHERE on last_seen
    db = SQLiteStore(Path(tmp) / "events.db", readonly=True)
    out: dict[str, object] = {}
    if what == "read":
        out["n"] = sum(1 for _ in db.flows_iter(since))
    elif what == "suggest":
        table = db.flows_summary(lambda c: collect_summary(
            fs.suggest_rows(c, since, False), lambda dsts: fs.classified(c, since, dsts)))
        text = render(suggest_table(table, user_known=lambda _n: True))
        (Path(tmp) / "suggested-store.yaml").write_text(text)
        out["rules"] = text.count("- name:")
    else:
        questions = db.flows_summary(lambda c: list(fs.questions(c, since)))
        names = question_names(questions)
        ruleset = lower_policy(load_policy(Path(tmp) / "suggested-store.yaml"),
                               resolver=names.resolver)
        summary = simulate_questions(Replayer(ruleset, names=names), questions,
                                     lambda dsts: db.flows_summary(
                                         lambda c: fs.flows_to(c, since, dsts)))
        out.update(n=summary.flows, blocked=summary.blocked, regressions=summary.regressions)
    db.close()
    out.update(seconds=time.perf_counter() - start, peak_mb=_hwm(), start_mb=base)
    print(json.dumps(out))


def _hwm() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(what: str, source: str, args: argparse.Namespace, tmp: str) -> dict[str, float]:
    rows = args.store_rows if source == "store" else args.rows
    proc = subprocess.run([sys.executable, __file__, "--child", what, source, str(rows),
                           str(args.destinations), tmp], capture_output=True, text=True,
                          timeout=1800, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{what} from {source} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def setup(args: argparse.Namespace, tmp: str) -> None:
    import orjson

    from outguard.store.sqlite import SQLiteStore

    t = time.perf_counter()
    sources = args.sources.split(",")
    if "file" in sources:
        with (Path(tmp) / "flows.jsonl").open("wb") as fh:
            for f in flows(args.rows, args.destinations):
                fh.write(orjson.dumps(f.to_json()) + b"\n")  # type: ignore[attr-defined]
    if "store" not in sources:
        print(f"setup (not timed): {time.perf_counter() - t:.1f} s", file=sys.stderr)
        return
    w = time.perf_counter()
    db = SQLiteStore(Path(tmp) / "events.db", max_flows=max(args.store_rows, 1))
    batch = []
    for f in flows(args.store_rows, args.destinations):
        batch.append(f)
        if len(batch) == 50_000:
            db.record_flows(batch)
            batch = []
    db.record_flows(batch)
    db.close()
    print(f"setup (not timed): {time.perf_counter() - t:.1f} s, of which record_flows of"
          f" {args.store_rows} rows {time.perf_counter() - w:.1f} s", file=sys.stderr)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        what, source, rows, n_dst, tmp = sys.argv[2:7]
        child(what, source, int(rows), int(n_dst), tmp)
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--destinations", type=int, default=10_000)
    parser.add_argument("--store-rows", type=int, default=100_000)
    parser.add_argument("--sources", default="gen,file,store")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="og-bench-suggest-") as tmp:
        setup(args, tmp)
        results: dict[str, dict[str, float]] = {}
        for source in args.sources.split(","):
            for what in ("read", "suggest", "simulate"):
                results[f"{what}-{source}"] = got = measure(what, source, args, tmp)
                print(f"{what:9} {source:5}: {json.dumps(got)}", file=sys.stderr)
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs;"
          f" {subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout}")
    print(f"{'step':16} {'rows':>9} {'seconds':>8} {'x read':>7} {'peak MB':>8}  target")
    ok = True
    for key, got in results.items():
        what, source = key.split("-")
        floor = results[f"read-{source}"]["seconds"]
        good = what == "read" or (got["seconds"] <= TARGET_S and got["peak_mb"] <= TARGET_MB)
        ok &= good
        target = "" if what == "read" else f"<= {TARGET_S:.0f} s, <= {TARGET_MB:.0f} MB: " + \
            ("ok" if good else "MISSED")
        rows = args.store_rows if source == "store" else args.rows
        print(f"{key:16} {rows:9} {got['seconds']:8.2f} {got['seconds'] / floor:7.2f}"
              f" {got['peak_mb']:8.1f}  {target}")
    print(json.dumps({"bench": "suggest", "rows": args.rows, "store_rows": args.store_rows,
                      "destinations": args.destinations, "results": results, "ok": ok}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
