"""`lab up` and `lab down`: build the whole lab, check it answers, and remove every trace of it.

Place in the data flow: called by `cli.lab_cmd` and `demo`. `up` = `runtime.prepare` (files) ->
`network.build` (namespaces, veth, addresses, routes, resolv.conf) -> dnsmasq and the services
process, started detached in og-lab-inet -> `probe.wait_ready` from inet, then from the server.
`up` always starts from nothing: a lab that is already there is taken down first, so re-running
it rebuilds cleanly. A failed `up` removes what it built. `down` is idempotent.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from outguard.errors import KernelError, LabError
from outguard.kernel import netns
from outguard.lab import dns, network, probe, runtime
from outguard.lab import topology as t

SERVICES_MODULE = "outguard.lab.services"
START_TIMEOUT = 20.0
INET_READY_TIMEOUT = 10.0
SERVER_READY_TIMEOUT = 5.0

UP_TOOLS = {"ip": "iproute2", "sysctl": "procps", "dnsmasq": "dnsmasq-base", "openssl": "openssl"}
"""Program -> the Debian package that ships it."""

Say = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab creates network namespaces and needs root: run it with sudo")


def require_tools(tools: dict[str, str]) -> None:
    missing = {prog: pkg for prog, pkg in tools.items() if shutil.which(prog) is None}
    if missing:
        progs = ", ".join(sorted(missing))
        pkgs = " ".join(sorted(set(missing.values())))
        raise LabError(f"missing programs: {progs}; install them with: apt-get install {pkgs}")


def services_argv(paths: t.LabPaths) -> list[str]:
    return [sys.executable, "-m", SERVICES_MODULE, "--runtime-dir", str(paths.root)]


def dnsmasq_marker(paths: t.LabPaths) -> str:
    """What identifies *our* dnsmasq in /proc/PID/cmdline (there may be others on the host)."""
    return f"--pid-file={paths.dnsmasq_pid}"


def _start(what: str, argv: list[str], log_file: str) -> None:
    try:
        netns.run(t.INET_NS, argv, timeout=START_TIMEOUT)
    except KernelError as exc:
        raise LabError(f"{what} did not start in {t.INET_NS}: {exc}\n(log: {log_file})") from exc


@dataclass
class UpResult:
    seconds: float = 0.0
    rebuilt: bool = False
    steps: list[tuple[str, float]] = field(default_factory=list)


def up(paths: t.LabPaths | None = None, say: Say = _quiet) -> UpResult:
    """Build the lab from scratch and return once every listener answers from the server."""
    paths = paths or t.LabPaths()
    require_root()
    require_tools(UP_TOOLS)
    result = UpResult()
    started = time.monotonic()

    def step(name: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        say(f"{name} ...")
        fn()
        result.steps.append((name, time.monotonic() - t0))

    existing = down(paths)
    result.rebuilt = bool(existing.namespaces or existing.daemons)
    try:
        step("runtime files and TLS certificate", lambda: runtime.prepare(paths))
        step("namespaces, veth, addresses, routes", network.build)
        step("dnsmasq (example.test)", lambda: _start(
            "dnsmasq", dns.dnsmasq_argv(paths), str(paths.dnsmasq_log)))
        step("HTTP/HTTPS/LDAP services", lambda: _start(
            "the lab services", services_argv(paths), str(paths.services_log)))
        step("listeners answer in og-lab-inet",
             lambda: probe.wait_ready(t.INET_NS, paths, INET_READY_TIMEOUT))
        step("reachable from og-lab-server (IPv4 and IPv6)",
             lambda: probe.wait_ready(t.SERVER_NS, paths, SERVER_READY_TIMEOUT))
    except BaseException as exc:
        # Leave nothing half-built behind, also on Ctrl-C; the original error is what matters.
        try:
            down(paths)
        except LabError as cleanup:
            exc.add_note(f"removing the half-built lab failed too: {cleanup}")
        if isinstance(exc, LabError) and paths.services_log.exists():
            exc.add_note("services log:\n" + runtime.tail(paths.services_log))
        raise
    result.seconds = time.monotonic() - started
    return result


@dataclass
class DownResult:
    daemons: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def anything(self) -> bool:
        return bool(self.daemons or self.namespaces)


def down(paths: t.LabPaths | None = None) -> DownResult:
    """Stop the daemons, delete both namespaces, /etc/netns dirs and the runtime dir."""
    paths = paths or t.LabPaths()
    require_root()
    result = DownResult()
    started = time.monotonic()
    # Gracefully first, so the daemons flush their logs; deleting a namespace SIGKILLs the rest.
    if runtime.stop_daemon(paths.services_pid, SERVICES_MODULE):
        result.daemons.append("services")
    if runtime.stop_daemon(paths.dnsmasq_pid, dnsmasq_marker(paths)):
        result.daemons.append("dnsmasq")
    result.namespaces = network.teardown()
    runtime.remove(paths)
    result.seconds = time.monotonic() - started
    return result


def is_up() -> bool:
    return all(netns.exists(ns) for ns in t.NAMESPACES)
