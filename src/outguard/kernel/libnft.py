"""libnftables in-process, through a hand-written ctypes binding.

Place in the data flow: the nftables backend compiles a policy to an nftables JSON document;
this module hands that document to libnftables (``libnftables.so.1``), which turns it into one
netlink batch, i.e. one kernel transaction: all of it is committed or none of it. The DNS
resolver and the feed sync use the same path for hot set-element updates.

Cost, measured on our test machine (nftables 1.0.6, kernel 6.x, 2 vCPUs, 2,000 calls in a
private namespace): one small `Nft.run_json` (add one element to a set) takes ~160 µs from the
calling thread, of which ~110 µs is libnftables itself on the namespace thread (DESIGN says
~120 µs) and ~50 µs the hop to that thread and back; ~210 µs with a 1M-element set in the table.
Forking ``ip netns exec … nft`` per element costs ~4.3 ms. Put many elements in one document.

Why a hand-written binding: Debian's ``python3-nftables`` module lives in the system Python's
dist-packages, is built for Debian's interpreter and is not published on PyPI by the nftables
project, so it is not installable into our venv. The C API we need is small and stable since
libnftables 0.9 (symbol version ``LIBNFTABLES_1``).

Facts about libnftables 1.0.6 this module relies on (checked on the machine, see the tests):
- There is no ``nft_ctx_input_set_flags`` yet (1.0.7+). `nft_run_cmd_from_buffer` parses the
  buffer as JSON only when the *output* flag ``NFT_CTX_OUTPUT_JSON`` is set (without it a JSON
  document is a text-parser "syntax error"), and falls back to the text parser only when the
  buffer is not JSON at all; we always send ``json.dumps`` output, so JSON stays JSON.
- The output and error buffers are rewound by each read, and a command that prints nothing
  leaves an empty output buffer (not the previous command's text).
- A ``list`` command loads the whole ruleset as its cache first: with a 1M-element set in the
  table ``nft list counters`` takes ~13 s here (~22 s on other machines); in-process it also
  grows this process by ~600 MB that glibc does not give back, and slows the next writes
  (0.74 s, then 21 ms, against 0.2 ms before the ``list``). Read counters and table existence
  with `kernel.counters`; never `run_text("list ...")` in a long-lived process with big sets.
- An ``nft_ctx`` is not thread-safe, and its netlink socket and interface-name lookups belong to
  the namespace of the thread that calls it. So every libnftables call of one `Nft` runs on its
  own `NetnsThread`, and calls from all `Nft` objects are serialized process-wide (the library
  keeps some global state, e.g. GMP's allocator hooks set on every ``nft_ctx_new``).
"""

from __future__ import annotations

import ctypes
import json
import socket
import threading
from collections.abc import Collection, Mapping, Sequence
from types import TracebackType
from typing import Any

import orjson

from outguard.errors import KernelError
from outguard.kernel.counters import namespace_cookie, open_socket, ruleset_generation, table_objects
from outguard.kernel.netns import NetnsThread
from outguard.kernel.rules import rule_digests
from outguard.kernel.setsync import SetChange, SyncStats, apply_changes

LIBRARY = "libnftables.so.1"
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()
# libnftables calls from every Nft go through this lock (see the module docstring).
_call_lock = threading.Lock()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _load() -> ctypes.CDLL:
    """Load libnftables once and declare the prototypes we use (wrong ones would corrupt memory)."""
    global _lib  # noqa: PLW0603 - one library handle per process
    with _lib_lock:
        if _lib is not None:
            return _lib
        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError as exc:
            raise KernelError(
                f"cannot load {LIBRARY} (install the libnftables1 package): {exc}"
            ) from exc
        ctx, cstr, uint = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint
        protos: dict[str, tuple[list[Any], Any]] = {
            "nft_ctx_new": ([ctypes.c_uint32], ctx),
            "nft_ctx_free": ([ctx], None),
            "nft_ctx_buffer_output": ([ctx], ctypes.c_int),
            "nft_ctx_buffer_error": ([ctx], ctypes.c_int),
            "nft_ctx_get_output_buffer": ([ctx], cstr),
            "nft_ctx_get_error_buffer": ([ctx], cstr),
            "nft_ctx_output_get_flags": ([ctx], uint),
            "nft_ctx_output_set_flags": ([ctx, uint], None),
            "nft_ctx_get_dry_run": ([ctx], ctypes.c_bool),
            "nft_ctx_set_dry_run": ([ctx, ctypes.c_bool], None),
            "nft_run_cmd_from_buffer": ([ctx, cstr], ctypes.c_int),
        }
        for name, (argtypes, restype) in protos.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = restype
        _lib = lib
        return lib


class Nft:
    """One libnftables context, living in network namespace `netns` (None: the current one)."""

    def __init__(self, netns: str | None = None) -> None:
        self._lib = _load()
        self.netns = netns
        self._thread = NetnsThread(netns)
        self._ctx: int | None = None
        self._flags = 0  # nft_ctx_new starts with no output flags
        self._netlink: socket.socket | None = None  # for `generation`, opened on first use
        self._identity = ""  # the namespace's, found when `_netlink` is opened
        try:
            self._ctx = self._thread.call(self._new_ctx)
        except BaseException:
            self._thread.close()
            raise

    def _new_ctx(self) -> int:
        with _call_lock:
            ctx: int | None = self._lib.nft_ctx_new(NFT_CTX_DEFAULT)
            if not ctx:
                raise KernelError("nft_ctx_new failed (out of memory?)")
            # Without buffering libnftables prints to our stdout/stderr; with it we get the text.
            if self._lib.nft_ctx_buffer_output(ctx) or self._lib.nft_ctx_buffer_error(ctx):
                self._lib.nft_ctx_free(ctx)
                raise KernelError("libnftables could not set up its output buffers")
            return ctx

    def _where(self) -> str:
        return f" in network namespace {self.netns!r}" if self.netns else ""

    def _run(self, text: str | bytes, *, as_json: bool, dry_run: bool) -> str:
        """Run one command buffer on the namespace thread; return nft's output text."""
        ctx = self._ctx
        if ctx is None:
            raise KernelError("this libnftables context is closed")
        lib = self._lib

        flags = NFT_CTX_OUTPUT_JSON if as_json else 0

        def work() -> tuple[int, str, str]:
            with _call_lock:
                # Each ctypes call drops and retakes the GIL: set the mode only when it changes.
                if flags != self._flags:
                    lib.nft_ctx_output_set_flags(ctx, flags)
                    self._flags = flags
                if dry_run:
                    lib.nft_ctx_set_dry_run(ctx, True)
                try:
                    raw = text if isinstance(text, bytes) else text.encode()
                    rc: int = lib.nft_run_cmd_from_buffer(ctx, raw)
                finally:
                    if dry_run:
                        lib.nft_ctx_set_dry_run(ctx, False)
                # Both buffers are read on every call: reading rewinds them for the next command.
                out: bytes | None = lib.nft_ctx_get_output_buffer(ctx)
                err: bytes | None = lib.nft_ctx_get_error_buffer(ctx)
            return (
                rc,
                (out or b"").decode(errors="replace"),
                (err or b"").decode(errors="replace"),
            )

        rc, out, err = self._thread.call(work)
        if rc != 0:
            what = "check of" if dry_run else "running"
            detail = err.strip() or "no error text from libnftables"
            raise KernelError(f"nftables refused {what} a batch{self._where()}:\n{detail}")
        return out

    @staticmethod
    def _encode(doc: Mapping[str, Any]) -> bytes:
        # orjson: a 1,000-rule table is ~0.8 MB of JSON, 18 ms with `json`, 2 ms with orjson
        try:
            return orjson.dumps(doc)
        except (TypeError, ValueError) as exc:
            raise KernelError(f"nftables JSON document is not serializable: {exc}") from exc

    def run_json(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Run one ``{"nftables": [...]}`` document as one kernel transaction (like ``nft -j -f``).

        Returns nft's parsed JSON output (``{}`` when it printed nothing, as for add/delete).
        """
        out = self._run(self._encode(doc), as_json=True, dry_run=False)
        if not out.strip():
            return {}
        try:
            parsed = json.loads(out)
        except json.JSONDecodeError as exc:
            raise KernelError(f"libnftables printed JSON we cannot parse: {exc}") from exc
        if not isinstance(parsed, dict):
            raise KernelError(f"libnftables printed a JSON {type(parsed).__name__}, not an object")
        return parsed

    def run_text(self, cmd: str) -> str:
        """Run nft commands in nft's own syntax (e.g. ``list table inet outguard``)."""
        return self._run(cmd, as_json=False, dry_run=False)

    def fill_sets(self, changes: Sequence[SetChange]) -> SyncStats:
        """Add elements to sets of `inet outguard` over netlink (`setsync`: one transaction,
        no JSON, no cache), in this context's namespace."""
        return self._thread.call(apply_changes, changes)

    def generation(self) -> tuple[str, int]:
        """(identity of this context's namespace, its ruleset generation). The generation
        (`counters.ruleset_generation`) starts again in a new namespace or after a reboot, so
        it is only comparable under the same identity: the boot id and the namespace's cookie
        ("" when the kernel cannot tell, which matches nothing). Read on a socket kept open
        until `close`: closing one right after a commit waits ~20 ms."""
        def read() -> tuple[str, int]:
            sock = self._socket()  # first: opening it finds the identity
            return self._identity, ruleset_generation(sock)
        return self._thread.call(read)

    def objects(self) -> tuple[list[str], list[str], list[str]] | None:
        """Names of the chains, sets and counters of `inet outguard` (None: no such table), by
        netlink (`counters.table_objects`: no set elements, no nft cache)."""
        return self._thread.call(lambda: table_objects(sock=self._socket()))

    def rules(self, chains: Collection[str] | None = None) -> dict[str, str]:
        """Chain → digest of its rules in `inet outguard` (`counters.rule_digests`: by
        netlink, no set elements), for the chains named, or all."""
        return self._thread.call(lambda: rule_digests(sock=self._socket(), chains=chains))

    def _socket(self) -> socket.socket:
        """The netlink socket reads use (on the namespace thread), opened on first use."""
        if self._ctx is None:
            raise KernelError("this libnftables context is closed")
        if self._netlink is None:
            self._netlink = open_socket()
            cookie, boot = namespace_cookie(self._netlink), _boot_id()
            self._identity = f"{boot}/{cookie}" if cookie is not None and boot else ""
        return self._netlink

    def check_json(self, doc: Mapping[str, Any]) -> None:
        """Validate a document like ``nft -c``: the kernel checks the batch, commits nothing."""
        self._run(self._encode(doc), as_json=True, dry_run=True)

    def close(self) -> None:
        """Free the context and stop its thread. Idempotent."""
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            lib = self._lib

            def free() -> None:
                sock, self._netlink = self._netlink, None
                if sock is not None:
                    sock.close()
                with _call_lock:
                    lib.nft_ctx_free(ctx)

            try:
                self._thread.call(free)
            finally:
                self._thread.close()

    def __enter__(self) -> Nft:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
