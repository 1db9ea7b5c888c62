"""Lab: `up` is idempotent and cleans up after itself on failure; `down` leaves nothing, twice."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from outguard.cli.lab_cmd import lab as lab_group
from outguard.errors import LabError
from outguard.kernel import netns
from outguard.lab import lifecycle, probe, runtime
from outguard.lab import topology as t

from .conftest import lab_leftovers

pytestmark = pytest.mark.lab

VOLATILE = {"valid_life_time", "preferred_life_time", "expires", "stats64", "operstate"}


def _stable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def host_state() -> tuple[object, object, str]:
    """The host namespace's addresses, routes and nftables tables (read only)."""
    def run(argv: list[str]) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10).stdout
    return (_stable(json.loads(run(["ip", "-j", "addr"]))),
            _stable(json.loads(run(["ip", "-j", "route", "show", "table", "all"]))),
            run(["nft", "list", "tables"]))


def test_up_then_down_twice_leaves_nothing(clean_lab: t.LabPaths) -> None:
    before = host_state()
    up = lifecycle.up(clean_lab)
    assert up.seconds < 15 and not up.rebuilt
    assert lifecycle.is_up()
    # The host namespace's addresses, routes and firewall tables did not change at all (the
    # host may itself use a documentation range: the lab must not care, and does not).
    assert host_state() == before
    # Readiness probes are not logged as traffic.
    assert clean_lab.attacker_log.read_text() == ""
    assert clean_lab.access_log.read_text() == ""
    pids = [runtime.read_pid(clean_lab.services_pid), runtime.read_pid(clean_lab.dnsmasq_pid)]
    assert all(pids)

    first = lifecycle.down(clean_lab)
    assert sorted(first.namespaces) == sorted(t.NAMESPACES)
    assert first.daemons == ["services", "dnsmasq"]
    assert lab_leftovers() == []
    assert all(runtime.cmdline(p) is None for p in pids if p)
    second = lifecycle.down(clean_lab)
    assert not second.anything
    assert lab_leftovers() == []
    assert host_state() == before


def test_up_rebuilds_a_running_lab(clean_lab: t.LabPaths) -> None:
    lifecycle.up(clean_lab)
    old = runtime.read_pid(clean_lab.services_pid)
    again = lifecycle.up(clean_lab)
    assert again.rebuilt
    new = runtime.read_pid(clean_lab.services_pid)
    assert old and new and old != new
    assert runtime.cmdline(old) is None
    assert netns.run(t.SERVER_NS, ["curl", "-sS", "--connect-timeout", "2",
                                   "http://api.example.test/"]).returncode == 0


def test_down_kills_what_runs_in_the_namespaces(clean_lab: t.LabPaths) -> None:
    lifecycle.up(clean_lab)
    sleeper = subprocess.Popen(netns.exec_argv(t.SERVER_NS, ["sleep", "60"]))
    try:
        lifecycle.down(clean_lab)
        assert sleeper.wait(timeout=5) != 0
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait(timeout=5)
    assert lab_leftovers() == []


def test_failed_up_removes_what_it_built(
    clean_lab: t.LabPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = probe.wait_ready

    def broken(ns: str, paths: t.LabPaths, timeout: float) -> None:
        real(ns, paths, timeout)
        if ns == t.SERVER_NS:
            raise LabError("simulated: not reachable")

    monkeypatch.setattr(probe, "wait_ready", broken)
    with pytest.raises(LabError, match="simulated"):
        lifecycle.up(clean_lab)
    assert lab_leftovers() == []


def test_cli_up_and_down(clean_lab: t.LabPaths) -> None:
    runner = CliRunner()
    up = runner.invoke(lab_group, ["up"])
    assert up.exit_code == 0, up.output
    assert "lab up in" in up.output and "attacker.example.test" in up.output
    down = runner.invoke(lab_group, ["down"])
    assert down.exit_code == 0 and "lab removed" in down.output
    again = runner.invoke(lab_group, ["down"])
    assert again.exit_code == 0 and "nothing left behind" in again.output
    assert lab_leftovers() == []


def test_down_removes_the_resolv_conf_dns_install_saved(clean_lab: t.LabPaths) -> None:
    """`outguard dns install --netns og-lab-server` (the journey) saves the lab's resolv.conf
    beside /etc/netns/og-lab-server/; left behind, the next lab's `dns install` refused."""
    lifecycle.up(clean_lab)
    for _ in range(2):
        got = subprocess.run([sys.executable, "-m", "outguard", "dns", "install", "--netns",
                              t.SERVER_NS], capture_output=True, text=True, timeout=60,
                             check=False)
        assert got.returncode == 0, got.stderr
        assert t.netns_saved_resolv_conf(t.SERVER_NS).exists()
        lifecycle.down(clean_lab)
        assert lab_leftovers() == []
        lifecycle.up(clean_lab)
