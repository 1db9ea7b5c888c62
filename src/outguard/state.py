"""The state directory: what outguard applied, what it replaced, and a pending confirmation.

outguard never reads big sets back from the kernel (`nft list` of a million-element set costs
tens of seconds), so this directory is the record of the kernel's `inet outguard` table:

    applied/          the current snapshot: state.json, policy.yaml, ruleset.json
    previous/         the snapshot it replaced (what `rollback` restores)
    sets/<name>.json  elements of list sets, content-addressed (the name carries the digest)
    sets/<name>.bin   elements of feed sets, as packed integers (a feed set is synced in place,
                      so this is what the kernel holds now; JSON text would cost a second a
                      million to write and to read back)
    pending.json      an apply waiting for `outguard confirm`
    rollback.json     the last rollback: when, by whom (the watchdog, by hand, a stale
                      confirmation settled), from which policy to which
    lockdown.json     the lockdown `outguard lockdown` put in (its end, the rules it keeps):
                      every apply compiles it in until it ends
    lock              serialises apply, rollback, confirm and restore

Every file is 0600 and the directory 0700; writes go to a temporary file and are renamed.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from outguard.errors import StateError
from outguard.nftables.model import int_elements
from outguard.ruleset.intervals import pack_ints, unpack_ints

DEFAULT_DIR = Path("/var/lib/outguard")
BULK_MAGIC = "outguard-set/1"


def default_dir(netns: str | None) -> Path:
    return DEFAULT_DIR / "netns" / netns if netns else DEFAULT_DIR


def _known_fields(fields: dict[str, Any], meta: object) -> dict[str, Any]:
    """A state file's keys that this version knows: keys a newer outguard added are ignored, so
    going back a version still reads (and can roll back) what the newer one applied. TypeError
    if it is not an object (a missing field is one too, from the constructor)."""
    if not isinstance(meta, dict):
        raise TypeError(f"expected an object, got {type(meta).__name__}")
    return {k: v for k, v in meta.items() if k in fields}


@dataclass
class Snapshot:
    policy_hash: str
    applied_at: str
    mode: str
    source: str
    inventory: dict[str, Any]  # nft_tx.Inventory.to_json()
    counters: dict[str, str]  # decision key ("allow:web") → kernel counter name ("allow.web")
    lists: dict[str, list[str]] = field(default_factory=dict)  # list digest → set kinds
    warnings: list[str] = field(default_factory=list)
    snapshot_id: str = ""  # unique per apply: tells whether an apply got as far as its state write
    set_sizes: dict[str, int] = field(default_factory=dict)  # list sets declared with their size
    capacities: dict[str, int] = field(default_factory=dict)  # feed hash sets: declared size
    # [namespace identity, ruleset generation] right after this apply committed, when no one
    # else committed during it (`Kernel.generation`): while the kernel still reports it, our
    # chains hold exactly what `inventory` recorded
    generation: list[Any] | None = None
    # chain → digest of the rules the kernel held right after this apply committed (read back
    # by netlink, `Kernel.rules`): what `status` compares the kernel with to find drift
    rule_digests: dict[str, str] | None = None
    # set when this is outguard's fail-closed table, not the policy: why the policy could not
    # be applied
    fallback: str | None = None
    # the policy's `dns.listen` ("addr:port"), None without `dns:`: its names need the agent
    dns_listen: str | None = None
    # rule key ("allow:web") → when its `expires:` takes it out (ISO 8601, UTC)
    expires: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, meta: object) -> Snapshot:
        return cls(**_known_fields(cls.__dataclass_fields__, meta))


@dataclass
class Pending:
    token: str
    deadline: float
    watchdog_pid: int
    policy_hash: str
    # snapshot_id of what was applied when this apply began ("" = nothing; "?" = not recorded,
    # a file from an older outguard). While `applied` still has this id, the unconfirmed apply
    # never recorded its state (it died), and a rollback restores `applied`, not `previous`.
    base: str = "?"


def write_private(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, raw) if len(raw) < 1 << 20 else _write_all(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_all(fd: int, raw: bytes) -> None:
    view = memoryview(raw)
    while view:
        view = view[os.write(fd, view):]


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        # a `write` replaces the applied snapshot in place, keeping `previous`: the re-apply
        # of `outguard lockdown` (the same policy) must not push the policy before it out of
        # `rollback`'s reach
        self.keep_previous = False

    def ensure(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.path, 0o700)
            (self.path / "sets").mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.path}: {exc.strerror}") from exc

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.ensure()
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # snapshots -------------------------------------------------------------------------------

    def read(self, which: str = "applied") -> tuple[Snapshot, list[dict[str, Any]]] | None:
        """A snapshot and its full-replace commands (list elements still external), or None."""
        folder = self.path / which
        try:
            snap = Snapshot.of(json.loads((folder / "state.json").read_text(encoding="utf-8")))
            cmds = json.loads((folder / "ruleset.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise StateError(f"state in {folder} is unreadable: {exc}") from exc
        return snap, cmds

    def policy_text(self, which: str = "applied") -> str | None:
        try:
            return (self.path / which / "policy.yaml").read_text()
        except FileNotFoundError:
            return None

    def snapshot(self, which: str = "applied") -> Snapshot | None:
        """Only the snapshot's description, without reading its (large) commands."""
        folder = self.path / which
        try:
            return Snapshot.of(json.loads((folder / "state.json").read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise StateError(f"state in {folder} is unreadable: {exc}") from exc

    def write(self, snap: Snapshot, policy_text: str, cmds: bytes) -> None:
        """Make `snap` the applied snapshot; the old one becomes `previous`. `cmds`: its
        full-replace commands, serialised as JSON."""
        applied, previous = self.path / "applied", self.path / "previous"
        staging = self.path / ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        # orjson takes the dataclass as it is: `asdict` deep-copied the inventory first (7 ms
        # for a 1,000-rule policy)
        write_private(staging / "state.json", orjson.dumps(snap, option=orjson.OPT_INDENT_2))
        write_private(staging / "policy.yaml", policy_text)
        write_private(staging / "ruleset.json", cmds)
        if applied.exists() and self.keep_previous:
            old = self.path / ".replaced"
            shutil.rmtree(old, ignore_errors=True)
            applied.rename(old)
            staging.rename(applied)
            shutil.rmtree(old, ignore_errors=True)
            self._collect_sets()
            return
        if applied.exists():
            shutil.rmtree(previous, ignore_errors=True)
            applied.rename(previous)
        staging.rename(applied)
        self._collect_sets()

    def restore_previous(self, inventory: dict[str, Any] | None = None) -> None:
        """After a rollback: `previous` becomes `applied` again; with `inventory`, what the
        rollback left in the kernel is recorded as its inventory (`set_inventory`)."""
        applied, previous = self.path / "applied", self.path / "previous"
        if inventory is not None and previous.exists():
            self._record_inventory(previous, inventory)  # before: a failed write loses nothing
        shutil.rmtree(applied, ignore_errors=True)
        if previous.exists():
            previous.rename(applied)
        self._collect_sets()

    def set_inventory(self, inventory: dict[str, Any]) -> None:
        """Record that the kernel holds `inventory` for the applied snapshot (after a rollback:
        exactly the snapshot's objects, plus what a refused cleanup left over, outguard's to
        delete next time). The recorded generation goes: the chains are refilled next time."""
        self._record_inventory(self.path / "applied", inventory)
        self._collect_sets()

    @staticmethod
    def _record_inventory(folder: Path, inventory: dict[str, Any]) -> None:
        path = folder / "state.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            meta["inventory"], meta["generation"], meta["rule_digests"] = inventory, None, None
            write_private(path, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        except (OSError, ValueError, TypeError) as exc:
            raise StateError(f"state in {path.parent} is unreadable: {exc}") from exc

    def clear(self) -> None:
        for name in ("applied", "previous"):
            shutil.rmtree(self.path / name, ignore_errors=True)
        self._collect_sets()

    # list set elements -----------------------------------------------------------------------

    def has_set(self, name: str) -> bool:
        return (self.path / "sets" / f"{name}.json").exists() or self.has_bulk(name)

    def has_bulk(self, name: str) -> bool:
        return (self.path / "sets" / f"{name}.bin").exists()

    def store_bulk(self, name: str, version: int, interval: bool,
                   items: Sequence[int] | Sequence[tuple[int, int]]) -> None:
        flat: Sequence[int] = [x for r in items for x in r] if interval else items  # type: ignore[union-attr,assignment]
        self.store_packed(name, version, interval, len(items), pack_ints(flat, version))

    def store_packed(self, name: str, version: int, interval: bool, count: int,
                     packed: bytes) -> None:
        """`count` elements already packed as `ruleset.intervals.pack_ints` packs them."""
        head = f"{BULK_MAGIC} {version} {'n' if interval else 'a'} {count}\n".encode()
        write_private(self.path / "sets" / f"{name}.bin", head + packed)

    def load_packed(self, name: str) -> tuple[int, bool, int, bytes]:
        """(version, interval, element count, packed big-endian values) of a feed set."""
        path = self.path / "sets" / f"{name}.bin"
        try:
            data = path.read_bytes()
            end = data.index(b"\n")
            magic, version_text, kind, count_text = data[:end].decode().split()
            if magic != BULK_MAGIC or kind not in ("a", "n") or version_text not in ("4", "6"):
                raise ValueError("not a stored set")
            version, count = int(version_text), int(count_text)
            packed = data[end + 1:]
            want = count * (2 if kind == "n" else 1) * (4 if version == 4 else 16)
            if len(packed) != want:
                raise ValueError(f"{len(packed)} bytes for {count} elements")
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise StateError(f"stored elements of set {name} are missing or damaged: {exc}") from exc
        return version, kind == "n", count, packed

    def load_bulk(self, name: str) -> tuple[int, bool, list[int] | list[tuple[int, int]]]:
        """(version, interval, addresses or closed ranges) of a feed set."""
        version, interval, _count, packed = self.load_packed(name)
        flat = unpack_ints(packed, version)
        if interval:
            return version, True, list(zip(flat[0::2], flat[1::2], strict=True))
        return version, False, flat

    def store_set(self, name: str, elements: list[Any]) -> None:
        write_private(self.path / "sets" / f"{name}.json", json.dumps(elements))

    def load_set(self, name: str) -> list[Any]:
        """A set's elements as nftables JSON."""
        if self.has_bulk(name):
            version, interval, items = self.load_bulk(name)
            return int_elements(items, version, interval)
        try:
            data: list[Any] = json.loads((self.path / "sets" / f"{name}.json").read_text())
        except (OSError, ValueError) as exc:
            raise StateError(f"stored elements of set {name} are missing: {exc}") from exc
        return data

    def _collect_sets(self) -> None:
        keep: set[str] = set()
        for which in ("applied", "previous"):
            got = self.snapshot(which)
            if got is not None:
                keep.update(got.inventory.get("sets", []))
        for file in (self.path / "sets").glob("*.*"):
            if file.suffix in (".json", ".bin") and file.stem not in keep:
                file.unlink(missing_ok=True)

    # pending confirmation --------------------------------------------------------------------

    def pending(self) -> Pending | None:
        try:
            meta = json.loads((self.path / "pending.json").read_text())
            return Pending(**_known_fields(Pending.__dataclass_fields__, meta))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise StateError(f"pending confirmation file is unreadable: {exc}") from exc

    def set_pending(self, pending: Pending) -> None:
        write_private(self.path / "pending.json", json.dumps(asdict(pending)))

    def clear_pending(self) -> None:
        (self.path / "pending.json").unlink(missing_ok=True)

    def quarantine_pending(self) -> Path:
        """Move a pending file that cannot be read out of the way (kept for a person to look
        at); returns where it went."""
        dest = self.path / f"pending.json.damaged-{int(time.time())}"
        os.replace(self.path / "pending.json", dest)
        return dest

    # the lockdown ------------------------------------------------------------------------

    def lockdown(self) -> dict[str, Any] | None:
        """The lockdown record as written (`nftables.nft_lockdown.Lockdown`), None without one."""
        try:
            data = json.loads((self.path / "lockdown.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateError(f"lockdown file is unreadable: {exc}") from exc
        if not isinstance(data, dict):
            raise StateError("lockdown file is unreadable: not a JSON object")
        return data

    def set_lockdown(self, data: dict[str, Any] | None) -> None:
        if data is None:
            (self.path / "lockdown.json").unlink(missing_ok=True)
        else:
            write_private(self.path / "lockdown.json", orjson.dumps(data))

    # what happened last, for `status` -------------------------------------------------------

    def record_rollback(self, event: dict[str, Any]) -> None:
        """A rollback (by the watchdog, by hand, or of a stale confirmation), kept for
        `status` to show while the policy it left is the applied one."""
        write_private(self.path / "rollback.json", orjson.dumps(event))

    def last_rollback(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.path / "rollback.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def record_commit(self, inventory: dict[str, Any], generation: list[Any] | None,
                      rule_digests: dict[str, str] | None) -> None:
        """After `restore` or `rollback` put the applied snapshot back: what the kernel holds
        now, the generation our commit left and the rules it read back (see `Snapshot`)."""
        path = self.path / "applied" / "state.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            meta.update(inventory=inventory, generation=generation, rule_digests=rule_digests)
            write_private(path, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise StateError(f"state in {path.parent} is unreadable: {exc}") from exc
        self._collect_sets()
