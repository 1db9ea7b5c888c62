"""Warnings that ask the machine (`outguard check`): units, cgroups, names, the NFLOG group.
Each test points `Machine` at directories it made, so the answers do not depend on this host."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from outguard.policy import host
from outguard.policy.host import Machine, machine_warnings
from outguard.policy.load import load_text


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    units = tmp_path / "units"
    units.mkdir()
    (units / "nginx.service").write_text("[Unit]\nDescription=web\n[Service]\nUser=www-data\n"
                                         "ExecStart=/usr/sbin/nginx\n")
    (units / "backup.service").write_text("[Service]\nExecStart=/bin/true\n")
    (units / "getty@.service").write_text("[Service]\nExecStart=/sbin/agetty\n")
    cgroups = tmp_path / "cgroup"
    (cgroups / "system.slice" / "nginx.service").mkdir(parents=True)
    (cgroups / "system.slice" / "getty@tty1.service").mkdir(parents=True)
    (cgroups / "custom" / "app").mkdir(parents=True)
    return Machine(unit_dirs=[str(units)], cgroup_roots=[str(cgroups)],
                   resolver=lambda name: ["192.0.2.1"] if name.endswith(".good.test") else [],
                   nflog_table=str(tmp_path / "nflog"), proc=str(tmp_path / "proc"))


def warnings(text: str, machine: Machine) -> list[str]:
    return [str(w) for w in machine_warnings(load_text(text, "p.yaml"), machine)]


RULE = "version: 1\nallow:\n  - {name: a, to: [203.0.113.1], ports: [443], for: %s}\n"


@pytest.mark.parametrize(("owner", "expected"), [
    ("{unit: nginx.service}", []),
    ("{unit: getty@tty1.service}", []),
    ("{unit: ngnix.service}",
     ["p.yaml:3:60: allow[0].for.unit: no systemd unit 'ngnix.service' on this machine: the rule"
      " matches nothing until it is installed and running; did you mean 'nginx.service'?"]),
    ("{unit: backup.service}",
     ["p.yaml:3:60: allow[0].for.unit: unit 'backup.service' is not running now: the rule"
      " matches nothing until it runs"]),
    ("{unit: nginx.service, user: root}",
     ["p.yaml:3:53: allow[0].for: unit 'nginx.service' runs as user 'www-data' (User= in {units}"
      "/nginx.service), not 'root': the rule matches nothing"]),
    ("{cgroup: /custom/app}", []),
    ("{cgroup: /custom/gone}",
     ["p.yaml:3:62: allow[0].for.cgroup: no cgroup '/custom/gone' on this machine now: the rule"
      " matches nothing until it exists"]),
])
def test_units_and_cgroups(owner: str, expected: list[str], machine: Machine) -> None:
    units = str(machine.unit_dirs[0])
    assert warnings(RULE % owner, machine) == [e.replace("{units}", units) for e in expected]


def test_names_that_do_not_resolve_now(machine: Machine) -> None:
    text = ("version: 1\nallow:\n  - {name: a, to: [api.good.test, gone.example.test, '@l'],"
            " ports: [443]}\nlists:\n  l: [also-gone.example.test, x.good.test]\n")
    assert warnings(text, machine) == [
        "p.yaml:3:35: allow[0].to[1]: host name 'gone.example.test' does not resolve on this"
        " machine now: apply goes on without it (the name matches nothing until an apply"
        " resolves it)",
        "p.yaml:5:7: lists.l[0]: host name 'also-gone.example.test' does not resolve on this"
        " machine now: apply goes on without it (the name matches nothing until an apply"
        " resolves it)"]


def test_names_are_not_resolved_with_a_dns_section(machine: Machine) -> None:
    asked: list[str] = []
    machine.resolver = lambda name: asked.append(name) or []  # type: ignore[func-returns-value]
    warnings("version: 1\nallow:\n  - {name: a, to: [gone.example.test]}\n"
             "dns: {upstreams: [192.0.2.53]}\n", machine)
    assert asked == []


def test_a_resolver_that_hangs_does_not_hang_check(machine: Machine,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "RESOLVE_WAIT", 0.5)
    machine.resolver = lambda name: time.sleep(3) or []  # type: ignore[func-returns-value]
    started = time.monotonic()
    got = warnings("version: 1\nallow:\n  - {name: a, to: [slow.example.test], ports: [1]}\n",
                   machine)
    assert time.monotonic() - started < 2
    assert got == ["p.yaml:3:20: allow[0].to[0]: host name 'slow.example.test' did not resolve"
                   " within 0 s: apply goes on without it (the name matches nothing until an"
                   " apply resolves it)"]


def nflog_table(machine: Machine, rows: list[tuple[int, int]]) -> None:
    machine.nflog_table.write_text("".join(f"{g:5d} {p:6d}     0 2 65535      1 1\n"
                                           for g, p in rows))


def test_an_nflog_group_another_program_holds(machine: Machine) -> None:
    (machine.proc / "4242").mkdir(parents=True)
    (machine.proc / "4242" / "cmdline").write_bytes(b"/usr/sbin/ulogd\0-d\0")
    nflog_table(machine, [(5, 4242), (0, 77)])
    text = "version: 1\nmode: audit\noptions: {nflog_group: 5}\n"
    assert warnings(text, machine) == [
        "p.yaml:3:24: options.nflog_group: NFLOG group 5 is held by '/usr/sbin/ulogd -d' (pid"
        " 4242): outguard's monitor would receive nothing; pick another options.nflog_group"]
    # group 0, by a process that is gone: said without a name
    assert warnings("version: 1\nmode: audit\n", machine) == [
        "p.yaml:1:1: NFLOG group 0 is held by netlink port 77: outguard's monitor would receive"
        " nothing; pick another options.nflog_group"]


def test_an_nflog_group_outguard_holds_is_fine(machine: Machine) -> None:
    (machine.proc / "99").mkdir(parents=True)
    (machine.proc / "99" / "cmdline").write_bytes(b"/opt/outguard/bin/python\0-m\0outguard\0run\0")
    nflog_table(machine, [(0, 99)])
    assert warnings("version: 1\nmode: audit\n", machine) == []


def test_the_real_machine_answers_without_error() -> None:
    """No fakes: this host's unit directories, cgroups and /proc (nothing asserted about them
    but that the checks run and name a unit that cannot exist)."""
    got = machine_warnings(load_text(RULE % "{unit: no-such-unit-xyz.service}", "p.yaml"))
    assert any("no systemd unit 'no-such-unit-xyz.service'" in str(w) for w in got)
    assert os.path.isdir("/proc")
