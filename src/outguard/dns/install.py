"""Point a host (or one network namespace) at outguard's resolver, reversibly.

Three targets, chosen by what the host runs:
- systemd-resolved: a drop-in `/etc/systemd/resolved.conf.d/outguard.conf` (DNS=<listen>,
  Domains=~.) — resolved keeps serving 127.0.0.53 to programs and forwards to us (after
  `systemctl restart systemd-resolved`);
- a plain `/etc/resolv.conf`: saved to `resolv.conf.outguard-saved`, replaced by ours;
- a namespace (the lab, tests): `/etc/netns/NAME/resolv.conf`, which `ip netns exec NAME`
  bind-mounts over /etc/resolv.conf; an existing one is saved as
  `/etc/netns/NAME.resolv.conf.outguard-saved` (not inside NAME/: `ip netns exec` bind-mounts
  every file there over /etc).
`uninstall` undoes exactly what `install` did: it puts the saved file back ("restored"), or
removes ours when there was nothing before ("removed"; with the directory, if `install` made
it). Files are written to a temporary name and renamed, never through a symlink. The namespace
name and the address are checked before anything is written (no `../..`, no newline into
resolv.conf). The root directory is a parameter, so tests work in a temporary tree.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from outguard.errors import OutguardError

MARK = "# written by outguard dns install"
MADE_DIR = "# (and its directory)"
SAVED = "resolv.conf.outguard-saved"
_NETNS_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class InstallError(OutguardError):
    """The host's resolver configuration could not be changed."""


@dataclass(frozen=True)
class Installed:
    target: str  # "systemd-resolved" | "resolv.conf" | "netns"
    path: Path
    saved: Path | None = None  # where the file it replaced was put


@dataclass(frozen=True)
class Change:
    what: str  # "restored" | "removed"
    path: Path

    def __str__(self) -> str:
        return f"{self.what} {self.path}"


def check_netns(name: str) -> str:
    """`name` if it can name a namespace directory under /etc/netns; else InstallError."""
    if not _NETNS_RE.fullmatch(name) or set(name) == {"."}:
        raise InstallError(f"invalid network namespace name {name!r}: use 1-64 of A-Z a-z 0-9"
                           " _ . - (not only dots)")
    return name


def _address(addr: str) -> str:
    """The canonical text of a plain IP address (what resolv.conf may say); else InstallError."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise InstallError(f"{addr!r} is not an IP address") from None
    if "%" in addr or (isinstance(ip, ipaddress.IPv6Address) and ip.scope_id):
        raise InstallError(f"{addr!r}: an IPv6 scope id cannot go into resolv.conf")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        raise InstallError(f"{addr!r}: write the IPv4 address {ip.ipv4_mapped}")
    if ip.is_unspecified:
        raise InstallError(f"{addr!r}: the resolver listens on one address, not on every one")
    return str(ip)


def _resolv_text(addr: str, made_dir: bool = False) -> str:
    return f"{MARK}{' ' + MADE_DIR if made_dir else ''}\nnameserver {addr}\noptions edns0 trust-ad\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.outguard-tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)  # replaces a symlink itself, never what it points at


def _uses_resolved(root: Path) -> bool:
    resolv = root / "etc/resolv.conf"
    target = os.path.realpath(resolv) if resolv.is_symlink() else ""
    return "systemd/resolve" in target and (root / "run/systemd/resolve").is_dir()


def _ours(path: Path) -> bool:
    return not path.is_symlink() and path.is_file() and _read(path).startswith(MARK)


def _saved(path: Path) -> Path:
    """Where the file `install` replaced is kept: beside it, except in a namespace's directory,
    where `ip netns exec` would bind-mount it over /etc too (and warn on every command)."""
    if path.parent.parent.name == "netns":
        return path.parent.parent / f"{path.parent.name}.{SAVED}"
    return path.with_name(SAVED)


def _replace_file(path: Path, text: str) -> Path | None:
    """Write `text` at `path`, keeping what was there (not ours) as `_saved(path)`."""
    saved = _saved(path)
    if (path.exists() or path.is_symlink()) and not _ours(path):
        if saved.exists() or saved.is_symlink():
            raise InstallError(f"{path} is not outguard's, and {saved} exists already: move one"
                               " of them away first")
        os.replace(path, saved)  # a symlink is kept as a symlink
    _write(path, text)
    return saved if saved.exists() or saved.is_symlink() else None


def install(listen: tuple[str, int], *, root: Path = Path("/"), netns: str | None = None) -> Installed:
    addr, port = _address(listen[0]), listen[1]
    resolved = netns is None and _uses_resolved(root)
    if port != 53 and not resolved:
        raise InstallError(f"resolv.conf cannot name port {port}: listen on port 53, or use"
                           " systemd-resolved")
    try:
        if netns is not None:
            directory = root / "etc/netns" / check_netns(netns)
            made = not directory.exists()
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / "resolv.conf"
            if _ours(path):
                made = MADE_DIR in _read(path).splitlines()[0]
            saved = _replace_file(path, _resolv_text(addr, made))
            return Installed("netns", path, saved)
        if resolved:
            path = root / "etc/systemd/resolved.conf.d/outguard.conf"
            path.parent.mkdir(parents=True, exist_ok=True)
            host = f"[{addr}]" if ":" in addr else addr
            _write(path, f"{MARK}\n[Resolve]\nDNS={host}:{port}\nDomains=~.\nDNSStubListener=yes\n")
            return Installed("systemd-resolved", path)
        path = root / "etc/resolv.conf"
        saved = _replace_file(path, _resolv_text(addr))
        return Installed("resolv.conf", path, saved)
    except OSError as exc:
        raise InstallError(f"cannot point the resolver at outguard: {exc}") from exc


def _restore(path: Path) -> Change | None:
    """Put back what `_replace_file` saved beside `path`, or remove ours."""
    if not _ours(path):
        return None
    saved = _saved(path)
    if saved.exists() or saved.is_symlink():
        os.replace(saved, path)
        return Change("restored", path)
    path.unlink()
    return Change("removed", path)


def uninstall(*, root: Path = Path("/"), netns: str | None = None) -> list[Change]:
    """Undo `install`; what was changed (nothing when nothing was installed)."""
    changed: list[Change] = []
    try:
        if netns is not None:
            directory = root / "etc/netns" / check_netns(netns)
            path = directory / "resolv.conf"
            made = _ours(path) and MADE_DIR in _read(path).splitlines()[0]
            if (done := _restore(path)) is not None:
                changed.append(done)
                if made and done.what == "removed" and not any(directory.iterdir()):
                    directory.rmdir()
            return changed
        drop_in = root / "etc/systemd/resolved.conf.d/outguard.conf"
        if _ours(drop_in):
            drop_in.unlink()
            changed.append(Change("removed", drop_in))
        if (done := _restore(root / "etc/resolv.conf")) is not None:
            changed.append(done)
    except OSError as exc:
        raise InstallError(f"cannot restore the resolver configuration: {exc}") from exc
    return changed


def _read(path: Path) -> str:
    try:
        with path.open(errors="replace") as fh:
            return fh.read(4096)
    except OSError:
        return ""
