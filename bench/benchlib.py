"""Shared plumbing for outguard's benchmarks: namespaces, processes, C tools, statistics.

Safety rules kept here for every benchmark:
- everything happens in network namespaces named ``og-bench-*`` that this process creates;
  an existing one is never reused or removed (it may be someone else's run);
- only documentation addresses carry traffic; IPv6 is disabled on the benchmark links;
- the host namespace's firewall is only read (``nft list tables``) before and after, never changed;
- every namespace, process and file outside ``bench/out`` is removed on exit, also on failure,
  Ctrl-C, SIGTERM or SIGHUP (``Cleanup`` + ``install_signal_handlers``);
- every subprocess has a timeout, every loop a bound.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
TOOLS_DIR = BENCH_DIR / "tools"
VENV_PYTHON = REPO_DIR / ".venv" / "bin" / "python"
NS_PREFIX = "og-bench-"


class BenchError(Exception):
    """A benchmark could not set up or measure something; the message says what."""


def log(msg: str) -> None:
    """Progress goes to stderr; the results table and JSON go to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so `finally` blocks clean up."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)


def require_root() -> None:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, nftables)")


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    netns: str | None = None,
    timeout: float = 60.0,
    check: bool = True,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (inside `netns` if given) with a timeout; raise BenchError on failure."""
    argv = [str(c) for c in cmd]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        proc = subprocess.run(
            argv,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(argv)[:200]}") from exc
    if check and proc.returncode != 0:
        raise BenchError(f"exit {proc.returncode}: {' '.join(argv)[:200]}\n{proc.stderr.strip()[-2000:]}")
    return proc


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or math.isnan(num) or math.isnan(den) or den <= 0:
        return None
    return num / den


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# --- cleanup ------------------------------------------------------------------------------


@dataclass
class Cleanup:
    """A LIFO list of undo actions; runs all of them, also when some fail."""

    actions: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def push(self, what: str, action: Callable[[], None]) -> None:
        self.actions.append((what, action))

    def run_all(self) -> None:
        while self.actions:
            what, action = self.actions.pop()
            try:
                action()
            except (OSError, BenchError, subprocess.SubprocessError) as exc:
                log(f"cleanup of {what} failed: {exc}")


@contextlib.contextmanager
def cleanup_scope() -> Iterator[Cleanup]:
    cleanup = Cleanup()
    try:
        yield cleanup
    finally:
        # A second Ctrl-C during cleanup must not leave namespaces behind.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            cleanup.run_all()
        finally:
            signal.signal(signal.SIGINT, old)


def stop_process(proc: subprocess.Popen[str], name: str, grace: float = 5.0) -> None:
    """SIGTERM a process we started, by its pid; SIGKILL it if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {proc.pid}) ignored SIGTERM for {grace:.0f}s; SIGKILL")
        proc.kill()
        proc.wait(timeout=grace)


# --- namespaces ---------------------------------------------------------------------------


def existing_netns() -> set[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    if not out:
        return set()
    return {entry["name"] for entry in json.loads(out)}


def add_netns(name: str, cleanup: Cleanup) -> None:
    """Create a private namespace (lo up, IPv6 off) and register its removal."""
    if not name.startswith(NS_PREFIX):
        raise BenchError(f"benchmark namespaces are named {NS_PREFIX}*: {name}")
    if name in existing_netns():
        raise BenchError(
            f"namespace {name} already exists (another run, or a crashed one?); "
            f"not touching it. If it is a leftover of yours: ip netns del {name}"
        )
    run(["ip", "netns", "add", name])
    cleanup.push(f"namespace {name}", lambda: del_netns(name))
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    run(
        [
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
        netns=name,
    )


def del_netns(name: str) -> None:
    """Kill what still runs inside our namespace (by pid), then delete it."""
    if name not in existing_netns():
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and run(["ip", "netns", "pids", name], check=False).stdout.split():
            time.sleep(0.1)
    run(["ip", "netns", "del", name], check=False)


def host_firewall_fingerprint() -> str:
    """What the host namespace's firewall looks like, read only (table names, xtables names)."""
    parts = [run(["nft", "list", "tables"], check=False).stdout]
    for proc_file in ("/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"):
        with contextlib.suppress(OSError):
            parts.append(Path(proc_file).read_text())
    return "\n".join(parts)


# --- C tools ------------------------------------------------------------------------------


def build_tool(name: str) -> Path:
    """Compile bench/tools/NAME.c into bench/out/NAME if missing or older than its source."""
    src = TOOLS_DIR / f"{name}.c"
    binary = OUT_DIR / name
    OUT_DIR.mkdir(exist_ok=True)
    if binary.exists() and binary.stat().st_mtime >= src.stat().st_mtime:
        return binary
    if shutil.which("gcc") is None:
        raise BenchError("gcc is needed to build bench/tools (apt-get install gcc libc6-dev)")
    log(f"compiling {src.relative_to(REPO_DIR)}")
    run(["gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", binary, src], timeout=120)
    return binary


def require_commands(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise BenchError(f"missing commands: {', '.join(missing)} (see bench/README.md)")


def wait_for(predicate: Callable[[], bool], what: str, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over `seconds` (from /proc/stat): others' load on the machine."""

    def snap() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    total0, idle0 = snap()
    time.sleep(seconds)
    total1, idle1 = snap()
    total = total1 - total0
    return 0.0 if total <= 0 else 1.0 - (idle1 - idle0) / total


def run_and_report(body: Callable[[], dict[str, object]]) -> int | None:
    """Run a benchmark's body and print its result: the wall time, then one JSON line.

    Returns the exit status when the run did not complete (130 interrupted, 1 BenchError), None
    when it did. Whatever happens, the host namespace's firewall is compared before/after.
    """
    host_before = host_firewall_fingerprint()
    t_start = time.monotonic()
    result: dict[str, object] = {}
    try:
        result = body()
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        return 130
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        if host_firewall_fingerprint() != host_before:
            log("WARNING: the host namespace's firewall tables changed during the run!")
            result["host_firewall_changed"] = True
    result["wall_s"] = round(time.monotonic() - t_start, 1)
    print(f"\nfull run: {result['wall_s']}s")
    print(json.dumps(result, sort_keys=True))
    return None
