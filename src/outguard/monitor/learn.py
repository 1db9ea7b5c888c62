"""Learning: every new outbound flow, attributed, named, aggregated and stored.

Place in the data flow (beside the monitor's agent, on the same loop):

    NFLOG "og:learn-key" (a key's first flow) ─► attribute ─► owner of the key ───────┐
    counting sets (kernel.learnsets, read and reset at each flush) ─► counts per key ─┤
    NFLOG "og:learn" (a flow no set took) ─► attribute ─► count 1 ────────────────────┤
                                        aggregate by LearnedFlow.key ◄────────────────┘
    NFLOG DNS answers (sport 53, in) ─► passivedns.NameCache ─────────────────────┐ flush
    the resolver's answers (`dns:`) ─► names_of ──────────────────────────────────┤ (names,
    the policy in force ─► decide; classifier ─► signature ───────────────────────┘ decision)
                                                                    ─► Store.record_flows

Why a dedicated NFLOG rule on `ct state new`, not conntrack NEW events over ctnetlink: conntrack
reports a connection only when its entry is confirmed, after the packet left the output path, so
a flow the policy drops is never reported, and learning must see flows "allowed or not"; NFLOG
also hands over the socket's uid and the exact 5-tuple the sock_diag lookup of the attribution
needs (`monitor.attribute`, reused as is), numbers every message (so a loss is counted, not
guessed: ctnetlink's ENOBUFS says only *that* events were lost) and sits next to named kernel
counters. Why the kernel counts (`nftables.nft_learn`): a message and a Python decode per flow
capped a flood of short connections at about half the rate the policy alone allows. The kernel
counts flows per key (destination . protocol . port . uid) in a set; only a key's first flow is
logged ("og:learn-key", no count: its process becomes the key's owner), and the counts read at
each flush go to the owner's flow. Counts of a key whose first message has not been handled yet
wait (`ORPHAN_FLUSHES`, i.e. two), then are recorded without a process ("uid:N"). What no set
takes (not TCP/UDP, no socket, a full set) is logged one by one ("og:learn", count 1). A second
process of the same user to the same destination and port within `KEY_TIMEOUT` of the key's last
message has its flows counted to the key's owner: the key carries no process.

The books:

    kernel learn.new == counted (set counts read) + learn.logged                (the kernel's)
    learn.logged + learn.keys == messages received + lost (gaps) + malformed   (the group's)
    counted + logged messages received == recorded + pending + dropped          (the learner's)

`Learner.handle` never awaits between packets (the socket behind a flow must still exist when
it is looked up); names and the decision are added when a flow is flushed (every
`flush_every` seconds), so a DNS answer that arrived in a later NFLOG batch than the connection
it announced still names it. Classification runs once per new key and flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from outguard.events import Attribution, BlockedPacket, Event, LearnedFlow, severity_rank
from outguard.kernel.nflog_payload import Payload
from outguard.monitor.agent import Attributor
from outguard.monitor.classify import Classifier
from outguard.monitor.learnkeys import CountLike, Owners, Taken, set_key, user_of
from outguard.monitor.passivedns import NameCache
from outguard.ruleset.keys import LEARN_KEY_PREFIX, LEARN_PREFIX
from outguard.store.base import Store, StoreError

log = logging.getLogger("outguard.learn")
Key = tuple[str | None, str | None, str | None, str | None, str, int | None, str]
_PROTOS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmp"}
# Signatures that say nothing about a learned flow: "a raw IP with no DNS answer" is what
# suggest turns into an address rule with a `# review:` comment, not a flow never to allow.
NOT_FOR_LEARNING = frozenset({"raw-ip-no-dns"})
FLOOD_BATCH, FLOOD_PAUSE = 64, 0.01  # packets in a batch that make a flood; seconds to wait


class FlowSource(Protocol):
    def __aiter__(self) -> AsyncIterator[list[BlockedPacket]]: ...


class AnswerSource(Protocol):
    def __aiter__(self) -> AsyncIterator[list[Payload]]: ...


# the counting sets' counts since the last call (`kernel.learnsets.read_counts`); called on a
# worker thread at each flush
ReadCounts = Callable[[], Sequence[CountLike]]
# the decisions of the policy in force for these flows ("" without a policy); called on a
# worker thread at each flush
Decide = Callable[[list[LearnedFlow]], list[str]]


@dataclass
class _Acc:
    """One key's sightings since the last flush."""

    pkt: BlockedPacket
    att: Attribution
    count: int
    first: datetime
    last: datetime


@dataclass
class LearnBooks:
    """Every new flow accounted for (see the module docstring)."""

    received: int = 0  # flows logged one by one ("og:learn") handed to the learner
    counted: int = 0  # flows counted by the kernel's sets, read
    keys: int = 0  # first messages of a counted key ("og:learn-key": no count)
    recorded: int = 0  # written to the store (sum of counts)
    pending: int = 0  # waiting for the next flush
    dropped: int = 0  # given up after the store failed too long
    unattributed: int = 0  # recorded without a process (the socket was gone)
    store_errors: int = 0
    lookups_saved: int = 0  # packets taken as closed with the younger socket of their group
    answers: int = 0  # DNS answers read (passive)
    source: dict[str, int] = field(default_factory=dict)  # the NFLOG group's own counts

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def flow_proto(proto: str) -> str:
    return _PROTOS.get(proto, "other")


def process_of(att: Attribution, uid: int | None) -> str | None:
    """The key's process: exe, else argv[0], else "uid:N" (unattributed), else None."""
    if att.exe:
        return att.exe
    if att.cmdline and att.cmdline[0]:
        return att.cmdline[0]
    return f"uid:{uid}" if uid is not None else None


class Learner:
    def __init__(self, flows: FlowSource, attributor: Attributor, store: Store, *,
                 answers: AnswerSource | None = None, names: NameCache | None = None,
                 resolver_names: Callable[[str], tuple[str, ...]] = lambda _dst: (),
                 classifier: Classifier | None = None, decide: Decide | None = None,
                 flush_every: float = 1.0, max_pending: int = 200_000,
                 clock: Callable[[], float] = time.time,
                 early: list[BlockedPacket] | None = None,
                 counts: ReadCounts | None = None) -> None:
        self.flows, self.answers, self.attributor, self.store = flows, answers, attributor, store
        self.names = names if names is not None else NameCache()
        self.resolver_names, self.classifier, self.decide = resolver_names, classifier, decide
        self.flush_every, self.max_pending, self.clock = flush_every, max_pending, clock
        self.books = LearnBooks()
        self._pending: dict[Key, _Acc] = {}
        self._retry: list[LearnedFlow] = []  # a batch the store refused, tried again
        self.running = asyncio.Event()
        self._early = early or []  # read before the run began: handled first
        self.counts, self.owners = counts, Owners()
        self._read: list[CountLike] = []  # read from the kernel, not yet taken

    # --- the per-packet path ------------------------------------------------------------

    async def _attribute(self, pkt: BlockedPacket) -> Attribution:
        got = self.attributor.attribute(pkt)
        if inspect.isawaitable(got):
            got = await got
        assert isinstance(got, Attribution)
        return got

    async def handle(self, batch: list[BlockedPacket]) -> None:
        """Attribute and aggregate one batch. Packets are grouped by (user, destination): the
        youngest of a group is looked up first, and when its socket is already closed, the
        older ones of the group (sent within the same few milliseconds) are taken as closed
        too, without a lookup each — a flood of short connections costs one lookup and one
        aggregation per group and batch, not per flow."""
        groups: dict[tuple[int | None, str, int | None, str], list[BlockedPacket]] = {}
        keyed = []
        for pkt in batch:
            if pkt.prefix == LEARN_PREFIX:  # else not the learn rules': no new flow
                groups.setdefault((pkt.uid, pkt.dst, pkt.dport, pkt.proto), []).append(pkt)
            elif pkt.prefix == LEARN_KEY_PREFIX:
                keyed.append(pkt)
        for pkt in keyed:  # a few per batch: one per key and KEY_TIMEOUT
            self.books.keys += 1
            self.owners.own(set_key(pkt), pkt, await self._attribute(pkt))
        found: list[tuple[BlockedPacket, Attribution, int, datetime]] = []
        for pkts in groups.values():  # every lookup first: the sockets are closing
            self.books.received += len(pkts)
            youngest = await self._attribute(pkts[-1])
            if youngest.failure_kind == "closed" and len(pkts) > 1:
                self.books.lookups_saved += len(pkts) - 1
                found.append((pkts[-1], youngest, len(pkts), min(p.time for p in pkts)))
                continue
            found.append((pkts[-1], youngest, 1, pkts[-1].time))
            for pkt in pkts[:-1]:
                found.append((pkt, await self._attribute(pkt), 1, pkt.time))
        for pkt, att, count, first in found:
            self._add(pkt, att, count, first)

    def _add(self, pkt: BlockedPacket, att: Attribution, count: int, first: datetime) -> None:
        proto = flow_proto(pkt.proto)
        uid = att.uid if att.uid is not None else pkt.uid
        key: Key = (process_of(att, uid), att.user, att.unit, att.container, pkt.dst,
                    pkt.dport if proto in ("tcp", "udp") else None, proto)
        acc = self._pending.get(key)
        if acc is None:
            self._pending[key] = _Acc(pkt, att, count, first, pkt.time)
            return
        acc.count += count
        acc.first, acc.last = min(acc.first, first), max(acc.last, pkt.time)
        if acc.att.pid is None and att.pid is not None:
            acc.pkt, acc.att = pkt, att  # a better example of the same key

    def _take_counts(self, taken: list[Taken]) -> None:
        now = datetime.fromtimestamp(self.clock(), UTC)
        for key, owner, owned, flows in taken:
            pkt, att = owner, owned
            if pkt is None or att is None:  # no first message: the uid is all there is
                dst, proto, port, uid = key
                pkt = BlockedPacket(now, LEARN_KEY_PREFIX, 6 if ":" in dst else 4, proto, "",
                                    dst, None, port, uid=uid)
                att = Attribution(uid=uid, user=user_of(uid), failure="no first message",
                                  failure_kind="unknown")
            self._add(replace(pkt, time=now), att, flows, min(pkt.time, now))

    def early_counts(self, counts: Sequence[CountLike]) -> None:
        """Counts read before the run began: taken at its first flush."""
        self._read.extend(counts)

    async def read_counts(self) -> None:
        """The kernel's counts since the last read, given to their keys' owners. Read on a
        worker thread into `_read` first: a flush cancelled meanwhile loses none."""
        if self.counts is not None:
            reader = self.counts
            try:
                await asyncio.to_thread(lambda: self._read.extend(reader()))
            except Exception as exc:  # the kernel keeps them: the next read has them
                log.warning("learn: the kernel's counts not read: %s", exc)
        got, self._read = self._read, []
        self.books.counted += sum(c.flows for c in got)
        self._take_counts(self.owners.take(got))

    def take_answers(self, batch: list[Payload]) -> None:
        self.names.take(batch, self.clock())
        self.books.answers = self.names.answers

    # --- flushing -----------------------------------------------------------------------

    def _names(self, dst: str, now: float) -> tuple[str, ...]:
        got = dict.fromkeys(self.names.names_of(dst, now))
        got.update(dict.fromkeys(self.resolver_names(dst)))
        return tuple(sorted(got))

    def _signature(self, acc: _Acc, names: tuple[str, ...],
                   decision: str) -> tuple[str | None, str | None]:
        """The worst signature of medium or more, seen as the policy in force sees the flow
        (its decision as the rule: a JVM reaching what the policy does not allow is a JNDI
        callback; the same JVM reaching its allowed API is not)."""
        if self.classifier is None:
            return None, None
        pkt = replace(acc.pkt, prefix=f"og:{decision}" if decision else LEARN_PREFIX)
        found = [c for c in self.classifier.classify(Event(pkt, acc.att, names=names))
                 if c.signature not in NOT_FOR_LEARNING]
        worst = found[0] if found else None
        if worst is None or severity_rank(worst.severity) < severity_rank("medium"):
            return None, None
        return worst.signature, worst.severity

    def _flows(self, taken: dict[Key, _Acc]) -> list[LearnedFlow]:
        now = self.clock()
        out = []
        for key, acc in taken.items():
            att = acc.att
            out.append(LearnedFlow(
                exe=key[0], cmdline=att.cmdline, user=key[1],
                uid=att.uid if att.uid is not None else acc.pkt.uid, unit=key[2],
                cgroup=att.cgroup, container=key[3], dst=key[4], port=key[5], proto=key[6],
                names=self._names(acc.pkt.dst, now), count=acc.count, first_seen=acc.first,
                last_seen=acc.last))
        return out

    async def _decisions(self, flows: list[LearnedFlow]) -> list[str]:
        if self.decide is None:
            return [""] * len(flows)
        try:
            return await asyncio.to_thread(self.decide, flows)
        except Exception as exc:  # a policy that no longer lowers: record, undecided
            log.warning("learn: flows recorded without their decision: %s", exc)
            return [""] * len(flows)

    async def flush(self) -> None:
        """Hand what was learned since the last flush to the store (on a worker thread). A
        flush cancelled before its write puts what it took back; a write under way finishes
        on its thread and counts itself."""
        await self.read_counts()
        taken, self._pending = self._pending, {}
        try:
            fresh = self._flows(taken)
            decisions = await self._decisions(fresh)
        except asyncio.CancelledError:
            self._put_back(taken)
            raise
        for i, (acc, decision) in enumerate(zip(taken.values(), decisions, strict=True)):
            signature, severity = self._signature(acc, fresh[i].names, decision)
            fresh[i] = replace(fresh[i], decision=decision, signature=signature,
                               severity=severity)
        flows = self._retry + fresh
        self._retry = []
        if flows:
            await asyncio.to_thread(self._write, flows)

    def _put_back(self, taken: dict[Key, _Acc]) -> None:
        for key, acc in taken.items():
            now = self._pending.get(key)
            if now is None:
                self._pending[key] = acc
            else:
                now.count += acc.count
                now.first, now.last = min(now.first, acc.first), max(now.last, acc.last)

    def _write(self, flows: list[LearnedFlow]) -> None:
        """On a worker thread: the store write, and its books."""
        try:
            self.store.record_flows(flows)
        except StoreError as exc:
            self.books.store_errors += 1
            log.error("learn: %s (kept for the next flush)", exc)
            self._retry = flows + self._retry
            while len(self._retry) > self.max_pending:
                self.books.dropped += self._retry.pop(0).count
            return
        self.books.recorded += sum(f.count for f in flows)
        self.books.unattributed += sum(f.count for f in flows if f.exe is None
                                       or f.exe.startswith("uid:"))

    def report(self) -> LearnBooks:
        """The books now (`pending` and the source's counts refreshed)."""
        self.books.pending = sum(a.count for a in self._pending.values()) + \
            sum(f.count for f in self._retry) + self.owners.waiting()
        stats = getattr(self.flows, "stats", None)
        if stats is not None and hasattr(stats, "as_dict"):
            self.books.source = dict(stats.as_dict())
        return self.books

    # --- running ------------------------------------------------------------------------

    async def _consume_flows(self) -> None:
        async for batch in self.flows:
            await self.handle(batch)
            # Under a flood the kernel sends a datagram every tick: waking for each costs more
            # than the packets in it. A big batch means the sockets churn faster than any
            # lookup anyway, so wait a little and take the next ones together; a quiet host
            # (small batches) is read at once. Either way the flush and the monitor beside
            # get the loop between batches.
            await asyncio.sleep(FLOOD_PAUSE if len(batch) >= FLOOD_BATCH else 0)

    async def _consume_answers(self) -> None:
        assert self.answers is not None
        async for batch in self.answers:
            self.take_answers(batch)

    async def _flusher(self, ending: asyncio.Event) -> None:
        while not ending.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ending.wait(), self.flush_every)
            await self.flush()
            self.names.prune(self.clock())

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set (or a source ends); then drain what the sockets hold and flush.
        The flusher is never cancelled while it writes: it is told to end, and ends after its
        last flush."""
        ending = asyncio.Event()
        early, self._early = self._early, []
        if early:
            await self.handle(early)
        try:
            async with asyncio.TaskGroup() as group:
                readers = [group.create_task(self._consume_flows(), name="outguard learn")]
                if self.answers is not None:
                    readers.append(group.create_task(self._consume_answers(),
                                                     name="outguard learn dns"))
                group.create_task(self._flusher(ending), name="outguard learn flush")
                stopper = group.create_task(stop.wait())
                self.running.set()
                await asyncio.wait([readers[0], stopper], return_when=asyncio.FIRST_COMPLETED)
                for task in [*readers, stopper]:
                    task.cancel()
                ending.set()
        except BaseExceptionGroup as exc:
            raise exc.exceptions[0] from None
        finally:
            with contextlib.suppress(Exception):  # a closed socket: nothing more to read
                await self._drain()
            await self.read_counts()
            self._take_counts(self.owners.give_up())  # no owner will come now
            await self.flush()

    async def _drain(self) -> None:
        """What the sockets already hold (a source that can be read without waiting)."""
        if self.answers is not None:
            reader = getattr(self.answers, "read_nowait", None)
            while callable(reader) and (got := reader()):
                self.take_answers(got)
        reader = getattr(self.flows, "read_nowait", None)
        while callable(reader) and (packets := reader()):
            await self.handle(packets)
