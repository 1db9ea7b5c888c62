"""kernel.cgroups: finding the cgroup2 hierarchy in mountinfo, and what nft is given (pure
parts; tests/kernel/test_cgroup_rules.py runs real cgroups)."""

from __future__ import annotations

from pathlib import Path

from outguard.kernel.cgroups import CgroupLookup, cgroup2_mount

HYBRID = """\
31 25 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs ro,mode=755
32 31 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# cgroup2 mounted over the hybrid layout (what `unshare -m` + `mount -t cgroup2` makes)
OVER = HYBRID + "90 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 none rw\n"
# a bind mount of a subtree is no root of the hierarchy
SUBTREE = "50 25 0:38 /user.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"


def _info(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(text)
    return str(path)


def test_the_hierarchy_is_found_where_nft_looks(tmp_path: Path) -> None:
    assert cgroup2_mount(_info(tmp_path, HYBRID)) == "/sys/fs/cgroup/unified"
    assert cgroup2_mount(_info(tmp_path, OVER)) == "/sys/fs/cgroup"
    assert cgroup2_mount(_info(tmp_path, SUBTREE)) is None
    assert cgroup2_mount(str(tmp_path / "missing")) is None


def test_paths_for_nft_and_absent_cgroups(tmp_path: Path) -> None:
    lookup = CgroupLookup(_info(tmp_path, HYBRID))
    assert lookup.prefix == "unified"
    lookup.root = str(tmp_path)  # stand in for the mount
    (tmp_path / "system.slice" / "web.service").mkdir(parents=True)
    assert lookup("system.slice/web.service") == "unified/system.slice/web.service"
    assert lookup("/system.slice/web.service/") == "unified/system.slice/web.service"
    assert lookup("system.slice/db.service") is None
    assert lookup("system.slice/../../etc") is None


def test_an_inherited_descriptor_when_no_hierarchy_is_mounted(tmp_path: Path) -> None:
    import os

    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        (tmp_path / "a").mkdir()
        lookup = CgroupLookup(_info(tmp_path, "1 0 0:1 / / rw - ext4 /dev/root rw\n"), fd=fd)
        assert lookup("a") == f"../../../proc/self/fd/{fd}/a"
        assert lookup("b") is None
        assert CgroupLookup(_info(tmp_path, ""), fd=None)("a") is None
    finally:
        os.close(fd)
