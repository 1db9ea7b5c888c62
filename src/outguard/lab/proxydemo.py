"""`outguard lab proxy-demo`: a cloud API whose address moves, reached by name through the
egress proxy both times, while the direct way out stays closed.

Place in the data flow: beside `demo`, on a lab that is up. Through the real CLI, in
og-lab-server: `outguard apply` of a policy that allows the API by name and closes port 80 to
everyone but the proxy (`proxy: {only_egress: true}`), then `outguard proxy serve` of the same
policy; curl as user nobody asks

    1. through the proxy   http://cloud.example.test/  -> answered by cloud-a (203.0.113.50)
    2. directly            the same URL                -> dropped by the kernel
    -- the lab's DNS moves cloud.example.test to cloud-b (203.0.113.51), as a cloud does --
    3. through the proxy   the same URL                -> answered by cloud-b: the proxy
                                                          resolved the name again
    4. directly            the same URL                -> dropped again

An address rule cannot do this: the kernel's idea of the name is what `apply` resolved; the
proxy decides by the name at each request. At the end the name points at cloud-a again and the
proxy is stopped (the policy stays applied, as after `demo`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from outguard.errors import LabError
from outguard.kernel import netns, procs
from outguard.lab import demo, dns, runtime
from outguard.lab import topology as t

NOBODY = 65534
POLICY = f"""version: 1
mode: enforce
allow:
  - {{name: lab-dns, to: [{t.DNS_V4}, "{t.DNS_V6}"], ports: [53]}}
  - {{name: cloud-api, to: [{t.CLOUD}], ports: [80]}}
proxy:
  listen: ["127.0.0.1:3128"]
  only_egress: true
"""
PROXY = "http://127.0.0.1:3128"
START_TIMEOUT = 20.0
Say = Callable[[str], None]


@dataclass
class Step:
    what: str
    expect: str  # "cloud-a" / "cloud-b": who answers; "blocked": nobody
    got: str = ""

    @property
    def ok(self) -> bool:
        return self.got == self.expect


@dataclass
class ProxyDemoResult:
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return len(self.steps) == 4 and all(s.ok for s in self.steps)

    def lines(self) -> list[str]:
        out = [f"{'ok ' if s.ok else 'BAD'} {s.what:52} expected {s.expect:8} got {s.got}"
               for s in self.steps]
        out.append("proxy demo: " + ("the name was followed, the way around stayed closed"
                                     if self.ok else "FAILED"))
        return out


def curl_argv(via_proxy: bool) -> list[str]:
    way = ["-x", PROXY] if via_proxy else ["--noproxy", "*"]
    return netns.exec_argv(t.SERVER_NS, [
        "setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
        "curl", "-q", "-sS", "--connect-timeout", "2", "--max-time", "5", *way,
        f"http://{t.CLOUD}/"])


def ask(via_proxy: bool) -> str:
    """Which lab host answered ("cloud-a", "cloud-b"), or "blocked" (no connection)."""
    proc = procs.run(curl_argv(via_proxy), timeout=15)
    if proc.returncode == 28:  # the connect timed out: the SYN was dropped
        return "blocked"
    try:
        return str(json.loads(proc.stdout)["service"])
    except (ValueError, KeyError, TypeError):
        return f"exit {proc.returncode}: {(proc.stdout + proc.stderr).strip()[:120]}"


def point_cloud_at(paths: t.LabPaths, host: str) -> None:
    """The lab's DNS answers cloud.example.test with `host`'s address from now on."""
    paths.cloud_hosts.write_text(dns.cloud_hosts_text(t.host(host).ipv4))
    pid = runtime.read_pid(paths.dnsmasq_pid)
    if pid is None:
        raise LabError("the lab's dnsmasq is not running: `outguard lab up`")
    os.kill(pid, signal.SIGHUP)  # dnsmasq reads its --addn-hosts files again
    time.sleep(0.3)


def start_proxy(paths: t.LabPaths) -> int:
    policy, log = paths.root / "proxy-demo.yaml", paths.root / "proxy-demo.log"
    with log.open("w") as fh:
        pid = procs.start_detached(netns.exec_argv(t.SERVER_NS, [
            sys.executable, "-m", "outguard", "proxy", "serve", str(policy)]), log=fh.fileno())
    deadline = time.monotonic() + START_TIMEOUT
    while "listening on" not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            stop_proxy(pid)
            raise LabError(f"the proxy did not start:\n{runtime.tail(log)}")
        time.sleep(0.1)
    return pid


def stop_proxy(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped already (subprocess collects its finished children)
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
    except ProcessLookupError:
        pass


def run(paths: t.LabPaths | None = None, say: Say = lambda _m: None) -> ProxyDemoResult:
    """The four steps (see the module docstring) on a lab that is up."""
    paths = paths or t.LabPaths()
    policy = paths.root / "proxy-demo.yaml"
    policy.write_text(POLICY)
    policy.chmod(0o644)  # the proxy reads it again as outguard-proxy on SIGHUP
    say(demo.apply_policy(policy, paths))
    result = ProxyDemoResult()
    pid = start_proxy(paths)
    try:
        for what, expect, via, move in (
                ("through the proxy, by name", "cloud-a", True, None),
                ("directly, around the proxy", "blocked", False, "cloud-b"),
                ("through the proxy, after the name moved", "cloud-b", True, None),
                ("directly, after the name moved", "blocked", False, None)):
            step = Step(f"{t.CLOUD}: {what}", expect, ask(via))
            result.steps.append(step)
            say(result.lines()[len(result.steps) - 1])
            if move is not None:
                say(f"-- the lab's DNS moves {t.CLOUD} to {move} ({t.host(move).ipv4}) --")
                point_cloud_at(paths, move)
    finally:
        stop_proxy(pid)
        point_cloud_at(paths, "cloud-a")
    return result
