"""`for: {unit: …}` and `for: {cgroup: …}` against real processes in real cgroups.

The kernel matches a socket's cgroup by its 64-bit id; outguard puts the cgroup into a set
(`c_…`) that each apply, restore and rollback fills with the cgroups that exist then. A unit
that is not running must not make nft refuse the whole batch (it did: nft resolves the path
when it builds the batch), at apply and at boot (`restore`).

This machine is hybrid (cgroup2 at /sys/fs/cgroup/unified, DESIGN "Kernel facts"); one test
runs the CLI in a private mount namespace with cgroup2 mounted at /sys/fs/cgroup, the pure v2
layout. Test cgroups are named ogt-<hex> and removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outguard.kernel import netns as ns
from outguard.kernel.cgroups import cgroup2_mount
from tests.kernel.topology import PASSED, Probe, Topology, _child_python, _probe_source

pytestmark = pytest.mark.kernel

ALLOWED = Probe("203.0.113.10", 443)


@pytest.fixture
def cgroup_root() -> Iterator[tuple[Path, str]]:
    """(cgroup2 mount, a fresh top-level cgroup name ogt-<hex>), removed afterwards."""
    mount = cgroup2_mount()
    if mount is None:
        pytest.fail("no cgroup2 hierarchy on this machine (DESIGN: test it, never skip)")
    name = f"ogt-{secrets.token_hex(4)}"
    yield Path(mount), name
    for sub in sorted((Path(mount) / name).glob("**/"), key=lambda p: -len(p.parts)):
        sub.rmdir()


def _probe_in(topo: Topology, cgroup: Path | None, probes: list[Probe]) -> list[bool]:
    """The probes from a child process placed in `cgroup` before it starts."""
    def enter() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    argv = ns.exec_argv(topo.server, [_child_python(), "-I", "-S", "-c", _probe_source()])
    specs = [(p.addr, p.port, p.proto) for p in probes]
    proc = subprocess.run(argv, input=json.dumps({"specs": specs, "timeout": 0.6}),
                          capture_output=True, text=True, timeout=30, check=True,
                          preexec_fn=enter)  # the only way into the cgroup before exec
    return [r in PASSED for r in json.loads(proc.stdout)["results"]]


def _policy(owner: str) -> str:
    return (f"version: 1\nallow:\n  - name: svc\n    to: [203.0.113.10]\n    ports: [443]\n"
            f"    for: {{{owner}}}\n")


def test_a_cgroup_rule_matches_the_cgroups_processes_only(topology: Topology,
                                                          cgroup_root: tuple[Path, str]) -> None:
    mount, name = cgroup_root
    topology.add_addresses("203.0.113.10")
    (mount / name / "app").mkdir(parents=True)
    report = topology.apply(_policy(f"cgroup: {name}/app"))
    assert not [w for w in report.warnings if "cgroup" in w]
    assert _probe_in(topology, mount / name / "app", [ALLOWED]) == [True]
    assert _probe_in(topology, None, [ALLOWED]) == [False]


def test_a_unit_that_is_not_running_applies_and_matches_once_it_runs(
        topology: Topology, cgroup_root: tuple[Path, str]) -> None:
    """nft refused the whole batch for a unit that was not running; the agent's unit, which
    required the apply, did not start."""
    mount, name = cgroup_root
    topology.add_addresses("203.0.113.10", "203.0.113.11")
    policy = _policy(f"cgroup: {name}/web.service") + \
        "  - name: other\n    to: [203.0.113.11]\n    ports: [443]\n"
    report = topology.apply(policy)
    assert any("does not exist now" in w for w in report.warnings), report.warnings
    assert topology.passes(ALLOWED, Probe("203.0.113.11", 443)) == [False, True]
    (mount / name / "web.service").mkdir(parents=True)
    assert _probe_in(topology, mount / name / "web.service", [ALLOWED]) == [False]
    report = topology.apply(policy)  # the unit started: the next apply binds it
    assert not [w for w in report.warnings if "does not exist" in w]
    assert report.method == "delta"
    assert _probe_in(topology, mount / name / "web.service", [ALLOWED]) == [True]


def test_restore_at_boot_with_the_unit_not_running_yet(topology: Topology,
                                                      cgroup_root: tuple[Path, str]) -> None:
    mount, name = cgroup_root
    topology.add_addresses("203.0.113.10")
    (mount / name / "db.service").mkdir(parents=True)
    topology.apply(_policy(f"cgroup: {name}/db.service"))
    (mount / name / "db.service").rmdir()  # the reboot: the unit has not started yet
    topology.nft("delete", "table", "inet", "outguard")
    proc = topology.cli("restore")
    assert proc.returncode == 0, proc.stderr
    assert ("inet", "outguard") in topology.tables()
    (mount / name / "db.service").mkdir()
    assert _probe_in(topology, mount / name / "db.service", [ALLOWED]) == [False]
    assert topology.cli("restore").returncode == 0  # run again once it started: bound
    assert _probe_in(topology, mount / name / "db.service", [ALLOWED]) == [True]


def test_the_cli_in_a_namespace_finds_the_cgroup(topology: Topology,
                                                 cgroup_root: tuple[Path, str]) -> None:
    """`--netns` re-executes under `ip netns exec`, which mounts a /sys without cgroups."""
    mount, name = cgroup_root
    topology.add_addresses("203.0.113.10")
    (mount / name / "api.service").mkdir(parents=True)
    proc = topology.cli("apply", str(topology.write_policy(_policy(
        f"cgroup: {name}/api.service"))))
    assert proc.returncode == 0, proc.stderr
    assert "does not exist" not in proc.stderr
    assert _probe_in(topology, mount / name / "api.service", [ALLOWED]) == [True]
    assert _probe_in(topology, None, [ALLOWED]) == [False]


def test_a_unit_rule_on_a_pure_cgroup2_host(topology: Topology) -> None:
    """cgroup2 mounted at /sys/fs/cgroup (a private mount namespace: `unshare -m`), the unit's
    cgroup under system.slice, the CLI as a sysadmin runs it."""
    mount = cgroup2_mount()
    assert mount is not None
    unit = f"ogt-{secrets.token_hex(4)}.service"
    slice_dir = Path(mount) / "system.slice"
    made_slice = not slice_dir.exists()
    (slice_dir / unit).mkdir(parents=True)
    try:
        topology.add_addresses("203.0.113.10")
        policy = topology.write_policy(_policy(f"unit: {unit}"))
        proc = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             "mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"", "sh",
             sys.executable, "-m", "outguard", "apply", str(policy), "--netns", topology.server,
             "--state-dir", str(topology.state_dir)],
            capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "does not exist" not in proc.stderr
        assert _probe_in(topology, slice_dir / unit, [ALLOWED]) == [True]
        assert _probe_in(topology, None, [ALLOWED]) == [False]
    finally:
        (slice_dir / unit).rmdir()
        if made_slice:
            with contextlib.suppress(OSError):  # another test may use it now
                slice_dir.rmdir()


def _until(check: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_the_agent_follows_a_unit_that_starts_and_restarts(topology: Topology) -> None:
    """`outguard run` on a pure cgroup2 host (a private mount namespace, cgroup2 at
    /sys/fs/cgroup): the unit is not running at the apply (an empty set, no refused batch),
    starts, and restarts with a new cgroup (a new id); its rule follows each time without a
    new apply. Before the agent watched, the set kept the dead cgroup's id."""
    mount = cgroup2_mount()
    assert mount is not None
    unit = f"ogt-{secrets.token_hex(4)}.service"
    slice_dir = Path(mount) / "system.slice"
    made_slice = not slice_dir.exists()
    slice_dir.mkdir(exist_ok=True)
    cgroup = slice_dir / unit
    topology.add_addresses("203.0.113.10")
    policy = topology.write_policy(_policy(f"unit: {unit}"))
    def pure_v2(*args: str) -> list[str]:
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                "mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"", "sh",
                sys.executable, "-m", "outguard", *args, "--netns", topology.server,
                "--state-dir", str(topology.state_dir)]

    def partial() -> bool:
        proc = subprocess.run(pure_v2("status", "--check"), capture_output=True, text=True,
                              timeout=60, check=False)
        return "applies only in part" in proc.stdout + proc.stderr

    agent = subprocess.Popen(pure_v2("run", str(policy)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert _until(lambda: ("inet", "outguard") in topology.tables()), agent.poll()
        assert _until(partial)  # (once the agent's first report is written)
        cgroup.mkdir()  # the unit starts after the apply
        assert _until(lambda: _probe_in(topology, cgroup, [ALLOWED]) == [True]), \
            "the agent did not bind the unit that started"
        assert _probe_in(topology, None, [ALLOWED]) == [False]  # the same binary, outside
        assert not partial()  # bound: `status --check` no longer calls the rule partial
        first = cgroup.stat().st_ino
        cgroup.rmdir()  # the restart: systemd removes the cgroup and makes a new one
        cgroup.mkdir()
        assert cgroup.stat().st_ino != first
        assert _until(lambda: _probe_in(topology, cgroup, [ALLOWED]) == [True]), \
            "the restarted unit lost its rule"
        assert _probe_in(topology, None, [ALLOWED]) == [False]
        assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
    finally:
        agent.terminate()
        try:
            _out, err = agent.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            _out, err = agent.communicate()
        with contextlib.suppress(FileNotFoundError):
            cgroup.rmdir()
        if made_slice:
            with contextlib.suppress(OSError):  # another test may use it now
                slice_dir.rmdir()
    assert "Traceback" not in err, err
