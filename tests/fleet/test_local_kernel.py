"""The fleet agent's host operations in a namespace of their own: a pushed policy applied with
the fleet's (sleeping) watchdog is rolled back by it at the deadline when nobody confirms — the
agent was killed, say — and a confirmed one stays and becomes the last good policy; the
fleet's lockdown keeps the rule that reaches the fleet server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from outguard.apply.recovery import watchdog_alive
from outguard.cli.fleetrun import fleet_setup
from outguard.fleet.client import Credential, save_credential
from outguard.kernel import netns as ns
from outguard.state import StateDir
from tests.kernel.conftest import kernel_skip_reason, new_netns

pytestmark = pytest.mark.kernel


def policy(tag: str) -> str:
    return textwrap.dedent(f"""\
        # {tag}
        version: 1
        mode: enforce
        allow:
          - name: fleet-server
            to: [198.51.100.1]
            ports: [8080]
            proto: tcp
          - name: web
            to: [203.0.113.10]
            ports: [443]
        """)


@pytest.fixture
def netns() -> Iterator[str]:
    if reason := kernel_skip_reason():
        pytest.skip(reason)
    name = new_netns()
    try:
        yield name
    finally:
        ns.delete(name)  # and the watchdog left in it, if any


def in_ns(netns: str, state: Path, code: str) -> str:
    """Run `code` with `ops` (HostOps of `state`) in a process inside the namespace."""
    script = ("import sys, json\nfrom pathlib import Path\nfrom outguard.fleet.local import"
              " HostOps\nops = HostOps(Path(sys.argv[1]), verify_probes=False,"
              " server='http://198.51.100.1:8080')\n" + code)
    got = subprocess.run(ns.exec_argv(netns, [sys.executable, "-c", script, str(state)]),
                         capture_output=True, text=True, timeout=60, check=False)
    assert got.returncode == 0, got.stderr
    return got.stdout


def test_unconfirmed_push_is_rolled_back_by_the_sleeping_watchdog(netns: str,
                                                                   tmp_path: Path) -> None:
    state = tmp_path / "state"
    a, b = policy("version A"), policy("version B")
    out = in_ns(netns, state, f"r = ops.apply({a!r}, 30)\nprint(r.ok, r.result)\n"
                              f"print(ops.confirm({a!r}))")
    assert out.startswith("True applied"), out
    assert (state / "fleet" / "policy.yaml").read_text() == a
    # B is applied and the process ends without confirming: only the watchdog is left
    out = in_ns(netns, state, f"r = ops.apply({b!r}, 3)\nprint(r.ok, r.result)")
    assert out.startswith("True applied"), out
    sd = StateDir(state)
    pending = sd.pending()
    assert pending is not None and watchdog_alive(pending)  # known by its token
    cmdline = Path(f"/proc/{pending.watchdog_pid}/cmdline").read_bytes().split(b"\0")
    assert b"-S" in cmdline and b"_watchdog" in cmdline  # the bare sleeper, until its deadline
    assert sd.policy_text("applied") == b
    deadline = time.monotonic() + 20
    while sd.policy_text("applied") != a and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sd.policy_text("applied") == a
    last = sd.last_rollback()
    assert last is not None and last["by"] == "watchdog", last
    assert sd.pending() is None
    assert (state / "fleet" / "policy.yaml").read_text() == a  # the last good one


def test_confirmed_push_stays_and_lockdown_keeps_the_server_rule(netns: str,
                                                                 tmp_path: Path) -> None:
    state = tmp_path / "state"
    a = policy("version A")
    out = in_ns(netns, state, f"r = ops.apply({a!r}, 3)\nprint(ops.confirm({a!r}))\n"
                              "import time\nprint(ops.server_rules())\n"
                              "print(ops.lockdown(time.time() + 60))")
    assert "['fleet-server']" in out and "keeping fleet-server (the fleet server)" in out, out
    lockdown = json.loads((state / "lockdown.json").read_text())
    assert lockdown["keep"] == ["fleet-server"]
    time.sleep(3.5)  # past the confirmation window: nothing rolls back a confirmed policy
    assert StateDir(state).policy_text("applied") == a
    assert StateDir(state).last_rollback() is None
    in_ns(netns, state, "print(ops.lockdown(None))")
    assert not (state / "lockdown.json").exists()


def test_a_restart_inside_the_window_takes_the_waiting_apply_over(netns: str,
                                                                   tmp_path: Path) -> None:
    state = tmp_path / "state"
    a, b, c = policy("version A"), policy("version B"), policy("version C")
    in_ns(netns, state, f"ops.apply({a!r}, 30)\nops.confirm({a!r})")
    out = in_ns(netns, state, f"r = ops.apply({b!r}, 30)\nprint(r.ok, r.detail)")  # killed
    assert out.startswith("True applied (")
    pending = StateDir(state).pending()
    assert pending is not None
    # `run --fleet` started now does not apply its last good policy (refused while B waits):
    # it serves what is applied, and the fleet agent takes B over
    save_credential(state, Credential("http://198.51.100.1:8080", "h", 1, "c"))
    got = fleet_setup({"fleet_url": "http://198.51.100.1:8080", "enroll_token": None,
                       "fleet_ca": None, "fleet_host": None, "fleet_confirm_timeout": 30.0,
                       "fleet_no_verify": False, "fleet_outbox_bound": None},
                      None, False, netns, state)
    assert got[1:] == (None, False)
    # another version while B waits: refused, nothing changes
    out = in_ns(netns, state, f"r = ops.apply({c!r}, 30)\nprint(r.ok, r.result, r.detail)")
    assert out.startswith("False apply_failed") and "waits for `outguard confirm`" in out, out
    # the restarted agent is given B again: it takes the waiting apply over and confirms it
    out = in_ns(netns, state, f"r = ops.apply({b!r}, 30)\nprint(r.ok, r.mode, r.detail)\n"
                              f"print(ops.confirm({b!r}))")
    assert out.startswith("True enforce the waiting apply of this version taken over"), out
    assert StateDir(state).pending() is None and StateDir(state).policy_text("applied") == b
    time.sleep(0.3)
    assert not Path(f"/proc/{pending.watchdog_pid}").exists() or not watchdog_alive(pending)
