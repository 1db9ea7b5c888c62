"""Where a cgroup v2 path is, in the form nft takes it, or None when it does not exist.

Place in the data flow: a rule with `for: {unit: X}` or `{cgroup: P}` matches `socket cgroupv2
level N @c_…`, a set apply fills with the cgroup (nftables.nft). nft takes a set element of
type cgroupsv2 only as a path, which it looks up under /sys/fs/cgroup when it builds the batch,
and puts the directory's inode — the 64-bit cgroup id the kernel matches — into the element. A
path that does not exist makes nft refuse the whole batch, so every path is checked here first
and only existing ones are handed to nft: a unit that is not running leaves its set empty.

Where the cgroup2 hierarchy is:
- mounted at /sys/fs/cgroup (a pure v2 host): the path itself;
- at /sys/fs/cgroup/unified (a hybrid host, DESIGN "Kernel facts"): `unified/<path>`;
- nowhere in this mount namespace: `ip netns exec` mounts a fresh /sys without the cgroup
  mounts. `cli.common` then opens the hierarchy's root before it re-executes the command and
  leaves the descriptor open (`CGROUP_FD_ENV`); nft reaches it as
  `/sys/fs/cgroup/../../../proc/self/fd/N/<path>` (libnftables runs in this process).
"""

from __future__ import annotations

import os
import stat

SYSFS_CGROUP = "/sys/fs/cgroup"  # where nft looks cgroupsv2 paths up (nftables' datatype.c)
CGROUP_FD_ENV = "OUTGUARD_CGROUP_FD"


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The mount point of the cgroup2 hierarchy's root in this mount namespace, or None."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    found = []
    for line in lines:
        head, sep, tail = line.partition(" - ")
        fields, fstype = head.split(), tail.split()[:1]
        if sep and fstype == ["cgroup2"] and len(fields) >= 5 and fields[3] == "/":
            found.append(_unescape(fields[4]))
    # prefer what nft sees: /sys/fs/cgroup itself (it hides anything mounted below it
    # earlier: cgroup2 mounted over a hybrid layout), then a mount below it; of equals, the
    # latest
    found.reverse()
    found.sort(key=lambda m: 0 if m == SYSFS_CGROUP else 1 if m.startswith(SYSFS_CGROUP + "/")
               else 2)
    return found[0] if found else None


def open_root() -> int | None:
    """An inheritable descriptor of the cgroup2 root (for a command about to re-execute itself
    in another mount namespace), or None when there is none here."""
    mount = cgroup2_mount()
    if mount is None:
        return None
    try:
        fd = os.open(mount, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return None
    os.set_inheritable(fd, True)
    return fd


class CgroupLookup:
    """Cgroup path (relative to the cgroup2 root, as policies name them) → what nft takes."""

    def __init__(self, mountinfo: str = "/proc/self/mountinfo",
                 fd: int | None = None) -> None:
        self.prefix: str | None = None  # nft's name of the cgroup2 root, "" when it is sysfs'
        self.root: str | None = None  # where this process reaches it
        mount = cgroup2_mount(mountinfo)
        if mount is not None and (mount == SYSFS_CGROUP or mount.startswith(SYSFS_CGROUP + "/")):
            self.root, self.prefix = mount, mount[len(SYSFS_CGROUP) + 1:]
            return
        if fd is None:
            inherited = os.environ.get(CGROUP_FD_ENV, "")
            fd = int(inherited) if inherited.isdigit() else None
        if fd is not None and os.path.isdir(f"/proc/self/fd/{fd}"):
            self.root = f"/proc/self/fd/{fd}"
            self.prefix = f"../../../proc/self/fd/{fd}"

    def _local(self, path: str) -> str | None:
        path = path.strip("/")
        if self.root is None or not path or ".." in path.split("/"):
            return None
        return path

    def __call__(self, path: str) -> str | None:
        local = self._local(path)
        if local is None or not os.path.isdir(os.path.join(str(self.root), local)):
            return None
        return f"{self.prefix}/{local}" if self.prefix else local

    def ident(self, path: str) -> int | None:
        """The cgroup's id as the kernel matches it (its directory's inode), or None when it
        does not exist: a unit that restarts gets a new cgroup, so a new id."""
        local = self._local(path)
        if local is None:
            return None
        try:
            info = os.stat(os.path.join(str(self.root), local))
        except OSError:
            return None
        return info.st_ino if stat.S_ISDIR(info.st_mode) else None
