"""The agent's own options (`outguard run`, the lab, the tests): what is not in the policy.

Place in the data flow: given to `runner.run_agent`; `settings`, `live` and `reload` read them
beside the policy's settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from outguard.fleet.agent import FleetOptions
from outguard.policy.alertconf import AlertSpec
from outguard.policy.webconf import WebConfig
from outguard.store.base import Retention

STORE_NAME = "events.db"


@dataclass
class AgentOptions:
    # `apply`: applied first, and again on SIGHUP. Either way the agent serves what is applied
    # in `state_dir`; this file only while nothing is (see `service.reload`)
    policy: Path | None
    state_dir: Path
    netns: str | None = None  # in-process use: bind NFLOG / apply inside this namespace
    apply: bool = True
    store: str | Path | None = None  # default: STATE_DIR/events.db
    signatures: Sequence[Path] = ()
    alerts: Sequence[AlertSpec] | None = None  # None: the policy's `alerts:`
    nflog_group: int | None = None  # None: the policy's options.nflog_group (default 0)
    metrics_listen: str | None = None
    window: timedelta = timedelta(minutes=10)
    realert: timedelta = timedelta(minutes=5)
    retention: Retention = field(default_factory=Retention)
    stdout: TextIO | None = None  # where `stdout:` sinks write (tests)
    dns: bool = True  # run the resolver when the policy has a `dns:` section
    proxy: bool = True  # run the egress proxy when the policy has a `proxy:` section
    feeds: bool = True  # update `@feed:` lists on their schedule and tag drops with the feed
    learn: bool = False  # record every new outbound flow (`outguard learn`; or `learn: true`)
    learn_decide: bool = True  # record the decision of the policy in force with each flow
    policy_text: str | None = None  # what to apply instead of the file's text (`learn` adds
    # `learn: true` to it)
    fleet: FleetOptions | None = None  # `run --fleet URL`: follow the fleet server (fleet.agent)
    web: WebConfig | None = None  # the dashboard (`--web`), served by the agent
    web_sample_every: float = 30.0  # seconds between the dashboard's counter samples

    def store_location(self) -> str | Path:
        return self.store if self.store is not None else self.state_dir / STORE_NAME
