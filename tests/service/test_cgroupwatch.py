"""service.cgroupwatch: which sets it follows, when it writes, and what it writes (pure: a
temporary directory stands in for the cgroup2 hierarchy and a recorder for libnftables;
tests/kernel/test_cgroup_rules.py runs the agent with real cgroups and a real kernel)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from outguard.errors import KernelError
from outguard.kernel.cgroups import CgroupLookup
from outguard.service.cgroupwatch import CgroupWatch, cgroup_sets
from outguard.state import Snapshot, StateDir

WEB = "system.slice/web.service"


class Recorder:
    def __init__(self) -> None:
        self.docs: list[Any] = []
        self.refuse = False

    def run_json(self, doc: Any) -> Any:
        if self.refuse:
            raise KernelError("No such file or directory")
        self.docs.append(doc["nftables"][1:])
        return {}


def _apply(state: Path, paths: dict[str, str], n: int = 1) -> None:
    cmds = [{"add": {"table": {"family": "inet", "name": "outguard"}}},
            *({"outguard_cgroups": name, "paths": [p]} for name, p in paths.items())]
    snap = Snapshot(f"h{n}", "2026-01-01T00:00:00Z", "enforce", "/p.yaml", {}, {},
                    snapshot_id=f"s{n}")
    StateDir(state).write(snap, "version: 1\n", json.dumps(cmds).encode())


@pytest.fixture
def watch(tmp_path: Path) -> tuple[CgroupWatch, Recorder, Path]:
    root = tmp_path / "cgroup"
    root.mkdir()
    lookup = CgroupLookup(str(tmp_path / "no-mountinfo"))
    lookup.root, lookup.prefix = str(root), "unified"
    kernel = Recorder()
    (tmp_path / "state").mkdir()
    return CgroupWatch(tmp_path / "state", None, kernel=kernel, lookup=lookup), kernel, root


def test_the_sets_of_a_snapshot() -> None:
    assert cgroup_sets([{"add": {}}, {"outguard_cgroups": "c_a", "paths": ["x/y"]}]) == \
        {"c_a": ("x/y",)}


def test_it_writes_when_a_cgroup_appears_goes_or_is_made_anew(
        watch: tuple[CgroupWatch, Recorder, Path]) -> None:
    w, kernel, root = watch
    w.tick()
    assert kernel.docs == []  # nothing applied
    _apply(w.state_dir, {"c_web": WEB})
    w.tick()  # after an apply: each set once (the unit is not running: emptied)
    flush = {"flush": {"set": {"family": "inet", "table": "outguard", "name": "c_web"}}}
    assert kernel.docs == [[flush]]
    w.tick()
    assert len(kernel.docs) == 1  # nothing changed: nothing written
    (root / WEB).mkdir(parents=True)  # the unit starts
    w.tick()
    add = {"add": {"element": {"family": "inet", "table": "outguard", "name": "c_web",
                               "elem": [f"unified/{WEB}"]}}}
    assert kernel.docs[-1] == [flush, add]
    (root / WEB).rmdir()  # it restarts: a new directory, a new id
    (root / "other").mkdir()  # (the old inode is not reused at once)
    (root / WEB).mkdir()
    w.tick()
    assert kernel.docs[-1] == [flush, add] and len(kernel.docs) == 3
    _apply(w.state_dir, {"c_web": WEB}, 2)  # a new apply filled it: written once again
    w.tick()
    w.tick()
    assert len(kernel.docs) == 4


def test_a_refused_write_is_tried_again_and_warned_once(
        watch: tuple[CgroupWatch, Recorder, Path], caplog: pytest.LogCaptureFixture) -> None:
    w, kernel, _root = watch
    _apply(w.state_dir, {"c_web": WEB})
    kernel.refuse = True
    with caplog.at_level(logging.WARNING, "outguard.monitor"):
        w.tick()
        w.tick()
    assert len([r for r in caplog.records if "c_web not refilled" in r.message]) == 1
    kernel.refuse = False
    w.tick()
    assert len(kernel.docs) == 1
