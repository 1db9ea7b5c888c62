"""The learner's parts in the agent: its two NFLOG groups, the policy's decisions, its books.

Place in the data flow: `runner.run_agent` calls `bind` before the policy is applied (so the
first new flow is already seen) when learning is on — `outguard learn`, or `learn: true` in the
policy — and `start` once the agent's attributor, classifier and resolver exist; the learner
(`monitor.learn`) then runs on the agent's loop beside the monitor until the agent stops.
`decider` evaluates each learned flow with the pure `decide()` against the policy in force at
the flush (lowered once per policy, on the flush's worker thread). `bind` also opens the
netlink socket that reads and resets the kernel's counting sets (`kernel.learnsets`), in the
agent's namespace, for the learner's flushes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outguard.events import LearnedFlow
from outguard.monitor.learn import Decide, Learner
from outguard.nftables.nft_learn import count_sets
from outguard.policy.loaded import Policy
from outguard.ruleset.keys import LEARN_COUNTER, LEARN_KEYS, LEARN_LOGGED, learn_groups

if TYPE_CHECKING:
    from outguard.kernel.nflog import NflogGroup
    from outguard.kernel.nflog_payload import Payload
    from outguard.monitor.agent import Attributor
    from outguard.monitor.classify import Classifier
    from outguard.monitor.learn import ReadCounts
    from outguard.ruleset.ir import Ruleset
    from outguard.store.base import Store

log = logging.getLogger("outguard.learn")
COUNTERS = (LEARN_COUNTER, LEARN_LOGGED, LEARN_KEYS)  # nft_learn's: new, logged, keys
FLOW_RCVBUF = 64 << 20  # ~150k new-flow messages queued in the kernel before one is lost


def learning(forced: bool, policy: Policy | None) -> bool:
    """Whether the agent learns: `outguard learn`, or a policy with `learn: true`."""
    return forced or (policy is not None and policy.doc.learn)


def decider(policy_now: Callable[[], Policy | None]) -> Decide:
    """The decisions of the policy in force for learned flows (`ruleset.decide`); "" when no
    policy is in force; "RULE audit" for what an audit-mode policy would block (it got out).
    A flow with names is decided by the first name an allow rule takes
    (the resolver would have put its address in that rule's set), else by its first name."""
    lowered: dict[str, Ruleset] = {}

    def decide_all(flows: list[LearnedFlow]) -> list[str]:
        policy = policy_now()
        if policy is None:
            return [""] * len(flows)
        from outguard.pipeline import lower_policy  # noqa: PLC0415
        from outguard.ruleset.decide import Flow, decide  # noqa: PLC0415

        rs = lowered.get(policy.digest)
        if rs is None:
            lowered.clear()
            rs = lowered[policy.digest] = lower_policy(policy)
        out = []
        for f in flows:
            proto: Any = f.proto if f.proto in ("tcp", "udp", "icmp") else "other"
            decisions = [decide(rs, Flow(dst=f.dst, port=f.port, proto=proto, uid=f.uid,
                                         cgroup=f.cgroup, name=name))
                         for name in (f.names or (None,))]
            allowed = next((d for d in decisions if d.action == "allow"), decisions[0])
            # audit mode logs what it would block and lets it out: say so, as the kernel's
            # log prefix does ("og:default audit"), so that simulate knows it got out
            audit = allowed.action == "deny" and allowed.verdict == "accept"
            out.append(f"{allowed.rule} audit" if audit else allowed.rule)
        return out
    return decide_all


@dataclass
class LearnParts:
    """The learner's kernel sources, bound before the policy is applied."""

    flows: NflogGroup[Any]
    answers: NflogGroup[Payload]
    counter: Callable[[], dict[str, tuple[int, int]]] | None = None
    counts: ReadCounts | None = None  # the counting sets, read and reset
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    learner: Learner | None = None
    # the books' zero, taken when learning starts (after the apply): the kernel's count of new
    # flows then, and the source's counts of what it had received, lost and found malformed
    zero: dict[str, int] = field(default_factory=dict)

    def kernel_count(self, name: str = LEARN_COUNTER) -> int | None:
        """A learn counter of the kernel (`learn.new`: new flows), None when unreadable."""
        if self.counter is None:
            return None
        try:
            return self.counter().get(name, (None, 0))[0]
        except OSError:
            return None

    def close(self) -> None:
        self.flows.close()
        self.answers.close()
        for cleanup in self.cleanups:
            cleanup()


def bind(nflog_group: int, netns: str | None) -> LearnParts:
    """Bind the learn group and the DNS-answer group of `nflog_group`'s policy."""
    from outguard.kernel.nflog import NflogSource  # noqa: PLC0415 - needs netlink
    from outguard.kernel.nflog_payload import payload_source  # noqa: PLC0415

    flows_group, dns_group = learn_groups(nflog_group)
    # timeout 0: the kernel sends what it holds at the next tick (a few ms), so the socket
    # behind a short connection is still there for its lookup; under load the batches grow
    # copy_range 80: the IPv6 header and the ports behind it are all the learner reads
    flows = NflogSource(flows_group, netns=netns, copy_range=80, rcvbuf=FLOW_RCVBUF,
                        qthreshold=512, timeout=0.0, max_batch=4096)
    answers = payload_source(dns_group, netns)
    flows.open()
    try:
        answers.open()
        counts, release = count_reader(netns)
    except BaseException:
        flows.close()
        answers.close()
        raise
    return LearnParts(flows, answers, counts=counts, cleanups=[release])


def count_reader(netns: str | None) -> tuple[ReadCounts, Callable[[], None]]:
    """A reader (and reset) of the counting sets in `netns`, and how to release it."""
    from outguard.kernel.counters import open_socket  # noqa: PLC0415 - needs netlink
    from outguard.kernel.learnsets import read_counts  # noqa: PLC0415
    from outguard.kernel.netns import NetnsThread  # noqa: PLC0415

    with NetnsThread(netns) as thread:
        sock = thread.call(open_socket)  # a socket stays in the namespace it was made in
    sets = list(count_sets().values())
    lock = threading.Lock()

    def read() -> list[Any]:
        with lock:
            return list(read_counts(sets, sock))
    return read, sock.close


def start(parts: LearnParts, attributor: Attributor, store: Store, *,
          classifier: Classifier | None, resolver_names: Callable[[str], tuple[str, ...]],
          policy_now: Callable[[], Policy | None],
          counter: Callable[[], dict[str, tuple[int, int]]] | None) -> Learner:
    parts.counter = counter
    # What the socket holds now was counted before this start: it is learned, and the zero of
    # the books is taken after it (the kernel's counter lives as long as the table, and an
    # apply may have sent flows of its own: name resolution)
    early: list[Any] = []
    while got := parts.flows.read_nowait():
        early += got
    counted: list[Any] = []
    try:
        counted = list(parts.counts()) if parts.counts is not None else []
    except Exception as exc:  # e.g. a kernel before 6.5 (no reset dump): the books will say
        log.error("learning cannot read the kernel's counting sets: %s", exc)
    stats = parts.flows.stats
    parts.zero = {"received": stats.received, "lost": stats.lost, "malformed": stats.malformed,
                  "counted": sum(c.flows for c in counted),
                  **{name: parts.kernel_count(name) or 0 for name in COUNTERS}}
    parts.learner = Learner(parts.flows, attributor, store, answers=parts.answers,
                            resolver_names=resolver_names, classifier=classifier,
                            decide=decider(policy_now), early=early, counts=parts.counts)
    parts.learner.early_counts(counted)
    return parts.learner


def task(parts: LearnParts, attributor: Attributor, store: Store, stop: asyncio.Event, *,
         classifier: Classifier | None, names_of: Callable[[str], tuple[str, ...]],
         policy_now: Callable[[], Policy | None],
         counter: Callable[[], dict[str, tuple[int, int]]] | None) -> asyncio.Task[None]:
    """The learner on the agent's loop (its sockets are bound already), until `stop`."""
    learner = start(parts, attributor, store, classifier=classifier, resolver_names=names_of,
                    counter=counter, policy_now=policy_now)
    return asyncio.create_task(run(learner, stop), name="outguard-learn")


def books(parts: LearnParts) -> dict[str, Any]:
    """The learner's books with the kernel's counters beside them: `balanced` when every new
    flow the kernel counted was counted in a set (and read) or logged, and every message the
    kernel logged was received, lost (counted) or malformed (counted); see `nft_learn`."""
    assert parts.learner is not None
    got = parts.learner.report().as_dict()
    kernel = {name: parts.kernel_count(name) for name in COUNTERS}
    src, zero = got["source"], parts.zero
    messages = sum(src.get(k, 0) - zero.get(k, 0) for k in ("received", "lost", "malformed"))
    delta = {name: None if value is None else value - zero.get(name, 0)
             for name, value in kernel.items()}
    got["counted"] -= zero.get("counted", 0)
    got["kernel_new_flows"], logged, keys = (delta[n] for n in COUNTERS)
    got["kernel_logged"], got["kernel_keys"] = logged, keys
    got["balanced"] = None not in delta.values() and \
        got["kernel_new_flows"] == got["counted"] + (logged or 0) and \
        (logged or 0) + (keys or 0) == messages
    return got


def summary(books: dict[str, Any] | None) -> str:
    """The books in one line, for people: `learn` and `run` print it when they stop."""
    if books is None:
        return "outguard: learning did not run"
    src = books["source"]
    lost = src.get("lost", 0) + src.get("malformed", 0) + books["dropped"]
    kernel = books["kernel_new_flows"]
    # flows (process, user, destination, port) and connections are different units: say
    # which number is which, or "81 flows (70 counted)" reads like books that do not add up
    line = (f"outguard: learned {books['recorded']} new flow(s)"
            f" ({books['unattributed']} without a process), {books['answers']} DNS answer(s)")
    if kernel is not None:
        line += (f"; the kernel counted {kernel} new connection(s): {books['counted']} read from"
                 f" its counting sets, {books['kernel_logged'] or 0} logged one by one,"
                 f" {lost} lost")
        line += ": books balance" if books["balanced"] else ": BOOKS DO NOT BALANCE"
    return line


async def run(learner: Learner, stop: asyncio.Event) -> None:
    """The learner until `stop` (the agent's); a learner that fails is logged, not fatal to
    the monitor (the policy stays applied and enforced)."""
    try:
        await learner.run(stop)
    except Exception as exc:  # the monitor goes on; `learn` reports the books at its end
        log.error("learning stopped: %s", exc)
