"""`outguard lab demo --journey`: from no policy to enforce, the way a newcomer does it.

Place in the data flow: the top of the lab, beside `demo`. Like the demo it drives outguard
through its real CLI (``python -m outguard ...`` inside og-lab-server, each command printed as
it is typed), so every step is the code a sysadmin runs on a real server:

    lab up -> learn --for (the workload runs meanwhile) -> flows -> suggest -> simulate
           -> the agent on the suggested file (`run --no-apply POLICY`), dns install
           -> apply --verify --confirm-timeout -> confirm -> the workload again: zero blocked
           -> the JNDI callback: blocked, critical -> lockdown --for: the API blocked, then
              reachable once it expired, with no outguard command run

The agent runs in-process (`AgentHandle`, as the demo's monitor does) so the journey can read
its incidents; everything else is a subprocess. It starts before the apply because the
suggested policy has `dns:`: names resolve only through the agent's resolver, and
`apply --verify` probes a name rule only when its name resolves. `JourneyResult` holds what each step showed,
for the lab test and the exit status.
"""

from __future__ import annotations

import io
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from outguard.errors import LabError
from outguard.events import Incident
from outguard.kernel import netns, procs
from outguard.lab import demo, lifecycle, report, workload
from outguard.lab import topology as t
from outguard.lab.workload import Outcome, Step
from outguard.service.options import AgentOptions
from outguard.service.runner import AgentHandle
from outguard.store import Query

LEARN_FOR = 20.0
"""Seconds of learning: the workload takes a few, the agent a few to start and stop."""
CONFIRM_TIMEOUT = 300
LOCKDOWN_FOR = 12.0
CLI_TIMEOUT = 90.0

Say = Callable[[str], None]


@dataclass
class JourneyResult:
    """What each step of the journey showed."""

    learned: list[workload.StepResult] = field(default_factory=list)
    flows_text: str = ""
    policy_text: str = ""
    simulate_code: int | None = None
    apply_code: int | None = None
    confirmed: bool = False
    enforced: list[workload.StepResult] = field(default_factory=list)
    blocked_incidents: list[Incident] = field(default_factory=list)
    """Incidents the agent raised while the learned workload ran under the policy."""
    default_drops: int | None = None
    jndi: workload.StepResult | None = None
    jndi_incidents: list[Incident] = field(default_factory=list)
    lockdown_blocked: workload.StepResult | None = None
    lockdown_incidents: list[Incident] = field(default_factory=list)
    """The monitor's incidents of rule `lockdown` (the blocked API call)."""
    lockdown_lifted: workload.StepResult | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (bool(self.learned) and all(r.ok for r in self.learned)
                and self.simulate_code == 0 and self.apply_code == 0 and self.confirmed
                and bool(self.enforced) and all(r.ok for r in self.enforced)
                and not self.blocked_incidents and self.default_drops == 0
                and self.jndi is not None and self.jndi.ok and bool(self.jndi_incidents)
                and self.lockdown_blocked is not None and self.lockdown_blocked.ok
                and self.lockdown_lifted is not None and self.lockdown_lifted.ok)


def journey_steps(paths: t.LabPaths) -> list[Step]:
    """The server's own workload, by name: what is learned, and must keep working."""
    api, mirror, backup = t.host("api"), t.host("mirror"), t.host("backup")
    ok, curl_t = Outcome.ALLOWED, workload.CURL_MAX_TIME + 4.0
    v6 = workload.curl_argv(f"http://{api.fqdn}/")
    return [
        Step("mirror", "package mirror by name (apt)", workload.curl_argv(f"http://{mirror.fqdn}/"),
             ok, "", "", "curl", curl_t),
        api_step(paths),
        Step("api-v6", "the API by name over IPv6", (v6[0], "-6", *v6[1:]), ok, "", "", "curl",
             curl_t),
        Step("backup", "backup job as user nobody",
             workload.curl_argv(f"http://{backup.fqdn}/", as_nobody=True),
             ok, "", "", "curl", curl_t),
        Step("ntp", "time sync, NTP over UDP",
             (sys.executable, "-m", "outguard.lab.ntp", t.host("ntp").fqdn,
              str(workload.CONNECT_TIMEOUT)), ok, "", "", "ntp", 10.0),
        Step("java-api", "Java service calling the API",
             ("java", "-cp", str(paths.java_dir), workload.API_CLASS, f"http://{api.fqdn}/",
              str(workload.CONNECT_TIMEOUT * 1000)), ok, "", "", "java", 20.0),
    ]


def api_step(paths: t.LabPaths, expected: Outcome = Outcome.ALLOWED) -> Step:
    return Step("api-https", "the API by name over HTTPS",
                workload.curl_argv(f"https://{t.host('api').fqdn}/", cacert=str(paths.tls_cert)),
                expected, "", "", "curl", workload.CURL_MAX_TIME + 4.0)


def jndi_step(paths: t.LabPaths) -> Step:
    return Step("jndi", "Log4Shell callback: the JVM does a JNDI LDAP lookup",
                workload.java_argv(paths, f"ldap://{t.host('attacker').ipv4}:1389/x"),
                Outcome.BLOCKED, "", "", "java", 20.0)


def cli(paths: t.LabPaths, *args: str) -> list[str]:
    """`outguard ARGS` for the lab's server, run inside it (its resolv.conf, as on a host)."""
    state = [] if args[0] == "dns" else ["--state-dir", str(paths.state_dir)]
    return netns.exec_argv(t.SERVER_NS, [
        sys.executable, "-m", "outguard", *args, "--netns", t.SERVER_NS, *state])


def shown(*args: str) -> str:
    """The command as a user types it on the server itself (no --netns, no --state-dir)."""
    return "$ outguard " + shlex.join(args)


def run_cli(paths: t.LabPaths, say: Say, *args: str, quiet: bool = False) -> procs.Completed:
    say(shown(*args))
    try:
        proc = procs.run(cli(paths, *args), timeout=CLI_TIMEOUT)
    except procs.TimedOutError as exc:
        raise LabError(f"`outguard {' '.join(args)}` did not finish in {CLI_TIMEOUT:.0f} s") from exc
    if not quiet:
        for text in (proc.stdout, proc.stderr):
            for line in text.rstrip().splitlines():
                say(f"  {line}")
    return proc


def _show(say: Say) -> Callable[[workload.StepResult], None]:
    def show(r: workload.StepResult) -> None:
        mark = report.OK_MARK if r.ok else report.BAD_MARK
        say(f"  {mark} {r.observed.value.upper():8} {r.step.description}: {r.detail}")
    return show


def _workload(paths: t.LabPaths, say: Say, steps: list[Step]) -> list[workload.StepResult]:
    return workload.run_steps(steps, workload.ns_runner(), _show(say))


def _table_present() -> bool:
    got = netns.run(t.SERVER_NS, ["nft", "list", "tables"])
    return "inet outguard" in got.stdout


def learn(paths: t.LabPaths, say: Say, r: JourneyResult) -> None:
    """`outguard learn --for` with the workload running meanwhile; then `outguard flows`."""
    say(f"\n== 1. Learn: what does this server talk to? (nothing is blocked; {LEARN_FOR:.0f} s)")
    args = ("learn", "--for", f"{LEARN_FOR:.0f}s")
    say(shown(*args) + "   # on a real server: a day or a week, covering the cron jobs")
    done: list[procs.Completed | BaseException] = []

    def go() -> None:
        try:
            done.append(procs.run(cli(paths, *args), timeout=LEARN_FOR + CLI_TIMEOUT))
        except BaseException as exc:  # handed to the main thread, which raises it
            done.append(exc)
    thread = threading.Thread(target=go, name="lab-journey-learn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    # the learner binds its NFLOG groups before the open table goes in: table in = learning
    while not _table_present():
        if done or time.monotonic() > deadline:
            thread.join(5)
            raise LabError(f"outguard learn did not start: {done[0] if done else 'no table'}")
        time.sleep(0.2)
    say("  (learning; the server's workload runs meanwhile:)")
    r.learned = _workload(paths, say, journey_steps(paths))
    thread.join(LEARN_FOR + CLI_TIMEOUT + 5)
    got = done[0] if done else LabError("outguard learn did not stop")
    if isinstance(got, BaseException):
        raise LabError(f"outguard learn failed: {got}")
    for line in (got.stdout + got.stderr).strip().splitlines():
        if not line.startswith("outguard: INFO"):
            say(f"  {line}")
    if got.returncode != 0:
        raise LabError(f"outguard learn exit {got.returncode}")
    say("\nWhat was learned, one row per process, user, destination and port:")
    r.flows_text = run_cli(paths, say, "flows").stdout


def suggest(paths: t.LabPaths, say: Say, r: JourneyResult) -> None:
    """`outguard suggest --out`, printed; `outguard simulate` over the same flows."""
    say("\n== 2. Suggest: a policy from what was learned (names, not addresses)")
    policy = paths.state_dir / "suggested.yaml"
    got = run_cli(paths, say, "suggest", "--out", str(policy))
    if got.returncode != 0:
        raise LabError(f"outguard suggest exit {got.returncode}")
    r.policy_text = policy.read_text(encoding="utf-8")
    say(f"--- {policy} (review it: every rule says which flows it comes from) ---")
    for line in r.policy_text.rstrip().splitlines():
        say(f"  {line}")
    say("\n== 3. Simulate: replay every learned flow through it (exit 0: nothing would break)")
    got = run_cli(paths, say, "simulate", str(policy))
    r.simulate_code = got.returncode
    say(f"  exit {got.returncode}")


def agent_options(paths: t.LabPaths) -> AgentOptions:
    """`outguard run --no-apply` (the outguard.service unit): it serves what is applied, and
    the suggested file while nothing is."""
    return AgentOptions(policy=paths.state_dir / "suggested.yaml", apply=False,
                        netns=t.SERVER_NS, state_dir=paths.state_dir, stdout=io.StringIO())


def apply(paths: t.LabPaths, say: Say, r: JourneyResult, agent: AgentHandle) -> None:
    """`dns install` (the agent runs), `outguard apply --verify --confirm-timeout`, `confirm`."""
    say("\n== 4. Apply it, test it in the kernel, and keep it only if you confirm")
    say("  (the agent runs, as the outguard.service unit does: `outguard run --no-apply`; the"
        " suggested policy has a dns: section, so the server asks outguard's resolver:)")
    if run_cli(paths, say, "dns", "install").returncode != 0:
        raise LabError("outguard dns install failed")
    policy = str(paths.state_dir / "suggested.yaml")
    got = run_cli(paths, say, "apply", policy, "--verify",
                  "--confirm-timeout", str(CONFIRM_TIMEOUT))
    r.apply_code = got.returncode
    if got.returncode != 0:
        raise LabError(f"outguard apply --verify failed (exit {got.returncode})")
    r.confirmed = run_cli(paths, say, "confirm").returncode == 0
    # the agent follows the applied snapshot (within 0.5 s), its resolver with it
    stats = agent.wait_for_reloads(1, timeout=20.0)
    say(f"  (the agent serves {stats.serving or 'the applied policy'})")
    waited = _wait_for_names(t.host("api").fqdn)
    if waited > 1.0:
        say(f"  (names resolved again only {waited:.1f} s after the confirm)")


def _wait_for_names(name: str, timeout: float = 20.0) -> float:
    """Until the server resolves `name` (outguard's resolver answers after its reload)."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        got = netns.run(t.SERVER_NS, ["getent", "ahosts", name], check=False)
        if got.returncode == 0:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise LabError(f"{name} did not resolve through outguard's resolver in"
                           f" {timeout:.0f} s")
        time.sleep(0.3)


def enforce(paths: t.LabPaths, say: Say, r: JourneyResult, agent: AgentHandle) -> None:
    """The learned workload again, under the policy: nothing blocked, by the monitor's count
    and by the kernel's."""
    say("\n== 5. Enforce: the same workload, now under the policy")
    # what was blocked before it (verify's own probe of the default) is not the workload's
    before = {i.id: i.count for i in agent.incidents()}
    drops_before = _default_drops(paths)
    r.enforced = _workload(paths, say, journey_steps(paths))
    time.sleep(1.0)  # what the agent still has in hand
    r.blocked_incidents = [i for i in agent.incidents() if i.count > before.get(i.id, 0)]
    say(f"  monitor: {len(r.blocked_incidents)} new incident(s), i.e. blocked flows")
    for i in r.blocked_incidents:
        say(f"    {report.BAD_MARK} {i.process} -> {i.dst} port {i.dport} ({i.rule})")
    drops_after = _default_drops(paths)
    r.default_drops = None if drops_before is None or drops_after is None else \
        drops_after - drops_before
    say(f"  kernel: the default drop's counter moved by {r.default_drops} packet(s)"
        f" (`outguard status`; {drops_before} before: verify's probe)")


def _default_drops(paths: t.LabPaths) -> int | None:
    counters, _error = demo.read_counters(paths)
    return None if counters is None else counters.get("default", report.Counter(0, 0)).packets


def jndi(paths: t.LabPaths, say: Say, r: JourneyResult, agent: AgentHandle) -> None:
    say("\n== 6. An attack: the Java service is made to do a JNDI callback (Log4Shell)")
    r.jndi = workload.run_step(jndi_step(paths), workload.ns_runner())
    _show(say)(r.jndi)
    r.jndi_incidents = agent.wait_for_incidents(
        1, timeout=10.0, query=Query(min_severity="critical"))
    for i in r.jndi_incidents:
        say(f"  {i.severity.upper()} incident: {i.title} — {i.process} -> {i.dst}"
            f" port {i.dport} ({i.rule})")
    if not r.jndi_incidents:
        say(f"  {report.BAD_MARK} no critical incident was raised")


def lockdown(paths: t.LabPaths, say: Say, r: JourneyResult, agent: AgentHandle) -> None:
    say(f"\n== 7. Lockdown: the emergency brake, for {LOCKDOWN_FOR:.0f} s"
        " (it expires in the kernel)")
    got = run_cli(paths, say, "lockdown", "--for", f"{LOCKDOWN_FOR:.0f}s")
    if got.returncode != 0:
        raise LabError(f"outguard lockdown exit {got.returncode}")
    started = time.monotonic()
    r.lockdown_blocked = workload.run_step(api_step(paths, Outcome.BLOCKED), workload.ns_runner())
    _show(say)(r.lockdown_blocked)
    r.lockdown_incidents = agent.wait_for_incidents(1, timeout=5.0, query=Query(rule="lockdown"))
    for i in r.lockdown_incidents:
        say(f"  incident ({i.severity}): {i.title} — {i.process} -> {i.dst} port {i.dport}")
    left = LOCKDOWN_FOR - (time.monotonic() - started) + 2.0
    say(f"  (waiting {max(left, 0):.0f} s for it to expire; no outguard command is run)")
    time.sleep(max(left, 0))
    r.lockdown_lifted = workload.run_step(api_step(paths), workload.ns_runner())
    _show(say)(r.lockdown_lifted)


def run_journey(*, down_after: bool = False, say: Say = print,
                paths: t.LabPaths | None = None) -> JourneyResult:
    """The whole journey in a fresh lab; the lab is left up unless `down_after`."""
    paths = paths or t.LabPaths()
    lifecycle.require_root()
    lifecycle.require_tools(lifecycle.UP_TOOLS | workload.DEMO_TOOLS)
    r = JourneyResult()

    def timed(name: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        fn()
        r.timings[name] = time.monotonic() - t0

    try:
        say("lab up (fresh): og-lab-server, a server with no egress policy yet ...")
        timed("up", lambda: lifecycle.up(paths))
        timed("javac", lambda: workload.compile_java(paths))
        timed("learn", lambda: learn(paths, say, r))
        timed("suggest", lambda: suggest(paths, say, r))
        with AgentHandle(agent_options(paths)) as agent:
            timed("apply", lambda: apply(paths, say, r, agent))
            timed("enforce", lambda: enforce(paths, say, r, agent))
            timed("jndi", lambda: jndi(paths, say, r, agent))
            timed("lockdown", lambda: lockdown(paths, say, r, agent))
    finally:
        if down_after:
            say("lab down ...")
            lifecycle.down(paths)
    return r
