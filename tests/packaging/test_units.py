"""The shipped systemd units (packaging/systemd/): `systemd-analyze verify` accepts each, the
security review (`systemd-analyze security --offline=yes`) scores each at most 4.0 ("OK"),
and the fail-closed contract holds in the unit files themselves: no unit removes the table
when it stops.

`verify` checks that every command a unit runs exists: the tests point `/usr/bin/outguard` at
this checkout's CLI (the only change), and tests/packaging/test_package.py verifies the units
as the package installs them, next to its man page.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS_DIR = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
UNITS = ("outguard.service", "outguard-restore.service", "outguard-feeds.service",
         "outguard-feeds.timer")
SERVICES = [u for u in UNITS if u.endswith(".service")]
MAX_EXPOSURE = 4.0

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="needs systemd-analyze (package systemd)")


def _cli() -> str:
    found = Path(sys.executable).parent / "outguard"
    assert found.exists(), found
    return str(found)


def unit_sections(text: str) -> configparser.RawConfigParser:
    """A unit file as sections of keys; repeated keys (SystemCallFilter=) keep the last."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def _copy_units(dest: Path, cli: str) -> list[Path]:
    out = []
    for name in UNITS:
        text = (UNITS_DIR / name).read_text().replace("/usr/bin/outguard", cli)
        (dest / name).write_text(text)
        out.append(dest / name)
    return out


def exposure(unit: Path) -> tuple[float, str]:
    """`systemd-analyze security --offline=yes`'s overall exposure and verdict for a unit file."""
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return float(found.group(1)), found.group(2)


def test_every_unit_verifies(tmp_path: Path) -> None:
    units = _copy_units(tmp_path, _cli())
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check can fail: a misspelt key and a missing binary are reported."""
    (tmp_path / "outguard.service").write_text(
        (UNITS_DIR / "outguard.service").read_text().replace("ProtectHome=", "ProtectHom=")
        .replace("/usr/bin/outguard", "/nonexistent/outguard"))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no",
                           str(tmp_path / "outguard.service")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "ProtectHom" in proc.stderr and "/nonexistent/outguard" in proc.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_exposure_is_ok(name: str, tmp_path: Path) -> None:
    unit = _copy_units(tmp_path, _cli())[UNITS.index(name)]
    score, verdict = exposure(unit)
    print(f"\n{name}: exposure {score} {verdict}")
    assert score <= MAX_EXPOSURE and verdict == "OK", (score, verdict)


def test_the_exposure_check_can_fail(tmp_path: Path) -> None:
    """The same unit with no hardening at all scores far above the target."""
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nType=notify\nExecStart=/bin/true\n")
    score, verdict = exposure(bare)
    assert score > MAX_EXPOSURE and verdict != "OK"


def test_the_agent_is_type_notify_with_a_watchdog_and_restarts() -> None:
    svc = unit_sections((UNITS_DIR / "outguard.service").read_text())["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert svc["WatchdogSec"] and svc["Restart"] == "on-failure"
    assert svc["ExecStart"].startswith("/usr/bin/outguard run ")
    assert svc["StateDirectory"] == "outguard"
    assert svc["ProtectSystem"] == "strict" and svc["ProtectHome"] == "yes"
    assert svc["NoNewPrivileges"] == "yes"
    caps = set(svc["CapabilityBoundingSet"].split())
    assert caps == {"CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH",
                    "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"}
    text = (UNITS_DIR / "outguard.service").read_text()
    for cap in caps:  # each capability says why, in a comment
        assert re.search(rf"^#.*{cap.removeprefix('CAP_')}.*\S.*$", text, re.M), cap


@pytest.mark.parametrize("name", SERVICES)
def test_stopping_a_unit_never_removes_the_table(name: str) -> None:
    """Fail closed: no unit has an ExecStop/ExecStopPost, and none runs `outguard remove`."""
    text = (UNITS_DIR / name).read_text()
    svc = unit_sections(text)["Service"]
    assert not {"ExecStop", "ExecStopPost"} & set(svc), name
    assert "outguard remove" not in "\n".join(v for v in svc.values())


def test_the_timer_starts_the_feeds_service() -> None:
    timer = unit_sections((UNITS_DIR / "outguard-feeds.timer").read_text())
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Install"]["WantedBy"] == "timers.target"
    svc = unit_sections((UNITS_DIR / "outguard-feeds.service").read_text())["Service"]
    assert svc["ExecStart"] == "/usr/bin/outguard feeds update" and svc["Type"] == "oneshot"
