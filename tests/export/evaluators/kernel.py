"""The kernel as the evaluator of the `iptables` and `ufw` exports: the export is loaded with the
real tools in the server namespace of the kernel tests' topology (tests/kernel/topology.py), and
every probe is a real packet: a TCP connect or UDP datagram as its uid (root in-process, other
uids in a child process under `setpriv`), or an ICMP echo request from a raw socket (root only:
ICMP probes of other uids are left out of kernel tables, `kernel_probes`).

What the socket saw becomes the verdict: answered → accept; EPERM / no answer → drop; EPERM and
then a local ICMP error → reject. A refused TCP connect under `default_action: reject` is either
the peer's RST or outguard's reset: it is read as what the exporter's own model (`fit`) says,
when that is accept or reject. The deciding rule is the model's (`decide` on what `fit` says
the target enforces) when the kernel agrees with the model, else unknown: so a difference the
model did not foresee is named only by `decide`'s own rule, and is caught when that is exact.

Used by the kernel tests (they have the `topology` fixture): tests/kernel/test_iptables_
backend.py and tests/kernel/test_ufw_backend.py.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from collections.abc import Sequence
from datetime import datetime

from outguard.ruleset.decide import decide
from outguard.ruleset.ir import Ruleset
from tests.export.evaluation import report_key
from tests.export.evaluators import Outcome, Probe, Verdict
from tests.kernel.topology import DROPPED, PASSED, Topology
from tests.kernel.topology import Probe as Packet

ICMP_TIMEOUT = 0.6


def kernel_probes(probes: Sequence[Probe]) -> list[Probe]:
    """The probes the kernel tests can send (no ICMP but as root)."""
    return [p for p in probes if p.proto != "icmp" or p.uid == 0]


def _echo(targets: list[str], timeout: float) -> list[str]:
    """ICMP echo to each address at once from this thread's namespace: reply, eperm (dropped in
    the output hook), rejected:icmp (eperm, then the local ICMP error of a reject), timeout."""
    socks: list[socket.socket] = []
    out = ["timeout"] * len(targets)
    try:
        for i, addr in enumerate(targets):
            v6 = ":" in addr
            s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                              socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
            s.setblocking(False)
            socks.append(s)
            body = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0x6f67, i) + b"outguard"
            if not v6:  # the kernel computes ICMPv6 checksums itself, not ICMPv4 ones
                total = sum(struct.unpack(f"!{len(body) // 2}H", body))
                total = (total >> 16) + (total & 0xFFFF)
                body = body[:2] + struct.pack("!H", ~(total + (total >> 16)) & 0xFFFF) + body[4:]
            try:
                s.sendto(body, (addr, 0))
            except OSError as exc:
                out[i] = "eperm" if exc.errno == errno.EPERM else f"err:{exc.errno}"
        deadline = time.monotonic() + timeout
        waiting = {s.fileno(): i for i, s in enumerate(socks) if out[i] in ("timeout", "eperm")}
        while waiting and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(waiting), [], [], left)
            for fd in ready:
                i = waiting[fd]
                got = _answer(socks[i].recv(2048), targets[i], i)
                if got == "reply" and out[i] == "timeout":
                    out[i] = "reply"
                    del waiting[fd]
                elif got == "error" and out[i] == "eperm":
                    out[i] = "rejected:icmp"
                    del waiting[fd]
        return out
    finally:
        for s in socks:
            s.close()


def _answer(data: bytes, target: str, seq: int) -> str | None:
    """"reply" for our echo reply, "error" for an ICMP error about a packet to `target`."""
    v6 = ":" in target
    icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
    if len(icmp) < 8:
        return None
    if icmp[0] == (129 if v6 else 0) and struct.unpack("!HH", icmp[4:8]) == (0x6f67, seq):
        return "reply"
    inner = icmp[8:]
    if v6 and icmp[0] == 1 and len(inner) >= 40:
        dst = socket.inet_ntop(socket.AF_INET6, inner[24:40])
    elif not v6 and icmp[0] == 3 and len(inner) >= 20:
        dst = socket.inet_ntop(socket.AF_INET, inner[16:20])
    else:
        return None
    return "error" if dst == target else None


def send(topo: Topology, probes: Sequence[Probe]) -> list[str]:
    """What each probe's socket saw (topology outcomes; ICMP: reply / eperm / timeout)."""
    topo.add_addresses(*{p.dst for p in probes})
    out = [""] * len(probes)
    l4 = [i for i, p in enumerate(probes) if p.proto != "icmp"]
    icmp = [i for i, p in enumerate(probes) if p.proto == "icmp"]
    assert all(probes[i].uid == 0 for i in icmp), "ICMP probes only as root (kernel_probes)"
    for i, got in zip(l4, topo.probe([Packet(probes[i].dst, probes[i].port or 0, probes[i].proto,
                                             probes[i].uid) for i in l4]), strict=True):
        out[i] = got
    if icmp:
        echoed = topo.thread.call(_echo, [probes[i].dst for i in icmp], ICMP_TIMEOUT)
        for i, got in zip(icmp, echoed, strict=True):
            out[i] = got
    return out


def outcomes(probes: Sequence[Probe], seen: Sequence[str], model: Ruleset,
             now: datetime) -> list[Outcome]:
    """The verdicts the kernel gave, with the deciding rule of `model` where they agree."""
    result = []
    for probe, got in zip(probes, seen, strict=True):
        expected = decide(model, probe.flow(), now)
        verdict: Verdict
        if got in DROPPED or got == "timeout":
            verdict = "drop"
        elif got.startswith("rejected:"):
            verdict = "reject"
        elif got in PASSED or got == "reply":
            ambiguous = probe.proto == "tcp" and got == "refused" and model.default_action == \
                "reject" and expected.verdict in ("accept", "reject")
            verdict = expected.verdict if ambiguous else "accept"
        else:
            raise AssertionError(f"{probe}: the topology is broken ({got})")
        rule = report_key(expected.rule) if expected.verdict == verdict else None
        result.append(Outcome(verdict, rule, got))
    return result
