"""The fleet agent in the daemon's composition (`outguard run --fleet URL`).

Place in the data flow: `runner._build` asks `outbox_for` and wraps the store (`fleet.tee`):
every incident the monitor writes and every flow it learns is also queued in the outbox.
`runner.run_agent` starts the fleet agent (`start`) once the monitor runs — after the start's
own apply of the last good policy, so a host whose server is away enforces that policy
first — and, when the monitor has stopped and flushed its store, lets it send what waits for a
moment and closes it (`finish`). Its alerts go through the sinks in service (`Live.publish`),
its figures to the agent's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from outguard.errors import OutguardError
from outguard.fleet.agent import OUTBOX, FleetAgent
from outguard.fleet.outbox import Outbox, OutboxError
from outguard.fleet.status import families
from outguard.fleet.tee import Teed
from outguard.monitor.agent import Agent
from outguard.monitor.metrics import Metrics
from outguard.service.live import Live
from outguard.service.options import AgentOptions
from outguard.store.base import Store

log = logging.getLogger("outguard.fleet")
DRAIN_S = 3.0  # at a stop: how long what waits in the outbox may take to go


@dataclass
class FleetPart:
    agent: FleetAgent
    task: asyncio.Task[None]


def outbox_for(opts: AgentOptions) -> Outbox | None:
    if opts.fleet is None:
        return None
    if opts.netns is not None:
        # its apply, verify and watchdog act on the namespace the process is in
        raise OutguardError("the fleet agent runs inside its namespace: `outguard run --netns"
                            " NAME --fleet URL` (not an in-process netns)")
    try:
        return Outbox(opts.state_dir / OUTBOX, bound=opts.fleet.outbox_bound)
    except OutboxError as exc:
        raise OutguardError(str(exc)) from exc


def tee(store: Store, outbox: Outbox | None) -> Store:
    return store if outbox is None else Teed(store, outbox)


def start(opts: AgentOptions, outbox: Outbox | None, live: Live, metrics: Metrics,
          agent: Agent, stop: asyncio.Event) -> FleetPart | None:
    if opts.fleet is None or outbox is None:
        return None
    fleet = FleetAgent(opts.fleet, opts.state_dir, outbox, publish=live.publish,
                       blocked=lambda: agent.packets)
    metrics.watch(families(fleet))
    return FleetPart(fleet, asyncio.create_task(fleet.run(stop), name="outguard-fleet"))


async def finish(part: FleetPart | None, timeout: float = DRAIN_S) -> None:
    """After `stop` and the monitor's last flush."""
    if part is None:
        return
    try:
        await part.agent.drain(timeout)
    except Exception as exc:  # the outbox keeps it: the next start sends it
        log.warning("fleet: the last items wait in the outbox for the next start: %s", exc)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(part.task), 2.0)
    if not part.task.done():
        part.task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await part.task
    await part.agent.close()
    part.agent.outbox.close()
