"""The dashboard in the agent: `outguard run --web HOST:PORT` (or the policy's `web:`).

Place in the data flow: `runner.run_agent` calls `start` once the agent's parts run; this
builds the dashboard's `Sources` from them — the kernel's counters the agent already reads,
its metrics registry, the feeds it keeps, the policy it serves — and runs two tasks on the
agent's loop until `stop`: uvicorn serving `web.app` (`WebServer`) and the sampler of the rule
counters (the overview's sparklines). The listener is bound here, before the agent reports that
it started: a taken port or a refused address fails the start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import generate_latest

from outguard.monitor.metrics import Metrics
from outguard.policy.webconf import WebConfig
from outguard.service.live import Live
from outguard.service.options import AgentOptions
from outguard.web.app import WebServer, build
from outguard.web.auth import TOKEN_FILE, Secrets, load_token
from outguard.web.sources import Counters, Sampler, Sources, rule_packets

log = logging.getLogger("outguard.web")
SAMPLE_EVERY = 30.0  # seconds between two samples of the rule counters (an hour: 120 points)


def _store_path(opts: AgentOptions) -> Path:
    return Path(str(opts.store_location()).removeprefix("sqlite://"))


def _of_policy(live: Live) -> WebConfig | None:
    """The served policy's `web:` section, when `--web` was not given (read at the start: a
    new `web:` takes a restart of the agent)."""
    policy = live.settings.policy if live.settings is not None else None
    return policy.doc.web if policy is not None else None


def start(opts: AgentOptions, counters: Callable[[], Counters] | None, metrics: Metrics,
          live: Live, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> WebServer | None:
    """The dashboard's server (None without `--web` or `web:`); its tasks join `tasks`."""
    web = opts.web or _of_policy(live)
    if web is None:
        return None
    sources = Sources(
        state_dir=opts.state_dir, store_path=_store_path(opts), counters=counters,
        metrics=lambda: generate_latest(metrics.registry), feeds=live.feeds.freshness,
        policy=lambda: live.settings.policy if live.settings is not None else None)
    sampler = Sampler(lambda: rule_packets(sources), every=opts.web_sample_every)
    app = build(sources, Secrets(load_token(opts.state_dir)), sampler=sampler, stop=stop,
                secure=web.tls, token_path=str(opts.state_dir / TOKEN_FILE))
    server = WebServer(app, web)
    log.info("dashboard on %s (token in %s)", server.url, opts.state_dir / TOKEN_FILE)

    async def serving() -> None:
        try:  # the live feeds end with `stop`, the agent's, at once
            await server.serve(stop)
        finally:
            sources.close()

    tasks += [asyncio.create_task(serving(), name="outguard-web"),
              asyncio.create_task(sampler.run(stop), name="outguard-web-sampler")]
    return server
