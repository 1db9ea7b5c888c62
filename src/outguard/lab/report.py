"""The demo's report: each step ALLOWED/BLOCKED against expectation, then the rule counters.

Place in the data flow: last stage of `demo`; takes `workload.StepResult`s and the counters
parsed from `outguard status --json` and returns plain aligned text (no colour library: the
report must read the same in a terminal, a CI log and a bug report). Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from outguard.events import Incident
from outguard.lab import topology as t
from outguard.lab.workload import Outcome, StepResult

OK_MARK = "✓"
BAD_MARK = "✗"


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


def _table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


@dataclass
class MonitorView:
    """What the monitor made of the workload: incidents, when they showed, the alert lines."""

    jndi_pid: int | None
    incidents: list[Incident]
    detected_after: dict[str, float]  # incident id → seconds from its first packet to the store
    alert_lines: list[str]

    @property
    def critical(self) -> list[Incident]:
        return [i for i in self.incidents if i.severity == "critical"]

    @property
    def ok(self) -> bool:
        """Exactly one critical incident, from the workload's java, within a second."""
        if len(self.critical) != 1:
            return False
        got = self.critical[0]
        after = self.detected_after.get(got.id)
        return (got.pid is not None and got.pid == self.jndi_pid and "java" in got.process
                and after is not None and after <= 1.0)


def _endpoint(addr: str, port: int | None) -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return host if port is None else f"{host}:{port}"


def _alert_line_of(view: MonitorView, incident: Incident) -> str | None:
    return next((line for line in view.alert_lines if incident.id in line), None)


def monitor_lines(view: MonitorView | None) -> list[str]:
    if view is None:
        return ["  the monitor did not run"]
    lines: list[str] = []
    for got in view.critical:
        mark = OK_MARK if view.ok else BAD_MARK
        same = "the workload's java" if got.pid == view.jndi_pid else (
            f"NOT the workload's java (pid {view.jndi_pid})")
        after = view.detected_after.get(got.id)
        lines += [
            f"  {mark} CRITICAL {got.title} [{got.signature}]",
            f"      process   pid {got.pid} {got.process} ({same}), user {got.user or got.uid}",
            f"      cmdline   {' '.join(got.cmdline) or '?'}",
            f"      blocked   {_endpoint(got.dst, got.dport)}/{got.proto} by {got.rule},"
            f" {got.count} packet(s) in one incident",
            "      detected  " + ("?" if after is None else f"{after:.2f} s after its first packet"
                                  " (target: within 1 s)"),
            f"      alert     {_alert_line_of(view, got) or '(none)'}",
        ]
    if not view.critical:
        lines.append(f"  {BAD_MARK} no critical incident for the JNDI lookup (java pid {view.jndi_pid})")
    elif len(view.critical) > 1:
        lines.append(f"  {BAD_MARK} {len(view.critical)} critical incidents: expected exactly one")
    others = [i for i in view.incidents if i.severity != "critical"]
    if others:
        lines += ["", "  Other incidents:"]
        rows = [["severity", "title", "process", "pid", "destination", "rule", "pkts"]]
        rows += [[i.severity, i.title, i.process, str(i.pid or "?"), _endpoint(i.dst, i.dport),
                  i.rule, str(i.count)] for i in sorted(others, key=lambda i: i.first_seen)]
        lines += ["  " + line for line in _table(rows, right=frozenset({3, 6}))]
    return lines


def counter_order(key: str) -> tuple[int, str]:
    """allow:* first, then deny:*, then default, then anything else."""
    kind = key.split(":", 1)[0]
    rank = {"allow": 0, "deny": 1, "default": 2}.get(kind, 3)
    return rank, key


def step_lines(results: Sequence[StepResult], counters: dict[str, Counter] | None) -> list[str]:
    rows: list[list[str]] = [["", "#", "observed", "expected", "rule", "rule pkts", "step"]]
    details: list[list[str]] = []
    for n, r in enumerate(results, 1):
        c = counters.get(r.step.counter) if counters is not None else None
        rows.append([
            OK_MARK if r.ok else BAD_MARK, str(n), r.observed.value.upper(),
            r.step.expected.value, r.step.rule, "-" if c is None else str(c.packets),
            r.step.description,
        ])
        details.append([
            f"$ {r.step.command}",
            f"{r.detail} ({r.seconds:.2f} s)",
        ])
    table = _table(rows, right=frozenset({1, 5}))
    lines = [table[0]]
    indent = " " * (table[0].index("observed"))
    for row_line, detail in zip(table[1:], details, strict=True):
        lines.append(row_line)
        lines += [indent + d for d in detail]
    return lines


def counter_lines(counters: dict[str, Counter] | None, error: str | None) -> list[str]:
    if counters is None:
        return [f"  counters unavailable: {error or 'no answer from outguard status'}"]
    if not counters:
        return ["  (no counters reported)"]
    rows = [["rule", "packets", "bytes"]]
    rows += [
        [k, str(counters[k].packets), str(counters[k].bytes)]
        for k in sorted(counters, key=counter_order)
    ]
    return _table(rows, right=frozenset({1, 2}))


def format_report(
    policy: str,
    results: Sequence[StepResult],
    counters: dict[str, Counter] | None,
    counters_error: str | None = None,
    *,
    lab_left_up: bool = True,
    monitor: MonitorView | None = None,
) -> str:
    good = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    lines = [
        f"outguard lab demo: {policy} enforced in {t.SERVER_NS}",
        f"(each command ran inside it: ip netns exec {t.SERVER_NS} COMMAND)",
        "",
    ]
    lines += step_lines(results, counters)
    lines += ["", "Rule counters (outguard status --json):"]
    lines += counter_lines(counters, counters_error)
    lines += ["", "Monitor (every blocked packet becomes an attributed, classified incident):"]
    lines += monitor_lines(monitor)
    lines.append("")
    summary = f"{len(good)} of {len(results)} steps as expected"
    if bad:
        summary += "; differs: " + ", ".join(
            f"{r.step.key} (expected {r.step.expected.value}, got {r.observed.value})"
            for r in bad
        )
    lines.append(summary + ".")
    if any(r.observed is Outcome.ERROR for r in results):
        lines.append(f"Logs of the lab's services: {t.RUNTIME_DIR}/")
    if lab_left_up:
        lines += [
            "",
            "The lab is still up. Try for example:",
            f"  ip netns exec {t.SERVER_NS} curl http://{t.host('api').fqdn}/",
            f"  ip netns exec {t.SERVER_NS} nft list table inet outguard",
            "Remove it with: outguard lab down (from a clone: .venv/bin/outguard lab down)",
        ]
    else:
        lines += ["", "The lab has been removed."]
    return "\n".join(lines) + "\n"
