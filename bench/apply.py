#!/usr/bin/env python3
"""How fast `outguard apply` is: a 1,000-rule policy, then re-applies next to a 1M-address list.

    sudo .venv/bin/python bench/apply.py [--quick] [--repeats N]

Targets (the issue): applying a 1,000-rule policy takes <= 0.2 s from parsed policy to
committed transaction (compile_ms + commit_ms of `--timings`); re-applying a changed policy
while a 1,000,000-address list is loaded takes <= 0.5 s, without re-loading the list.

Everything runs in a namespace og-bench-apply (and og-bench-apply-ref for the peer). Prints,
for each step, the whole command's wall time (interpreter start-up included) and the phases
outguard reports with --timings; the peer `nft -f` applying outguard's own compiled ruleset;
the interpreter's start-up and outguard's heaviest imports; one JSON line at the end.
Whether the list was re-sent is checked on netlink (bench/nlmon.py counts the nf_tables
notifications per set during the re-applies). Not a test: nothing is gated on absolute time.
"""

from __future__ import annotations

import argparse
import json
import re
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import benchlib as bl
import policygen as pg

NS = "og-bench-apply"
NS_REF = "og-bench-apply-ref"
PEER_ADDR = "192.0.2.2"  # the last rule's address; nothing is sent in this benchmark
CHANGED_RULE = 500  # the allow rule that changes between applies
TARGET_PARSED_TO_COMMITTED_MS = 200.0
TARGET_REAPPLY_WITH_LIST_MS = 500.0


@dataclass
class Apply:
    """One `outguard apply --timings` run: wall time and the phases it reported."""

    wall_ms: float
    timings: dict[str, float]
    method: str | None

    def phase(self, name: str) -> float | None:
        return self.timings.get(name)

    @property
    def parsed_to_committed_ms(self) -> float | None:
        c, k = self.phase("compile_ms"), self.phase("commit_ms")
        return None if c is None or k is None else c + k


class Monitor:
    """bench/nlmon.py in the namespace: nf_tables notifications counted per set, from netlink.

    (`nft monitor` cannot be used: next to a 1M-element set it reloads nft's whole cache and
    takes minutes.)
    """

    def __init__(self, netns: str, cleanup: bl.Cleanup) -> None:
        cmd = ["ip", "netns", "exec", netns, sys.executable, str(bl.BENCH_DIR / "nlmon.py"), "1800"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        proc = self.proc
        cleanup.push("nlmon", lambda: bl.stop_process(proc, "nlmon"))
        if self.ask("ready") != {"ready": True}:
            raise bl.BenchError("nlmon did not start")

    def ask(self, cmd: str, timeout: float = 30) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        if cmd == "reset":
            return {}
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise bl.BenchError(f"nlmon did not answer {cmd!r} in {timeout:.0f}s")
        line = self.proc.stdout.readline()
        if not line:
            raise bl.BenchError(f"nlmon exited (code {self.proc.poll()})")
        answer: dict[str, object] = json.loads(line)
        return answer


def list_resent(report: dict[str, object], list_size: int) -> tuple[bool, str]:
    """Did a re-apply touch the deny list? (its set, or any set getting list-sized input)"""
    sets = report.get("sets")
    assert isinstance(sets, dict)
    touched = []
    for name, ev in sets.items():
        big = ev.get("add", 0) >= max(1000, list_size // 2)
        if big or (pg.LIST_NAME in name and any(ev.values())):
            touched.append(name)
    summary = ", ".join(
        f"{name}: " + " ".join(f"{k} {v}" for k, v in sorted(ev.items()))
        for name, ev in sorted(sets.items(), key=lambda kv: -sum(kv[1].values()))[:4]
    )
    summary = f"{report.get('messages')} notifications; per set: {summary or 'none'}"
    if report.get("overruns"):
        summary += f"; {report['overruns']} buffer overruns (some notifications lost)"
    return bool(touched), summary


class Runner:
    def __init__(self, tmp: Path, cleanup: bl.Cleanup) -> None:
        self.tmp, self.cleanup = tmp, cleanup
        self.state = tmp / "state"

    def apply(self, policy_text: str, name: str, timeout: float = 120) -> Apply:
        path = self.tmp / f"{name}.yaml"
        path.write_text(policy_text)
        # What a user types on the host itself: `ip netns exec` stands for being on that host
        # (with --netns, outguard would re-execute itself there: a second interpreter start-up).
        cmd = [
            "ip",
            "netns",
            "exec",
            NS,
            str(bl.VENV_PYTHON),
            "-m",
            "outguard",
            "apply",
            "--state-dir",
            str(self.state),
            "--timings",
            str(path),
        ]
        t0 = time.perf_counter()
        proc = bl.run(cmd, timeout=timeout, check=False)
        wall_ms = (time.perf_counter() - t0) * 1000
        if proc.returncode != 0:
            raise bl.BenchError(
                f"outguard apply failed (exit {proc.returncode}):\n"
                + (proc.stderr.strip() or proc.stdout.strip())[-1500:]
            )
        timings: dict[str, float] = {}
        method: str | None = None
        for raw in reversed(proc.stderr.strip().splitlines()):
            line = raw.strip()
            if line.startswith("{") and line.endswith("}"):
                data = json.loads(line)
                method = data.pop("method", None)
                timings = {k: float(v) for k, v in data.items() if isinstance(v, int | float)}
                break
        if not timings:
            raise bl.BenchError(f"no --timings JSON line on stderr: {proc.stderr[-500:]!r}")
        return Apply(wall_ms, timings, method)

    def nft_f(self, text: str, name: str, timeout: float = 300) -> float:
        path = self.tmp / f"{name}.nft"
        path.write_text(text)
        t0 = time.perf_counter()
        bl.run(["nft", "-f", str(path)], netns=NS_REF, timeout=timeout)
        return (time.perf_counter() - t0) * 1000

    def compiled(self, policy_text: str, name: str) -> str:
        path = self.tmp / f"{name}.yaml"
        path.write_text(policy_text)
        cmd = [str(bl.VENV_PYTHON), "-m", "outguard", "compile", str(path)]
        return bl.run(cmd, timeout=300).stdout


def timed(cmd: Sequence[str], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        bl.run(cmd, timeout=60)
        samples.append((time.perf_counter() - t0) * 1000)
    return bl.median(samples)


def top_imports(limit: int) -> list[tuple[int, str, float]]:
    """`python -X importtime -m outguard --help`: the heaviest imports, cumulative ms."""
    proc = bl.run([str(bl.VENV_PYTHON), "-X", "importtime", "-m", "outguard", "--help"], timeout=60)
    rows: list[tuple[int, str, float]] = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        depth = (len(m.group(3)) - 1) // 2 if m else 99
        if m and depth <= 1:  # top-level imports and what they import directly
            rows.append((depth, m.group(4), int(m.group(2)) / 1000))
    rows.sort(key=lambda r: -r[2])
    return rows[:limit]


def med(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return bl.median(present) if present else None


def fmt_ms(value: float | None) -> str:
    return "--" if value is None else f"{value:,.0f}"


def row(label: str, runs: Sequence[Apply]) -> dict[str, float | None]:
    values = {
        "wall_ms": med([r.wall_ms for r in runs]),
        "load_ms": med([r.phase("load_ms") for r in runs]),
        "compile_ms": med([r.phase("compile_ms") for r in runs]),
        "commit_ms": med([r.phase("commit_ms") for r in runs]),
        "total_ms": med([r.phase("total_ms") for r in runs]),
        "parsed_to_committed_ms": med([r.parsed_to_committed_ms for r in runs]),
    }
    methods = sorted({r.method for r in runs if r.method})
    print(
        f"  {label:38}"
        + "".join(f"{fmt_ms(values[k]):>9}" for k in ("wall_ms", "load_ms", "compile_ms", "commit_ms"))
        + f"{fmt_ms(values['total_ms']):>9}  {','.join(methods)}"
    )
    return values


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "meets" if value <= target else "MISSES"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="3 repeats")
    p.add_argument("--repeats", type=int, help="applies per measured step (default 7)")
    p.add_argument("--rules", type=int, default=1000, help="allow rules (1000)")
    p.add_argument("--list-size", type=int, default=1_000_000, help="deny-list size (1000000)")
    p.add_argument(
        "--no-monitor", action="store_true", help="skip the netlink check that the list is not re-sent"
    )
    p.add_argument("--no-peer", action="store_true", help="skip the nft -f peer")
    a = p.parse_args(argv)
    a.repeats = a.repeats or (3 if a.quick else 7)
    a.monitor = not a.no_monitor
    if not (1 <= a.repeats <= 50 and 2 <= a.rules <= 100_000 and 1 <= a.list_size <= 5_000_000):
        p.error("out of range: repeats 1-50, rules 2-100000, list-size 1-5000000")
    if a.rules < CHANGED_RULE:
        a.changed = a.rules // 2 or 1
    else:
        a.changed = CHANGED_RULE
    return a


def run_bench(args: argparse.Namespace, cleanup: bl.Cleanup, tmp: Path) -> dict[str, object]:
    result: dict[str, object] = {"bench": "apply", "unit": "ms"}
    r = Runner(tmp, cleanup)
    bl.add_netns(NS, cleanup)

    def policy(variant: int, with_list: bool) -> str:
        rules = pg.allow_rules(args.rules, PEER_ADDR, changed=args.changed, variant=variant)
        return pg.policy_yaml(rules, list_file=blocklist if with_list else None)

    t0 = time.monotonic()
    blocklist = pg.write_blocklist(bl.OUT_DIR / f"blocklist-{args.list_size}.txt", args.list_size)
    bl.log(f"deny list ready: {args.list_size:,} addresses ({time.monotonic() - t0:.1f}s)")

    # 1. The 1,000-rule policy: first apply into an empty namespace, then changed policies.
    bl.log(f"applying the {args.rules}-rule policy ({args.repeats} changed re-applies)")
    first = r.apply(policy(0, False), "small-0")
    small = [r.apply(policy(v, False), f"small-{v}") for v in range(1, args.repeats + 1)]
    # The same after someone else committed in the namespace (a table made and deleted, as a
    # feed sync or a hand edit would): outguard cannot trust its chains then, and refills all.
    bl.log("re-applies after another commit in the namespace (every chain refilled)")
    stirred = []
    for v in range(args.repeats + 1, 2 * args.repeats + 1):
        bl.run(["nft", "add table inet og-bench-other; delete table inet og-bench-other"], netns=NS)
        stirred.append(r.apply(policy(v, False), f"small-{v}"))

    # 2. The same with the 1M-address list: first load, then changed policies.
    bl.log(f"applying it with the {args.list_size:,}-address list (the first load takes a while)")
    first_list = r.apply(policy(0, True), "list-0", timeout=900)
    bl.log(f"re-applying a changed policy {args.repeats} times with the list loaded")
    relist = [r.apply(policy(v, True), f"list-{v}", timeout=900) for v in range(1, args.repeats + 1)]
    # Then, not timed (a netlink listener makes the kernel send notifications, which costs),
    # two more re-applies watched on netlink: is the list re-sent?
    events: dict[str, object] | None = None
    if args.monitor:
        bl.log("two more re-applies, watched on netlink (bench/nlmon.py)")
        monitor = Monitor(NS, cleanup)
        monitor.ask("reset")
        for v in (args.repeats + 1, args.repeats + 2):
            r.apply(policy(v, True), f"list-{v}", timeout=900)
        events = monitor.ask("report")
        bl.stop_process(monitor.proc, "nlmon")  # a listener slows later nft loads down (5 s -> 28 s)

    # 3. Peer: the nft command applying outguard's own compiled ruleset, same steps.
    peer: dict[str, float | None] = {}
    if not args.no_peer:
        bl.log("peer: nft -f of outguard's compiled ruleset (og-bench-apply-ref)")
        bl.add_netns(NS_REF, cleanup)
        small_text = [r.compiled(policy(v, False), f"c-small-{v}") for v in range(args.repeats + 1)]
        r.nft_f(small_text[0], "ref-small-0")
        peer["nft_f_small_ms"] = bl.median(
            [r.nft_f(t, f"ref-small-{i}") for i, t in enumerate(small_text[1:], 1)]
        )
        list_text = r.compiled(policy(0, True), "c-list-0")
        peer["nft_f_list_first_ms"] = r.nft_f(list_text, "ref-list-0", timeout=900)
        del list_text

    # 4. Start-up.
    bl.log("interpreter start-up and imports")
    startup = {
        "python_bare_ms": timed([str(bl.VENV_PYTHON), "-c", "pass"], 5),
        "python_S_ms": timed([str(bl.VENV_PYTHON), "-S", "-c", "pass"], 5),
        "outguard_help_ms": timed([str(bl.VENV_PYTHON), "-m", "outguard", "--help"], 5),
    }
    imports = top_imports(12)

    # --- report ---------------------------------------------------------------------
    print()
    print(f"outguard apply in a network namespace, {args.rules}-rule policy; medians of {args.repeats}")
    print(
        f"  {'step':38}{'wall':>9}{'load':>9}{'compile':>9}{'commit':>9}{'total':>9}  method"
        "\n  (ms; wall = the whole command, interpreter start-up included)"
    )
    rows = {
        "first_apply": row("first apply (empty namespace)", [first]),
        "reapply": row("re-apply, one rule changed", small),
        "reapply_all_chains": row("  the same after another commit", stirred),
        "first_apply_with_list": row(f"first apply with {args.list_size:,}-addr list", [first_list]),
        "reapply_with_list": row("re-apply with the list loaded", relist),
    }
    p2c = rows["reapply"]["parsed_to_committed_ms"]
    p2c_all = rows["reapply_all_chains"]["parsed_to_committed_ms"]
    p2c_first = rows["first_apply"]["parsed_to_committed_ms"]
    re_wall = rows["reapply_with_list"]["wall_ms"]
    re_total = rows["reapply_with_list"]["total_ms"]
    print()
    print("Targets:")
    worst_p2c = max((v for v in (p2c, p2c_first, p2c_all) if v is not None), default=None)
    print(
        f"  parsed policy -> committed (compile+commit), {args.rules} rules: {fmt_ms(p2c_first)} ms "
        f"first apply, {fmt_ms(p2c)} ms re-apply ({fmt_ms(p2c_all)} ms when every chain is "
        f"refilled)   target <= {TARGET_PARSED_TO_COMMITTED_MS:g} ms   "
        f"{verdict(worst_p2c, TARGET_PARSED_TO_COMMITTED_MS)}"
    )
    print(
        f"  re-apply with the {args.list_size:,}-address list loaded: {fmt_ms(re_total)} ms inside"
        f" outguard (load+compile+commit+state)   target <= {TARGET_REAPPLY_WITH_LIST_MS:g} ms   "
        f"{verdict(re_total, TARGET_REAPPLY_WITH_LIST_MS)}"
    )
    print(
        f"    the whole command, interpreter start-up and imports included: {fmt_ms(re_wall)} ms"
        f"   ({verdict(re_wall, TARGET_REAPPLY_WITH_LIST_MS)} the same bound)"
    )
    reloaded: bool | None = None
    summary: str | None = None
    if events is not None:
        reloaded, summary = list_resent(events, args.list_size)
        if not events.get("messages"):
            reloaded = None  # the monitor saw nothing at all: it proves nothing
            summary += " -- no notification at all: check not conclusive"
        print(
            "  list re-sent during 2 watched re-applies: "
            f"{'?' if reloaded is None else 'YES' if reloaded else 'no'} "
            f"(netlink: {summary})"
        )
    else:
        print("  list re-sent: not checked (--no-monitor)")
    if re_wall is not None and re_wall * 4 < first_list.wall_ms:
        print(
            f"  (loading the list took {first_list.wall_ms / 1000:.1f}s: a re-apply of "
            f"{fmt_ms(re_wall)} ms cannot have re-sent it)"
        )
    if peer:
        print()
        print("Peer: `nft -f` of outguard's own compiled ruleset (nft 1.0.6 command, same kernel):")
        print(f"  {args.rules}-rule ruleset, replaced: {fmt_ms(peer['nft_f_small_ms'])} ms")
        print(
            f"  with the {args.list_size:,}-address list, first load: {fmt_ms(peer['nft_f_list_first_ms'])} ms"
        )
    print()
    print("Start-up (wall, median of 5):")
    print(
        f"  python -c pass: {startup['python_bare_ms']:.0f} ms; python -S -c pass: "
        f"{startup['python_S_ms']:.0f} ms; python -m outguard --help: {startup['outguard_help_ms']:.0f} ms"
    )
    print("  heaviest imports of `python -X importtime -m outguard --help` (cumulative ms):")
    for depth, name, ms in imports:
        print(f"    {ms:8.1f}  {'  ' * depth}{name}")
    result.update(
        {
            "rules": args.rules,
            "list_size": args.list_size,
            "repeats": args.repeats,
            "steps": rows,
            "samples": {
                "reapply_wall_ms": [round(a.wall_ms, 1) for a in small],
                "reapply_all_chains_wall_ms": [round(a.wall_ms, 1) for a in stirred],
                "reapply_with_list_wall_ms": [round(a.wall_ms, 1) for a in relist],
            },
            "methods": sorted({a.method for a in [first, *small, *stirred, first_list, *relist] if a.method}),
            "list_resent": reloaded,
            "monitor": summary,
            "peer": peer,
            "startup": startup,
            "top_imports_ms": {name: ms for _depth, name, ms in imports},
            "targets": {
                "parsed_to_committed_ms": TARGET_PARSED_TO_COMMITTED_MS,
                "reapply_with_list_ms": TARGET_REAPPLY_WITH_LIST_MS,
            },
            "met": {
                "parsed_to_committed": None
                if worst_p2c is None
                else worst_p2c <= TARGET_PARSED_TO_COMMITTED_MS,
                "reapply_with_list": None if re_total is None else re_total <= TARGET_REAPPLY_WITH_LIST_MS,
                "reapply_with_list_whole_command": None if re_wall is None
                else re_wall <= TARGET_REAPPLY_WITH_LIST_MS,
                "list_not_resent": None if reloaded is None else not reloaded,
            },
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bl.install_signal_handlers()
    bl.require_root()
    bl.require_commands("ip", "nft")

    def body() -> dict[str, object]:
        with bl.cleanup_scope() as cleanup, tempfile.TemporaryDirectory(prefix="og-bench-apply-") as tmp:
            busy = bl.cpu_busy(1.0)
            result = run_bench(args, cleanup, Path(tmp))
            result["machine_busy_before"] = round(busy, 3)
            if busy > 0.1:
                print(f"\nWARNING: other processes kept the CPUs {busy:.0%} busy: timings are noisy")
            return result

    failed = bl.run_and_report(body)
    return failed if failed is not None else 0


if __name__ == "__main__":
    sys.exit(main())
