"""Builds and removes the lab's network: namespaces, veth, addresses, routes, resolv.conf.

Place in the data flow: the thin I/O layer under `lifecycle`. It runs the argv lists from
`netcmds` inside the namespaces through `kernel.netns` and writes the server's resolver file
under ``/etc/netns/og-lab-server`` (bind-mounted over ``/etc/resolv.conf`` by
``ip netns exec``). It only ever touches the two lab namespaces and their ``/etc/netns`` dirs;
the host namespace's interfaces, routes and firewall are never changed.
"""

from __future__ import annotations

import errno
import shutil

from outguard.errors import KernelError, LabError
from outguard.kernel import netns
from outguard.lab import topology as t
from outguard.lab.netcmds import NsCommand, build_commands

COMMAND_TIMEOUT = 10.0


def run_command(cmd: NsCommand) -> None:
    try:
        netns.run(cmd.ns, list(cmd.argv), timeout=COMMAND_TIMEOUT)
    except KernelError as exc:
        raise LabError(f"building the lab network failed at {cmd}: {exc}") from exc


def build() -> None:
    """Create both namespaces and wire them; expects neither to exist."""
    for ns in t.NAMESPACES:
        if netns.exists(ns):
            raise LabError(f"network namespace {ns} already exists; run `outguard lab down`")
    try:
        for ns in t.NAMESPACES:
            netns.add(ns)
    except KernelError as exc:
        raise LabError(f"cannot create the lab namespaces: {exc}") from exc
    for cmd in build_commands():
        run_command(cmd)
    write_resolv_conf()


def write_resolv_conf() -> None:
    etc = t.netns_etc_dir(t.SERVER_NS)
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(t.RESOLV_CONF, encoding="ascii")


def remove_etc_dirs() -> None:
    for ns in t.NAMESPACES:
        shutil.rmtree(t.netns_etc_dir(ns), ignore_errors=True)
        # `outguard dns install --netns` keeps the lab's resolv.conf beside the dir: left
        # behind, the next lab's `dns install` refuses to save over it
        t.netns_saved_resolv_conf(ns).unlink(missing_ok=True)
    try:
        # Only if now empty: other namespaces' overlays (other tests) stay untouched.
        t.NETNS_ETC_DIR.rmdir()
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            raise LabError(f"cannot remove {t.NETNS_ETC_DIR}: {exc.strerror}") from exc


def teardown() -> list[str]:
    """Delete both namespaces (killing what still runs in them) and their /etc/netns dirs.

    Idempotent; returns the namespaces that existed.
    """
    removed: list[str] = []
    for ns in t.NAMESPACES:
        if netns.exists(ns):
            removed.append(ns)
        try:
            netns.delete(ns)
        except KernelError as exc:
            raise LabError(f"cannot remove network namespace {ns}: {exc}") from exc
    remove_etc_dirs()
    return removed
