"""What the running agent reports about itself, for `outguard status`: a small file in the state
directory, and the lines status prints from it and from the kernel's log counters.

Place in the data flow: `monitor.agent` writes `STATE_DIR/monitor.json` every few seconds and when
it stops (`write`); `outguard status` (cli) reads it (`read`) beside the table's counters and
prints `status_lines`. The file holds counts only — what was blocked, logged, lost, held back —
never incident contents. Without a running agent the kernel's figures are still printed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from outguard.clock import Clock, system_clock
from outguard.state import write_private

FILE = "monitor.json"
# The agent writes its report every 5 s: a report older than this (twelve missed writes), or one
# whose pid is gone, means the agent (and its DNS resolver) is not running.
STALE_AFTER = 60.0


@dataclass
class AgentReport:
    pid: int
    started: float
    updated: float = 0.0
    received: int = 0  # blocked packets read from NFLOG
    nflog_lost: int = 0
    enobufs: int = 0
    incidents: int = 0  # opened since the start
    alerts_suppressed: dict[str, int] = field(default_factory=dict)  # by severity (budget)
    alerts_dropped: dict[str, int] = field(default_factory=dict)  # by sink (its queue was full)
    alerts_failed: dict[str, int] = field(default_factory=dict)  # by sink
    store_errors: int = 0
    store_lost: int = 0
    store_pending: int = 0
    stopped: bool = False
    # the egress proxy, while the agent runs one: running, listening, connections, requests
    # (by decision) and rules ("refused default": count)
    proxy: dict[str, Any] | None = None


def write(state_dir: Path, report: AgentReport, clock: Clock = system_clock) -> None:
    """Write the report (0600, atomically), stamped with `clock`'s time (what `condition`
    measures its age from). OSError if the state directory is not writable."""
    report.updated = clock()
    write_private(state_dir / FILE, json.dumps(asdict(report), indent=1))


def read(state_dir: Path) -> dict[str, Any] | None:
    """The last report, or None if there is none (or it is unreadable)."""
    try:
        doc = json.loads((state_dir / FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def condition(report: dict[str, Any] | None, now: float) -> str:
    """"running", "stopped" (it said so when it stopped), "stale" (its pid is gone, or no
    report for `STALE_AFTER` seconds: killed, crashed, hung) or "none" (no report)."""
    if report is None:
        return "none"
    if report.get("stopped"):
        return "stopped"
    age = now - float(report.get("updated", 0))
    return "running" if _alive(report.get("pid")) and age < STALE_AFTER else "stale"


def _counts(value: Any) -> str:
    if not isinstance(value, dict) or not any(value.values()):
        return "none"
    return ", ".join(f"{k} {v}" for k, v in sorted(value.items()) if v)


def status_lines(logging: dict[str, dict[str, int]], report: dict[str, Any] | None,
                 clock: Clock = system_clock, *, audit: bool = False) -> list[str]:
    """The monitor's part of `outguard status`: per blocking rule what the kernel blocked
    (in audit mode: would have blocked), logged and did not log (over the per-flow log
    rate), then the agent's own report."""
    now = clock()
    out = []
    if logging:
        head = "would be blocked by" if audit else "blocked by"
        out.append(f"{head:40} {'packets':>12} {'logged':>12} {'not logged':>12}")
        for key, f in logging.items():
            out.append(f"{key:40} {f['blocked']:>12} {f['logged']:>12} {f['not_logged']:>12}")
        out.append("(not logged: over the per-flow log rate `log_rate`, or the reset"
                   " retransmit of a held SYN; counted, not seen by the monitor)")
    if report is None:
        out.append("monitor: no agent report (`outguard run` has not run with this state"
                   " directory)")
        return out
    age = now - float(report.get("updated", 0))
    state = {"stopped": "stopped", "running": f"running (pid {report.get('pid')})"}.get(
        condition(report, now), f"not running? (pid {report.get('pid')}, no report for"
                                f" {age:.0f} s)")
    out.append(f"monitor: {state}, report {age:.0f} s old")
    out.append(f"  received {report.get('received', 0)} blocked packets, NFLOG lost"
               f" {report.get('nflog_lost', 0)} (ENOBUFS {report.get('enobufs', 0)}),"
               f" {report.get('incidents', 0)} incidents opened")
    out.append(f"  alerts held back by the per-severity budget:"
               f" {_counts(report.get('alerts_suppressed'))}; dropped by a full sink queue:"
               f" {_counts(report.get('alerts_dropped'))}; failed:"
               f" {_counts(report.get('alerts_failed'))}")
    out += _proxy_lines(report.get("proxy"))
    lost, errors = report.get("store_lost", 0), report.get("store_errors", 0)
    out.append(f"  store: {errors} failed writes, {lost} incident updates lost, "
               f"{report.get('store_pending', 0)} waiting" + ("  <-- LOST INCIDENTS" if lost
                                                               else ""))
    return out


def _proxy_lines(proxy: Any) -> list[str]:
    if not isinstance(proxy, dict):
        return []
    where = ", ".join(map(str, proxy.get("listening") or [])) or "?"
    state = f"listening on {where}" if proxy.get("running") else "NOT RUNNING (restarting)"
    bent = proxy.get("transparent") or []
    if bent and proxy.get("running"):
        state += f", ports {', '.join(map(str, bent))} redirected into it"
    return [f"  proxy: {state}; {proxy.get('connections', 0)} connections open; requests"
            f" {_counts(proxy.get('requests'))}"]
