"""agentstate: the agent's report and its age, measured by the clock it is given (the report
was stamped, and `status` judged it, by the wall clock alone)."""

from __future__ import annotations

import os
from pathlib import Path

from outguard import agentstate
from outguard.agentstate import STALE_AFTER, AgentReport


def test_the_report_and_its_age_follow_the_injected_clock(tmp_path: Path) -> None:
    at = 1_000_000.0
    agentstate.write(tmp_path, AgentReport(pid=os.getpid(), started=at - 100),
                     clock=lambda: at)
    report = agentstate.read(tmp_path)
    assert report is not None and report["updated"] == at
    assert agentstate.condition(report, at + 1) == "running"
    assert agentstate.condition(report, at + STALE_AFTER + 1) == "stale"
    assert agentstate.status_lines({}, report, lambda: at + 1)[0].startswith("monitor: running")
    late = agentstate.status_lines({}, report, lambda: at + STALE_AFTER + 1)[0]
    assert f"no report for {STALE_AFTER + 1:.0f} s" in late, late
