"""`outguard lab demo`: fresh lab -> apply the lab policy with the real CLI -> workload -> report.

Place in the data flow: the top of the lab. It talks to outguard the way a user does, through
``python -m outguard apply|status`` subprocesses, so the demo exercises the real loader,
compiler and kernel layer end to end:

    lifecycle.up -> outguard apply (in og-lab-server) -> workload.run_steps
                 -> outguard status --json -> report.format_report

The lab stays up afterwards unless `down_after` is set; then it is removed even if a stage fails.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from outguard.errors import LabError
from outguard.kernel import netns, procs
from outguard.lab import lifecycle, report, workload
from outguard.lab import topology as t
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.store import Query

POLICY_RELPATH = Path("examples") / "lab-policy.yaml"
APPLY_TIMEOUT = 60.0
STATUS_TIMEOUT = 30.0

Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def find_policy(explicit: Path | None = None, cwd: Path | None = None) -> Path:
    """The policy to demo: `explicit`, else examples/lab-policy.yaml in cwd or the source tree."""
    if explicit is not None:
        if not explicit.is_file():
            raise LabError(f"policy file {explicit} does not exist")
        return explicit
    # src/outguard/lab/demo.py -> the repository root, for a checkout or an editable install.
    candidates = [(cwd or Path.cwd()) / POLICY_RELPATH, Path(__file__).parents[3] / POLICY_RELPATH]
    for c in candidates:
        if c.is_file():
            return c
    raise LabError(f"cannot find {POLICY_RELPATH}; pass the policy with --policy PATH")


def apply_argv(policy: Path, paths: t.LabPaths) -> list[str]:
    cli = [sys.executable, "-m", "outguard", "apply", "--netns", t.SERVER_NS,
           "--state-dir", str(paths.state_dir), str(policy)]
    # Run from inside the server namespace too: `ip netns exec` puts the lab's resolv.conf in
    # place, so host names in the policy (mirror.example.test) resolve through the lab DNS, as
    # they would on the real server, whichever way the CLI enters the namespace.
    return netns.exec_argv(t.SERVER_NS, cli)


def status_argv(paths: t.LabPaths) -> list[str]:
    return [sys.executable, "-m", "outguard", "status", "--netns", t.SERVER_NS,
            "--state-dir", str(paths.state_dir), "--json"]


def _run(argv: list[str], timeout: float, what: str) -> procs.Completed:
    try:
        return procs.run(argv, timeout=timeout)
    except procs.TimedOutError as exc:
        raise LabError(f"{what} did not finish in {timeout:.0f} s: {' '.join(argv)}") from exc


def apply_policy(policy: Path, paths: t.LabPaths) -> str:
    """Apply with the real CLI; its summary, or LabError with everything it printed."""
    proc = _run(apply_argv(policy, paths), APPLY_TIMEOUT, "outguard apply")
    if proc.returncode != 0:
        out = "\n".join(s.strip() for s in (proc.stdout, proc.stderr) if s.strip())
        raise LabError(
            f"outguard apply failed (exit {proc.returncode}) for {policy}:\n{out}"
        )
    return proc.stdout.strip()


def parse_status(text: str) -> dict[str, report.Counter]:
    """The counters of `outguard status --json` (LabError if the JSON is not as agreed)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabError(f"outguard status --json printed no JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("counters"), dict):
        raise LabError("outguard status --json has no \"counters\" object")
    counters: dict[str, report.Counter] = {}
    for key, value in doc["counters"].items():
        if not isinstance(value, dict):
            raise LabError(f"counter {key!r} is not an object: {value!r}")
        try:
            counters[str(key)] = report.Counter(int(value["packets"]), int(value["bytes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LabError(f"counter {key!r} lacks packets/bytes: {value!r}") from exc
    return counters


def read_counters(paths: t.LabPaths) -> tuple[dict[str, report.Counter] | None, str | None]:
    """(counters, None), or (None, why not): a broken status must not hide the step results."""
    try:
        proc = _run(status_argv(paths), STATUS_TIMEOUT, "outguard status")
        if proc.returncode != 0:
            return None, f"outguard status exit {proc.returncode}: {proc.stderr.strip()}"
        return parse_status(proc.stdout), None
    except LabError as exc:
        return None, str(exc)


@dataclass
class DemoResult:
    text: str = ""
    results: list[workload.StepResult] = field(default_factory=list)
    counters_ok: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    monitor: report.MonitorView | None = None

    @property
    def ok(self) -> bool:
        return (bool(self.results) and all(r.ok for r in self.results) and self.counters_ok
                and self.monitor is not None and self.monitor.ok)


class _CriticalWatch:
    """Notes when each critical incident first shows in the agent's store (for the 1 s check)."""

    def __init__(self, agent: AgentHandle) -> None:
        self.agent, self.seen_at = agent, dict[str, float]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lab-critical-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for incident in self.agent.incidents(Query(min_severity="critical")):
                self.seen_at.setdefault(incident.id, time.time())

    def __enter__(self) -> _CriticalWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _monitored_workload(policy: Path, paths: t.LabPaths, demo: DemoResult, say: Say) -> None:
    """The workload with outguard's monitor running in-process, bound to the server's NFLOG."""
    def show(r: workload.StepResult) -> None:
        mark = report.OK_MARK if r.ok else report.BAD_MARK
        say(f"  {mark} {r.observed.value.upper():8} {r.step.description}")

    alert_out = io.StringIO()
    opts = AgentOptions(policy=policy, apply=False, netns=t.SERVER_NS, state_dir=paths.state_dir,
                        stdout=alert_out)
    with AgentHandle(opts) as agent, _CriticalWatch(agent) as watch:
        demo.results.extend(workload.run_steps(workload.demo_steps(paths), workload.ns_runner(),
                                               show))
        agent.wait_for_incidents(1, timeout=1.0, query=Query(min_severity="critical"))
        time.sleep(0.3)  # what else the agent still has in hand
        incidents = agent.incidents()
    jndi = next((r for r in demo.results if r.step.key == "jndi"), None)
    demo.monitor = report.MonitorView(
        jndi_pid=jndi.pid if jndi else None, incidents=incidents,
        detected_after={i.id: watch.seen_at[i.id] - i.first_seen.timestamp()
                        for i in incidents if i.id in watch.seen_at},
        alert_lines=[line for line in alert_out.getvalue().splitlines() if line.strip()])


def run_demo(
    policy: Path, *, down_after: bool = False, say: Say = _quiet,
    paths: t.LabPaths | None = None,
) -> DemoResult:
    paths = paths or t.LabPaths()
    lifecycle.require_root()
    lifecycle.require_tools(lifecycle.UP_TOOLS | workload.DEMO_TOOLS)
    demo = DemoResult()

    def timed(name: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        fn()
        demo.timings[name] = time.monotonic() - t0

    try:
        say("lab up (fresh) ...")
        timed("up", lambda: lifecycle.up(paths))
        timed("javac", lambda: workload.compile_java(paths))
        say(f"outguard apply {policy} in {t.SERVER_NS} ...")
        summary: list[str] = []
        timed("apply", lambda: summary.append(apply_policy(policy, paths)))
        if summary[0]:
            say(summary[0])

        say("workload, with outguard's monitor listening ...")
        timed("workload", lambda: _monitored_workload(policy, paths, demo, say))
        counters, error = read_counters(paths)
        demo.counters_ok = counters is not None
        demo.text = report.format_report(
            str(policy), demo.results, counters, error, lab_left_up=not down_after,
            monitor=demo.monitor,
        )
    except BaseException as exc:
        if down_after:
            try:
                lifecycle.down(paths)
            except LabError as cleanup:
                exc.add_note(f"removing the lab failed too: {cleanup}")
        raise
    if down_after:
        say("lab down ...")
        timed("down", lambda: lifecycle.down(paths))
    return demo
