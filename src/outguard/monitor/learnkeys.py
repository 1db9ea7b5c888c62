"""The owners of the kernel's counting keys, and the counts that wait for one.

Place in the data flow: `monitor.learn` hands every "og:learn-key" message (a key's first flow,
attributed) to `Owners.own`, and at each flush the counts read from the counting sets
(`kernel.learnsets`) to `Owners.take`, which says whose flows they are. A key is what the
kernel can see of a flow (destination, protocol, port, uid); its owner the attributed packet
of its latest first message (`nftables.nft_learn.KEY_TIMEOUT` renews it while the key is used).

A count can be read before its key's message is handled (the message is still in the socket,
or was lost): it waits `ORPHAN_FLUSHES` flushes for an owner, then is given without one (the
learner records it with the uid alone). Bounded: at most `limit` owners (the oldest go) and as
many waiting keys (the oldest are given without an owner at once): never a count dropped.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from typing import Protocol

from outguard.events import Attribution, BlockedPacket

SetKey = tuple[str, str, int | None, int | None]  # destination, protocol, port, uid
ORPHAN_FLUSHES = 2
OWNERS_LIMIT = 4 * 65536  # the counting sets' keys (both versions), twice over
_PROTOS = {"tcp": "tcp", "udp": "udp"}  # the only ones the sets count


def set_key(pkt: BlockedPacket) -> SetKey:
    """The counting sets' key of a packet (`nftables.nft_learn`)."""
    return pkt.dst, _PROTOS.get(pkt.proto, "other"), pkt.dport, pkt.uid


def user_of(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None



def _running(att: Attribution) -> bool:
    """The attributed process still runs (its pid is alive with the same executable)."""
    if att.pid is None or att.exe is None:
        return False
    try:
        return os.readlink(f"/proc/{att.pid}/exe") == att.exe
    except OSError:
        return False


class CountLike(Protocol):
    @property
    def dst(self) -> str: ...
    @property
    def proto(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def flows(self) -> int: ...


Taken = tuple[SetKey, BlockedPacket | None, Attribution | None, int]


class Owners:
    def __init__(self, limit: int = OWNERS_LIMIT, wait: int = ORPHAN_FLUSHES) -> None:
        self.limit, self.wait = limit, wait
        self._owners: dict[SetKey, tuple[BlockedPacket, Attribution]] = {}
        self._waiting: dict[SetKey, list[int]] = {}  # key -> [flows, flushes waited]

    def own(self, key: SetKey, pkt: BlockedPacket, att: Attribution) -> None:
        """The latest first message of `key` makes its owner; one whose process was not found
        (its socket closed first: a flood of short connections) leaves a known owner that is
        still running in place — the same user to the same destination, most likely it."""
        known = self._owners.pop(key, None)
        if att.pid is None and known is not None and _running(known[1]):
            pkt, att = known
        self._owners[key] = (pkt, att)
        while len(self._owners) > self.limit:
            del self._owners[next(iter(self._owners))]

    def take(self, counts: Iterable[CountLike]) -> list[Taken]:
        """Counts with their owner (key, packet, attribution, flows); without one (None, None)
        those that waited long enough. The others wait for the next call."""
        for c in counts:
            self._waiting.setdefault((c.dst, c.proto, c.port, c.uid), [0, 0])[0] += c.flows
        out: list[Taken] = []
        for key, (flows, waited) in list(self._waiting.items()):
            owner = self._owners.get(key)
            if owner is not None:
                out.append((key, owner[0], owner[1], flows))
            elif waited >= self.wait or len(self._waiting) > self.limit:
                out.append((key, None, None, flows))
            else:
                self._waiting[key][1] += 1
                continue
            del self._waiting[key]
        return out

    def waiting(self) -> int:
        """Flows read from the kernel that wait for their owner."""
        return sum(flows for flows, _waited in self._waiting.values())

    def give_up(self) -> list[Taken]:
        """Every waiting count, with or without its owner (the learner stops)."""
        self.wait = 0
        return self.take(())
