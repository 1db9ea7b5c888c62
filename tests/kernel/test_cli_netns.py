"""`--netns NAME` acts in NAME, whatever the environment says (cli/common.enter_netns).

The caller runs in a namespace of its own here (standing in for the host's), so that a command
that fails to move acts on a test namespace, never on the machine's firewall.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from outguard.kernel import counters as kc
from outguard.kernel import netns as ns
from outguard.kernel.netns import NetnsThread

pytestmark = pytest.mark.kernel

POLICY = "version: 1\nallow:\n  - {name: web, to: [203.0.113.10], ports: [443]}\n"


def _tables(netns: str) -> list[tuple[str, str]]:
    with NetnsThread(netns) as thread:
        return thread.call(kc.list_tables)


@pytest.mark.parametrize("env_value", ["target", "caller", "garbage"])
def test_netns_from_the_environment_never_keeps_the_caller_where_it_is(
        netns: str, netns2: str, tmp_path: Path, env_value: str) -> None:
    """OUTGUARD_NETNS (the variable an older outguard trusted to mean "already moved") naming
    the target made `apply --netns TARGET` apply in the caller's namespace and report TARGET."""
    caller, target = netns, netns2
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    env = {**os.environ, "OUTGUARD_NETNS": {"target": target, "caller": caller,
                                            "garbage": "x"}[env_value],
           "OUTGUARD_NETNS_HOP": "(1, 2)"}
    argv = ns.exec_argv(caller, [sys.executable, "-m", "outguard", "apply", str(policy),
                                 "--netns", target, "--state-dir", str(tmp_path / "state")])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"in network namespace {target}" in proc.stdout
    assert ("inet", "outguard") in _tables(target)
    assert _tables(caller) == [], "the caller's own namespace got the table"


def test_a_command_already_in_the_namespace_does_not_move_again(netns: str,
                                                                tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    argv = ns.exec_argv(netns, [sys.executable, "-m", "outguard", "apply", str(policy),
                                "--netns", netns, "--state-dir", str(tmp_path / "state")])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert ("inet", "outguard") in _tables(netns)
