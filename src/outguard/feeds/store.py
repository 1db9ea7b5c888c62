"""Feed state on disk: the last good copy of each feed, its fetch record, and the kernel record.

    <state-dir>/feeds/<name>/good.bin     canonical content, validated, in compact binary form
                                          (`FeedSet.to_bytes`: 4 bytes an IPv4 entry, read back
                                          in tens of ms; text would cost a second per million)
    <state-dir>/feeds/<name>/meta.json    fetch record: digest, count, ETag, Last-Modified,
                                          times, consecutive failures, last error
    <state-dir>/feeds/<name>/kernel.json  set digest → content digest: which content a kernel
                                          set named after digest S holds now (a sync changes a
                                          set's content in place, without renaming it)

Place in the data flow: fetch/validate write a copy only when it is accepted, so the copy is
always the last GOOD one; `outguard apply` and the sync read it. Folders are 0700, files 0600,
written by rename (`state.write_private`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from outguard.errors import StateError
from outguard.feeds.merge import FeedSet
from outguard.state import write_private

COPY, OLD_COPY = "good.bin", "good.txt"


@dataclass
class FeedMeta:
    digest: str = ""  # of the good copy
    count: int = 0
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: float = 0.0  # last successful download (200 or 304)
    attempted_at: float = 0.0  # last attempt, successful or not
    failures: int = 0  # consecutive failed or refused attempts
    last_error: str | None = None
    source: str = ""
    bad_lines: int = 0
    removed: int = 0
    # the never-block list the copy was stripped with: when the policy's is the same, the copy
    # goes to the kernel as it is (no second strip of a million entries)
    nb_digest: str = ""
    kinds: dict[str, int] = field(default_factory=dict)  # elements per kernel set: 4a, 4n, 6a, 6n
    refused_at: float = 0.0  # the last update validation refused (kept after later successes)
    refusal: str | None = None  # its reason: error-page, unreadable, too-wide, coverage, ...
    refused_digest: str = ""  # sha256 of the body refused last, while the refusals last
    extra: dict[str, Any] = field(default_factory=dict)


_META_FIELDS = frozenset(f.name for f in fields(FeedMeta))


class FeedStore:
    def __init__(self, root: Path, *, read_only: bool = False) -> None:
        # read_only: a policy loaded by a command that must not write state (check, explain,
        # compile, plan) keeps no copy of a `file:` feed
        self.root, self.read_only = root, read_only

    def dir(self, name: str) -> Path:
        return self.root / name

    def ensure(self, name: str) -> Path:
        """The feed's folder, made if missing; it and `feeds/` are 0700 (also when an older
        outguard made them 0755: `mkdir(parents=True)` gave the parents the umask's mode)."""
        folder = self.dir(name)
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            for made in (self.root, folder):
                if made.stat().st_mode & 0o777 != 0o700:
                    os.chmod(made, 0o700)
        except OSError as exc:
            raise StateError(f"cannot create {folder}: {exc.strerror}") from exc
        return folder

    # fetch record ----------------------------------------------------------------------------

    def meta(self, name: str) -> FeedMeta:
        path = self.dir(name) / "meta.json"
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            # keys a newer outguard added are ignored: going back a version still reads it
            return FeedMeta(**{k: v for k, v in data.items() if k in _META_FIELDS})
        except FileNotFoundError:
            return FeedMeta()
        except (OSError, ValueError, TypeError) as exc:
            raise StateError(f"feed record of {name} ({path}) is unreadable: {exc}") from exc

    def _write(self, name: str, file: str, data: str | bytes) -> None:
        """Atomically, 0600; a full disk or a read-only state dir is a StateError naming it."""
        path = self.ensure(name) / file
        try:
            write_private(path, data)
        except OSError as exc:
            raise StateError(f"cannot write {path}: {exc.strerror}") from exc

    def write_meta(self, name: str, meta: FeedMeta) -> None:
        self._write(name, "meta.json", json.dumps(asdict(meta), indent=1))

    # last good copy --------------------------------------------------------------------------

    def has_copy(self, name: str) -> bool:
        return (self.dir(name) / COPY).exists() or (self.dir(name) / OLD_COPY).exists()

    def copy_path(self, name: str) -> Path:
        if (self.dir(name) / OLD_COPY).exists() and not (self.dir(name) / COPY).exists():
            return self.dir(name) / OLD_COPY
        return self.dir(name) / COPY

    def write_copy(self, name: str, content: FeedSet) -> str:
        data = content.to_bytes()
        self._write(name, COPY, data)
        (self.dir(name) / OLD_COPY).unlink(missing_ok=True)
        return hashlib.sha256(data).hexdigest()

    def read_copy(self, name: str) -> FeedSet:
        path = self.copy_path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return FeedSet()
        except OSError as exc:
            raise StateError(f"last good copy of feed {name} is unreadable: {exc}") from exc
        if path.name == OLD_COPY:
            return read_canonical(data.decode())
        try:
            return FeedSet.from_bytes(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateError(f"last good copy of feed {name} ({path}) is damaged: {exc}") from exc

    # kernel record ---------------------------------------------------------------------------

    def kernel_record(self, name: str) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads((self.dir(name) / "kernel.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def write_kernel_record(self, name: str, record: dict[str, str]) -> None:
        self._write(name, "kernel.json", json.dumps(record))


def read_canonical(text: str) -> FeedSet:
    """Read back a copy in the text form older versions wrote (`FeedSet.lines`)."""
    a4: list[int] = []
    ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    a6: list[int] = []
    domains: list[str] = []
    pton, af4, af6 = socket.inet_pton, socket.AF_INET, socket.AF_INET6
    from_bytes = int.from_bytes
    for line in text.splitlines():
        if not line:
            continue
        try:
            a4.append(from_bytes(pton(af4, line), "big"))
            continue
        except OSError:
            pass
        version, af, bits = (6, af6, 128) if ":" in line else (4, af4, 32)
        try:
            if "/" in line:
                addr, length = line.split("/")
                first = from_bytes(pton(af, addr), "big")
                ranges[version].append((first, first | ((1 << (bits - int(length))) - 1)))
            elif version == 6 and "-" not in line:
                a6.append(from_bytes(pton(af6, line), "big"))
            else:
                a, b = line.split("-")
                ranges[version].append((from_bytes(pton(af, a), "big"), from_bytes(pton(af, b), "big")))
        except (OSError, ValueError):  # not an address form: a host name
            domains.append(line)
    return FeedSet(a4, ranges[4], a6, ranges[6], domains)
