"""Reloading the agent: when, from what, and what a reload that fails does.

Place in the data flow: `service.applied` (the applied snapshot, and when it changes) and
SIGHUP (`systemctl reload`) → **Reloader** → `settings.prepare` → `live.Live` (stage, switch).

From what. The agent serves what is *applied* (the snapshot in its state directory), whoever
applied it: `outguard apply` of any file, `rollback`, the confirmation watchdog, `restore`. A
policy file given to `outguard run --no-apply` is used only while nothing is applied at all.

When. Within `applied.POLL_S` (0.5 s) of a new applied snapshot, and on SIGHUP. SIGHUP reads
everything again even when nothing new was applied (signature files, DNS blocklists, list
files); an agent that applies its policy itself (`outguard run POLICY` without `--no-apply`)
first re-applies POLICY on SIGHUP, like `outguard apply POLICY`, and then serves it.

All or nothing. A reload builds every part first (`prepare` on a worker thread, then
`Live.stage`); if anything fails — a policy that no longer loads, a blocklist or signature
file that cannot be read, a re-apply the kernel refuses — nothing changes: the agent keeps
serving the policy it had, and says so loudly: an error in the log, an alert (severity high)
through the sinks in service, `outguard_policy_reloads_total{result="failed"}` and
`outguard_policy_last_reload_successful 0`. The same applied snapshot is tried again every
`RETRY_S` (a file may be fixed without a new apply); the alert is not repeated for the same
error. When the whole snapshot disappears (`outguard remove`), the agent keeps what it serves
and warns: stopping the resolver would leave a host that asks it with no DNS at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from outguard.errors import OutguardError
from outguard.policy.loaded import Policy
from outguard.service import applied as ap
from outguard.service import learning
from outguard.service.live import Live
from outguard.service.settings import AgentSettings, file_policy, prepare

if TYPE_CHECKING:
    from outguard.monitor.metrics import Metrics
    from outguard.service.options import AgentOptions

log = logging.getLogger("outguard.monitor")
RETRY_S = 30.0
SIGHUP = "SIGHUP"


@dataclass
class ReloadStats:
    """What the reloads did (for tests, and whoever holds the agent)."""

    ok: int = 0
    failed: int = 0
    last_error: str | None = None
    serving: str = ""


def current_policy(opts: AgentOptions) -> tuple[Policy | None, str, str | None]:
    """The policy the agent is to serve now, for people, and its snapshot key (blocking)."""
    found = ap.read_applied(opts.state_dir)
    if found is not None:
        return found.load(opts.state_dir), found.describe(), found.key
    if opts.policy is not None:
        return (file_policy(opts.policy, opts.state_dir)(),
                f"policy file {opts.policy} (nothing is applied in {opts.state_dir})", None)
    return None, "no policy (nothing is applied, none was given)", None


def load_settings(opts: AgentOptions) -> AgentSettings:
    """`prepare` for what `current_policy` finds (blocking)."""
    policy, origin, key = current_policy(opts)
    return prepare(opts, policy, origin, key)


class Reloader:
    def __init__(self, opts: AgentOptions, live: Live, metrics: Metrics,
                 request: asyncio.Event, *,
                 reapply: Callable[[], Any] | None = None, poll: float = ap.POLL_S,
                 learning_on: bool | None = None) -> None:
        self.opts, self.live, self.request, self.reapply = opts, live, request, reapply
        self.learning_on = learning_on  # whether the agent started its learner (None: unknown)
        self.poll = poll
        self.stats = ReloadStats(serving=live.settings.origin if live.settings else "")
        self._reloads = Counter("outguard_policy_reloads", "Policy reloads of the agent, by"
                                " result (ok | failed)", ["result"], registry=metrics.registry)
        self._last_ok = Gauge("outguard_policy_last_reload_successful", "1 if the agent's last"
                              " policy (re)load succeeded, 0 if it serves an older policy than"
                              " the one applied", registry=metrics.registry)
        self._last_ok_at = Gauge("outguard_policy_last_reload_success_timestamp_seconds",
                                 "When the agent last loaded a policy", registry=metrics.registry)
        self._last_ok.set(1)
        self._last_ok_at.set(time.time())
        self._alerted: str | None = None
        self._failed_key: str | None = None
        self._retry_at = 0.0
        self._gone_warned = False
        self.on_status: Callable[[str], None] | None = None  # e.g. systemd's STATUS=

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: follow the applied snapshot, and reload on each request (SIGHUP)."""
        seen: ap.Stamp | bool | None = False  # False: not looked yet: the first poll compares
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll):
                    await self.request.wait()
            if stop.is_set():
                return
            if self.request.is_set():
                self.request.clear()
                await self.reload(SIGHUP, reapply=self.reapply is not None)
                seen = False
                continue
            try:
                now = ap.stamp(self.opts.state_dir)
            except OutguardError as exc:
                log.warning("%s", exc)
                continue
            retry = self._failed_key is not None and time.monotonic() >= self._retry_at
            if now == seen and not retry:
                continue
            seen = now
            await self._follow(retry)

    async def _follow(self, retry: bool) -> None:
        try:
            snap = await asyncio.to_thread(ap.read_applied, self.opts.state_dir)
        except OutguardError as exc:
            log.warning("%s", exc)
            return
        if snap is None:
            if self.live.settings is not None and self.live.settings.key is not None \
                    and not self._gone_warned:
                self._gone_warned = True
                log.warning("nothing is applied in %s any more (outguard remove?): the agent"
                            " keeps serving %s", self.opts.state_dir, self.stats.serving)
            return
        self._gone_warned = False
        served = self.live.settings.key if self.live.settings is not None else None
        if snap.key == served or (snap.key == self._failed_key and not retry):
            return
        await self.reload("the applied policy changed" if snap.key != self._failed_key
                          else "retry")

    async def reload(self, why: str, *, reapply: bool = False) -> bool:
        """Re-apply (if asked), load, stage and switch; or report why not and change nothing."""
        if reapply and self.reapply is not None:
            try:
                report = await asyncio.to_thread(self.reapply)
            except Exception as exc:  # the kernel and the agent keep what they have
                return self._failed(why, f"re-applying {self.opts.policy} failed, nothing"
                                         f" changed: {exc}", None, exc)
            for warning in getattr(report, "warnings", []):
                log.warning("%s: %s", self.opts.policy, warning)
        key: str | None = None
        try:
            settings = await asyncio.to_thread(load_settings, self.opts)
            key = settings.key
            staged = await self.live.stage(settings)
        except Exception as exc:
            if key is None:
                with contextlib.suppress(OutguardError):
                    found = await asyncio.to_thread(ap.read_applied, self.opts.state_dir)
                    key = found.key if found is not None else None
            return self._failed(why, str(exc), key, exc)
        self.live.switch(staged)
        self._succeeded(why, settings)
        return True

    def _succeeded(self, why: str, settings: AgentSettings) -> None:
        self.stats.ok += 1
        self.stats.serving = settings.origin
        self._reloads.labels("ok").inc()
        self._last_ok.set(1)
        self._last_ok_at.set(time.time())
        self._alerted = self._failed_key = None
        log.info("reloaded (%s): the resolver, feeds, alerts and classifier now serve %s",
                 why, settings.origin)
        wants = learning.learning(self.opts.learn, settings.policy)
        if self.learning_on is not None and wants != self.learning_on:
            # the learner's NFLOG groups are bound before the first apply, at start only
            log.warning("the policy now says learn: %s, but the agent %s: that takes effect at"
                        " the agent's next start (systemctl restart outguard)",
                        "true" if wants else "false",
                        "is not learning" if wants else "keeps learning until then")
        if self.on_status is not None:
            self.on_status(f"serving {settings.origin}")

    def _failed(self, why: str, message: str, key: str | None, exc: Exception) -> bool:
        self.stats.failed += 1
        self.stats.last_error = message
        self._reloads.labels("failed").inc()
        self._last_ok.set(0)
        self._failed_key, self._retry_at = key, time.monotonic() + RETRY_S
        text = f"policy reload ({why}) failed, the agent keeps serving {self.stats.serving}: " \
               f"{message}"
        if isinstance(exc, OutguardError | OSError | ValueError):
            log.error("%s", text)
        else:  # a bug, not a bad policy: its traceback belongs in the log
            log.error("%s", text, exc_info=exc)
        if message != self._alerted:
            self._alerted = message
            self.live.publish({"type": "outguard.agent", "host": socket.gethostname(),
                               "severity": "high", "signature": "policy-reload-failed",
                               "title": f"policy reload failed: {message}", "reason": why,
                               "serving": self.stats.serving})
        if self.on_status is not None:
            self.on_status(f"serving {self.stats.serving}; the last reload failed: {message}")
        return False
