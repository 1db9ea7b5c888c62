"""Point a host (or one network namespace) at outguard's resolver, reversibly.

Three targets, chosen by what the host runs:
- systemd-resolved: a drop-in `/etc/systemd/resolved.conf.d/outguard.conf` (DNS=<listen>,
  Domains=~.) — resolved keeps serving 127.0.0.53 to programs and forwards to us;
- a plain `/etc/resolv.conf`: saved to `resolv.conf.outguard-saved`, replaced by ours;
- a namespace (the lab, tests): `/etc/netns/NAME/resolv.conf`, which `ip netns exec NAME`
  bind-mounts over /etc/resolv.conf.
`uninstall` undoes exactly what `install` did, recorded in a marker line. The root directory is a
parameter, so tests work in a temporary tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from outguard.errors import OutguardError

MARK = "# written by outguard dns install"
SAVED = "resolv.conf.outguard-saved"


class InstallError(OutguardError):
    """The host's resolver configuration could not be changed."""


@dataclass(frozen=True)
class Installed:
    target: str  # "systemd-resolved" | "resolv.conf" | "netns"
    path: Path


def _resolv_text(addr: str) -> str:
    return f"{MARK}\nnameserver {addr}\noptions edns0 trust-ad\n"


def _uses_resolved(root: Path) -> bool:
    resolv = root / "etc/resolv.conf"
    target = os.path.realpath(resolv) if resolv.is_symlink() else ""
    return "systemd/resolve" in target and (root / "run/systemd/resolve").is_dir()


def install(listen: tuple[str, int], *, root: Path = Path("/"), netns: str | None = None) -> Installed:
    addr, port = listen
    if port != 53 and netns is None and not _uses_resolved(root):
        raise InstallError(f"resolv.conf cannot name port {port}: listen on port 53, or use"
                           " systemd-resolved")
    try:
        if netns is not None:
            path = root / "etc/netns" / netns / "resolv.conf"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_resolv_text(addr))
            return Installed("netns", path)
        if _uses_resolved(root):
            path = root / "etc/systemd/resolved.conf.d/outguard.conf"
            path.parent.mkdir(parents=True, exist_ok=True)
            host = f"[{addr}]" if ":" in addr else addr
            path.write_text(f"{MARK}\n[Resolve]\nDNS={host}:{port}\nDomains=~.\nDNSStubListener=yes\n")
            return Installed("systemd-resolved", path)
        path = root / "etc/resolv.conf"
        saved = root / "etc" / SAVED
        if path.exists() and not saved.exists() and MARK not in _read(path):
            os.replace(path, saved)  # a symlink is kept as a symlink
        path.unlink(missing_ok=True)
        path.write_text(_resolv_text(addr))
        return Installed("resolv.conf", path)
    except OSError as exc:
        raise InstallError(f"cannot point the resolver at outguard: {exc}") from exc


def uninstall(*, root: Path = Path("/"), netns: str | None = None) -> list[Path]:
    """Undo `install`; returns what was changed (nothing when nothing was installed)."""
    changed = []
    try:
        if netns is not None:
            path = root / "etc/netns" / netns / "resolv.conf"
            if path.exists() and MARK in _read(path):
                path.unlink()
                changed.append(path)
            return changed
        drop_in = root / "etc/systemd/resolved.conf.d/outguard.conf"
        if drop_in.exists() and MARK in _read(drop_in):
            drop_in.unlink()
            changed.append(drop_in)
        path, saved = root / "etc/resolv.conf", root / "etc" / SAVED
        if path.exists() and not path.is_symlink() and MARK in _read(path):
            path.unlink()
            changed.append(path)
            if saved.exists() or saved.is_symlink():
                os.replace(saved, path)
    except OSError as exc:
        raise InstallError(f"cannot restore the resolver configuration: {exc}") from exc
    return changed


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
