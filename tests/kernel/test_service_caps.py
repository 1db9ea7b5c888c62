"""The agent unit's capability bounding set is enough, and each capability the test can take
away is needed: `outguard run` under `setpriv` with exactly the unit's
`CapabilityBoundingSet=` and `no_new_privs` (what systemd gives it) applies its policy, starts
its resolver (binds port 53, drops to outguard-dns) and attributes a blocked connect of another
user (`nobody`) to its process; without CAP_SYS_PTRACE the same connect is not attributed.

The agent runs under `ip netns exec` (setns needs CAP_SYS_ADMIN, which the unit does not have:
`--netns` is for the lab and tests, not the unit).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.kernel.topology import Probe, Topology
from tests.packaging.test_units import UNITS_DIR, unit_sections

pytestmark = pytest.mark.kernel

POLICY = """version: 1
mode: enforce
dns:
  listen: "127.0.0.1:53"
  upstreams: ["203.0.113.53"]
allow:
  - name: web
    to: [203.0.113.10]
    ports: [443]
alerts:
  - stdout: json
"""
BLOCKED = Probe("198.51.100.9", 8081, uid=65534)


def unit_caps() -> list[str]:
    svc = unit_sections((UNITS_DIR / "outguard.service").read_text())["Service"]
    return [c.removeprefix("CAP_").lower() for c in svc["CapabilityBoundingSet"].split()]


def _run_with(topo: Topology, caps: list[str]) -> list[dict[str, object]]:
    """Incidents of a blocked connect by nobody, from the agent started with only `caps`."""
    policy = topo.write_policy(POLICY)
    argv = ["ip", "netns", "exec", topo.server, "setpriv",
            f"--bounding-set=-all,{','.join('+' + c for c in caps)}", "--inh-caps=-all",
            "--no-new-privs", sys.executable, "-m", "outguard", "run", str(policy),
            "--state-dir", str(topo.state_dir)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            dig = subprocess.run(["ip", "netns", "exec", topo.server, "dig", "+time=1",
                                  "+tries=1", "@127.0.0.1", "blocked.example.test"],
                                 capture_output=True, text=True, timeout=10, check=False)
            if "status: " in dig.stdout:  # the resolver answers (REFUSED: no rule allows it)
                break
            time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()
        assert "status: REFUSED" in dig.stdout, dig.stdout
        assert topo.probe([BLOCKED], timeout=2.0) == ["timeout"]
        time.sleep(2)  # the monitor's aggregation
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _connect(incidents: list[dict[str, object]]) -> dict[str, object]:
    found = [i for i in incidents if i["dst"] == BLOCKED.addr]
    assert found, incidents
    process = found[0]["process"]
    assert isinstance(process, dict)
    return process


def test_the_units_capabilities_suffice(topology: Topology, tmp_path: Path) -> None:
    topology.add_addresses(BLOCKED.addr)
    process = _connect(_run_with(topology, unit_caps()))
    assert process["user"] == "nobody" and process["pid"] is not None, process
    assert process["attribution_failure"] is None, process


def test_without_sys_ptrace_attribution_fails(topology: Topology) -> None:
    topology.add_addresses(BLOCKED.addr)
    process = _connect(_run_with(topology, [c for c in unit_caps() if c != "sys_ptrace"]))
    assert process["pid"] is None and process["attribution_failure"], process
