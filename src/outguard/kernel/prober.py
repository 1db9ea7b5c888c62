"""`outguard verify`'s probes on the wire: a TCP connect or a UDP datagram, as root or as another
user, and the guard table that keeps a probe the policy denies on the host.

Place in the data flow: the I/O under `apply.verify`, which chooses the probes and judges them
(`ruleset.probes`). A probe as another uid runs in a child process that runs as that user (its
socket's owner is what `meta skuid` matches), with the probe's code passed inline, so it needs
nothing of outguard's files to be readable by that user.

The guard: while verify runs, a table `inet outguard_verify` drops the new connections to the
destinations the policy denies, in an output chain that runs after outguard's (priority 100), and
counts them. A probe outguard should drop but lets out is held there (and counted: "let out"),
so verify never sends anything the policy denies off the host.

Results: connected, refused (a RST / ICMP port unreachable), reply (a UDP answer), sent (a UDP
datagram left, no answer), timeout (no answer to a SYN), eperm (dropped in this host's output
path), noroute, err:<ERRNO>.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from outguard.errors import KernelError
from outguard.kernel import counters as kc
from outguard.ruleset.keys import PROBE_MARK

GUARD = ("inet", "outguard_verify")
_GUARD_COUNTER = "held"


def probe(dst: str, port: int, proto: str, timeout: float, mark: int = 0) -> str:
    """One probe from this process. Only the standard library, imported here: the same code
    runs in the child of `probe_as`. `mark`: the socket mark (`keys.PROBE_MARK`), so that the
    probe is counted and not logged as an incident; a process without CAP_NET_ADMIN (a probe
    as another user) cannot set it, and its probe is logged like any packet."""
    import errno  # noqa: PLC0415
    import selectors  # noqa: PLC0415
    import socket  # noqa: PLC0415

    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    names = {errno.ECONNREFUSED: "refused", errno.EPERM: "eperm",
             errno.ENETUNREACH: "noroute", errno.EHOSTUNREACH: "noroute"}
    with socket.socket(family, kind) as s, selectors.DefaultSelector() as sel:
        s.setblocking(False)
        if mark:
            try:  # noqa: SIM105 (this source also runs alone in the child: no more imports)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            except PermissionError:
                pass
        try:
            if proto == "tcp":
                code = s.connect_ex((dst, port))
                if code not in (0, errno.EINPROGRESS):
                    return names.get(code, f"err:{errno.errorcode.get(code, code)}")
                sel.register(s, selectors.EVENT_WRITE)
                if not sel.select(timeout):
                    return "timeout"
                code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                return "connected" if code == 0 else \
                    names.get(code, f"err:{errno.errorcode.get(code, code)}")
            s.connect((dst, port))
            s.send(b"outguard verify probe\n")
            sel.register(s, selectors.EVENT_READ)
            if not sel.select(timeout):
                return "sent"
            s.recv(512)
            return "reply"
        except OSError as exc:
            code = exc.errno or 0
            return names.get(code, f"err:{errno.errorcode.get(code, code)}")


_CHILD = inspect.getsource(probe) + """
import json, os, sys
_args = json.loads(sys.stdin.read())
print(json.dumps({"uid": os.getuid(), "result": probe(*_args)}))
"""


def probe_as(uid: int, gid: int, dst: str, port: int, proto: str, timeout: float) -> str:
    """One probe from a child process running as `uid`:`gid` (no supplementary groups)."""
    if uid == 0 and gid == 0:
        return probe(dst, port, proto, timeout, PROBE_MARK)
    # the system's interpreter: outguard's own may sit where that user cannot reach it
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    try:
        proc = subprocess.run([python, "-I", "-S", "-c", _CHILD],
                              input=json.dumps([dst, port, proto, timeout, PROBE_MARK]),
                              capture_output=True, text=True, timeout=timeout + 20, check=False,
                              user=uid, group=gid, extra_groups=[])
    except (OSError, subprocess.SubprocessError) as exc:
        raise KernelError(f"could not start the probe as uid {uid}: {exc}") from exc
    if proc.returncode != 0:
        raise KernelError(f"the probe as uid {uid} failed: {proc.stderr.strip()[-300:]}")
    out = json.loads(proc.stdout)
    if out.get("uid") != uid:
        raise KernelError(f"the probe ran as uid {out.get('uid')}, not {uid}")
    return str(out["result"])


def _guard_rule(dst: str, port: int, proto: str) -> dict[str, Any]:
    ip = "ip6" if ":" in dst else "ip"
    return {"add": {"rule": {"family": GUARD[0], "table": GUARD[1], "chain": "output", "expr": [
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["new"]}},
        {"match": {"op": "==", "left": {"payload": {"protocol": ip, "field": "daddr"}},
                   "right": dst}},
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}},
                   "right": port}},
        {"counter": _GUARD_COUNTER}, {"drop": None}]}}}


class Guard:
    """The guard table for the probes that must be dropped (`with Guard(nft, targets):`);
    `held()` is how many packets it has dropped so far."""

    def __init__(self, nft: Any, targets: Sequence[tuple[str, int, str]]) -> None:
        self.nft, self.targets = nft, list(dict.fromkeys(targets))

    def _doc(self, cmds: list[dict[str, Any]]) -> dict[str, Any]:
        return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *cmds]}

    def __enter__(self) -> Guard:
        table = {"table": {"family": GUARD[0], "name": GUARD[1]}}
        self.nft.run_json(self._doc([
            {"add": table}, {"delete": table}, {"add": table},
            {"add": {"counter": {"family": GUARD[0], "table": GUARD[1], "name": _GUARD_COUNTER}}},
            {"add": {"chain": {"family": GUARD[0], "table": GUARD[1], "name": "output",
                               "type": "filter", "hook": "output", "prio": 100,
                               "policy": "accept"}}},
            *(_guard_rule(*t) for t in self.targets)]))
        return self

    def held(self) -> int:
        return kc.read_counters(*GUARD).get(_GUARD_COUNTER, (0, 0))[0]

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        table = {"table": {"family": GUARD[0], "name": GUARD[1]}}
        self.nft.run_json(self._doc([{"add": table}, {"delete": table}]))
