"""Fixtures for lab tests: the real lab (fixed names og-lab-server / og-lab-inet), always removed.

Tests marked `lab` need root and the lab's programs; they are skipped with the reason otherwise.
The lab's names are fixed, so these tests take down a lab someone left up, and never run two labs
at once (pytest runs them one after the other).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from outguard.kernel import netns
from outguard.lab import lifecycle, workload
from outguard.lab import topology as t


def lab_skip_reason(tools: dict[str, str] | None = None) -> str | None:
    """Why the lab cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    needed = tools if tools is not None else lifecycle.UP_TOOLS | {"curl": "curl", "dig": "dnsutils"}
    missing = sorted({pkg for prog, pkg in needed.items() if shutil.which(prog) is None})
    if missing:
        return f"lab tests need Debian packages: {' '.join(missing)}"
    return None


def java_skip_reason() -> str | None:
    return lab_skip_reason(workload.DEMO_TOOLS)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("lab") is not None and (reason := lab_skip_reason()):
        pytest.skip(reason)


def lab_leftovers() -> list[str]:
    """Everything a lab leaves behind: namespaces, /etc/netns dirs, runtime dir, processes."""
    found = [f"namespace {n}" for n in netns.list_names() if n in t.NAMESPACES]
    found += [f"dir {t.netns_etc_dir(n)}" for n in t.NAMESPACES if t.netns_etc_dir(n).exists()]
    found += [f"file {t.netns_saved_resolv_conf(n)}" for n in t.NAMESPACES
              if t.netns_saved_resolv_conf(n).exists()]
    if t.RUNTIME_DIR.exists():
        found.append(f"dir {t.RUNTIME_DIR}")
    markers = (lifecycle.SERVICES_MODULE, str(t.RUNTIME_DIR))
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(m in a for m in markers for a in argv):
            found.append(f"process {proc.name}: {' '.join(argv)[:120]}")
    return found


@pytest.fixture(scope="module")
def lab() -> Iterator[t.LabPaths]:
    """A lab that is up for the whole module; removed afterwards whatever happens."""
    if reason := lab_skip_reason():
        pytest.skip(reason)
    paths = t.LabPaths()
    try:
        lifecycle.up(paths)
        yield paths
    finally:
        lifecycle.down(paths)


@pytest.fixture
def clean_lab() -> Iterator[t.LabPaths]:
    """No lab before the test, and none after it (the test builds and removes its own)."""
    if reason := lab_skip_reason():
        pytest.skip(reason)
    paths = t.LabPaths()
    lifecycle.down(paths)
    try:
        yield paths
    finally:
        lifecycle.down(paths)
