"""The fleet agent: the part of `outguard run --fleet URL` that talks to the fleet server.

Place in the data flow: `service.runner` starts it beside the monitor. It enrols once (the
credential goes to the state directory, `fleet.client`), then runs three loops:
- **follow**: GET /v1/policy, long-polling on the ETag (plain polling when the server answers
  at once), `fleet.follow.on_answer` decides, `fleet.local.HostOps` applies with a
  confirmation window and `--verify`; reaching the server from under the new policy (the
  report of the result) is the confirmation, otherwise it is rolled back. A `lockdown_until`
  puts the local lockdown in (or lifts the fleet's). Every result is reported (POST /v1/report),
  later if the server is away; a heartbeat report every `heartbeat` seconds.
- **senders**: the outbox (incidents, flows) to the server, `fleet.sender`.
The agent stays autonomous: the kernel keeps enforcing what was applied whatever happens here,
the monitor keeps learning and alerting into the local store and the outbox, and a start
while the server is away enforces the last good policy (`runner` applies it from
`fleet/policy.yaml` before this starts) and raises a local alert saying so. No failure here
opens egress: at worst a new version is not applied, or is rolled back to the one before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from outguard import __version__
from outguard.errors import OutguardError
from outguard.fleet import follow as fl
from outguard.fleet import wire
from outguard.fleet.client import (
    Credential,
    FleetClient,
    FleetError,
    PolicyAnswer,
    RefusedError,
    ThrottledError,
    UnreachableError,
    enroll,
    load_credential,
    save_credential,
)
from outguard.fleet.local import Applied, HostOps
from outguard.fleet.outbox import DEFAULT_BOUND, KINDS, Outbox
from outguard.fleet.sender import Sender, backoff
from outguard.state import write_private

log = logging.getLogger("outguard.fleet")
T = TypeVar("T")
FOLLOW = Path("fleet") / "follow.json"
OUTBOX = Path("fleet") / "outbox.db"
Publish = Callable[[dict[str, Any]], None]


@dataclass
class FleetOptions:
    url: str
    enroll: str | None = None  # a one-time token (first start only)
    ca: Path | None = None  # verify the server against this CA file only
    host: str | None = None  # the name to enrol with (default: hostname[-netns])
    verify: bool = True  # verify a pushed policy in the kernel after applying it
    confirm_timeout: float = 30.0  # rolled back unless the server is reached within it
    outbox_bound: int = DEFAULT_BOUND
    long_poll: float = 25.0
    heartbeat: float = 30.0
    poll: float = 5.0  # between polls when the server does not hold a long-poll
    cap: float = 10.0  # the longest backoff after failures


class FleetAgent:
    """One host's fleet side (see the module docstring); `service.fleetpart` runs it."""

    def __init__(self, opts: FleetOptions, state_dir: Path, outbox: Outbox, *,
                 publish: Publish, blocked: Callable[[], int] = lambda: 0,
                 ops: HostOps | None = None) -> None:
        self.opts, self.state_dir, self.outbox = opts, state_dir, outbox
        self.publish, self.blocked = publish, blocked
        self.ops = ops or HostOps(state_dir, verify_probes=opts.verify, server=opts.url)
        self.state = self._load()
        self.client: FleetClient | None = None
        self.senders: list[Sender] = []
        self.reachable: bool | None = None  # None: not tried yet
        self.offline_alerted = False
        self.policy_answers = 0
        self._rng = random.Random()
        self._samples: list[tuple[float, int]] = []

    # state ---------------------------------------------------------------------------------

    def _load(self) -> fl.Follow:
        path = self.state_dir / FOLLOW
        try:
            return fl.load(path.read_text())
        except FileNotFoundError:
            return fl.Follow()
        except (OSError, ValueError, TypeError) as exc:
            log.error("%s: %s; starting the fleet state afresh", path, exc)
            return fl.Follow()

    def _save(self) -> None:
        path = self.state_dir / FOLLOW
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(path, fl.dump(self.state))
        except OSError as exc:
            log.error("cannot write %s: %s", path, exc)

    def _alert(self, severity: str, signature: str, title: str) -> None:
        log.log(logging.ERROR if severity in ("high", "critical") else logging.WARNING,
                "%s", title)
        self.publish({"type": "outguard.agent", "host": socket.gethostname(),
                      "severity": severity, "signature": signature, "title": title,
                      "fleet": self.opts.url})

    # the loops -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: enrol if needed, then follow the policy, report and send."""
        cred = await self._credential(stop)
        if cred is None:
            return
        self.client = FleetClient(self.opts.url, self.opts.ca, cred)
        self.senders = [Sender(self.outbox, kind, self.client.post_items, cap=self.opts.cap,
                               on_trouble=lambda t: self._alert("high", "fleet-refused", t))
                        for kind in KINDS]
        async with asyncio.TaskGroup() as tg:
            for sender in self.senders:
                tg.create_task(sender.run(stop), name=f"outguard-fleet-{sender.kind}")
            tg.create_task(self._follow(stop), name="outguard-fleet-policy")
            tg.create_task(self._heartbeat(stop), name="outguard-fleet-heartbeat")

    async def drain(self, timeout: float) -> None:
        """After the monitor flushed its last incidents: send what waits, for a moment."""
        if self.senders:
            await asyncio.gather(*(s.drain(timeout) for s in self.senders))

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, seconds))

    async def _until(self, stop: asyncio.Event, work: Awaitable[T]) -> T | None:
        """`work`, or None as soon as `stop` is set (a long-poll must not hold a stop up)."""
        got: list[T] = []
        err: list[Exception] = []

        async def job() -> None:
            try:
                got.append(await work)
            except Exception as exc:  # re-raised below, outside the task group
                err.append(exc)

        async with asyncio.TaskGroup() as tg:
            worker = tg.create_task(job())
            halt = tg.create_task(stop.wait())
            worker.add_done_callback(lambda _t: halt.cancel())
            halt.add_done_callback(lambda _t: worker.cancel())
        if err:
            raise err[0]
        return got[0] if got else None

    def _offline(self, exc: Exception) -> None:
        self.reachable = False
        if self.offline_alerted:
            return
        self.offline_alerted = True
        where = (f"version {self.state.version}" if self.state.version is not None
                 else "the policy it was started with" if self.ops.has_last_good()
                 else "no policy (none was ever received)")
        self._alert("high", "fleet-unreachable",
                    f"fleet server {self.opts.url} unreachable at start ({exc}): this host"
                    f" enforces its last policy, {where}, and keeps monitoring; incidents wait"
                    " in the outbox")

    async def _credential(self, stop: asyncio.Event) -> Credential | None:
        try:
            cred = load_credential(self.state_dir)
        except FleetError as exc:
            self._alert("critical", "fleet-credential", str(exc))
            return None
        if cred is not None:
            return cred
        if self.opts.enroll is None:
            self._alert("critical", "fleet-credential", "not enrolled: start once with"
                        " --enroll TOKEN (from `outguard fleet enroll-token`)")
            return None
        from outguard.fleet.client import default_host  # noqa: PLC0415

        host, attempt = self.opts.host or default_host(), 0
        while not stop.is_set():
            try:
                cred = await enroll(self.opts.url, self.opts.ca, self.opts.enroll, host)
            except (UnreachableError, ThrottledError) as exc:
                self._offline(exc)
                attempt += 1
                await self._pause(stop, backoff(attempt, self._rng, cap=self.opts.cap))
                continue
            except RefusedError as exc:
                self._alert("critical", "fleet-enroll-refused", f"enrolment refused: {exc}")
                return None
            path = save_credential(self.state_dir, cred)
            log.info("enrolled with %s as %s (host id %d); credential in %s", self.opts.url,
                     host, cred.host_id, path)
            return cred
        return None

    async def _follow(self, stop: asyncio.Event) -> None:
        attempt, first = 0, True
        while not stop.is_set():
            wait = 0.0 if first else self.opts.long_poll
            began = time.monotonic()
            pause = 0.0
            try:
                assert self.client is not None
                answer = await self._until(stop, self.client.policy(self.state.etag, wait))
                if answer is None:
                    return
            except ThrottledError as exc:
                pause = exc.retry_after
            except UnreachableError as exc:
                if first:
                    self._offline(exc)
                else:
                    self.reachable = False
                attempt += 1
                pause = backoff(attempt, self._rng, cap=self.opts.cap)
            except RefusedError as exc:
                if attempt == 0:
                    self._alert("critical", "fleet-refused", f"the fleet server refuses this"
                                f" host's policy request: {exc}")
                attempt += 1
                pause = backoff(attempt, self._rng, cap=60.0)
            else:
                first, attempt, self.reachable = False, 0, True
                self.policy_answers += 1
                quick = time.monotonic() - began < min(1.0, wait / 2)
                pause = self.opts.poll if wait > 0 and answer.status != 200 and quick else 0.0
                try:
                    await self._handle(answer)
                except Exception as exc:  # a bug must not end the fleet part: log, go on
                    log.error("fleet: handling the policy answer failed", exc_info=exc)
                    self.state = fl.failed(self.state)
                    pause = self.opts.cap
                await self._report_pending()
            await self._pause(stop, pause)

    async def _handle(self, answer: PolicyAnswer) -> None:
        new, actions = fl.on_answer(self.state, answer, time.time())
        ok = True
        for act in actions:
            if isinstance(act, fl.Apply):
                await self._apply(act)
                continue
            until = act.until if isinstance(act, fl.Lockdown) else None
            try:
                done = await asyncio.to_thread(self.ops.lockdown, until)
            except OutguardError as exc:
                ok = False
                self._alert("high", "fleet-lockdown-failed", f"the fleet's lockdown could"
                            f" not be {'put in' if until else 'lifted'}: {exc}")
                continue
            self.state = fl.after_lockdown(self.state, act)
            self._alert("high" if until else "info", "fleet-lockdown", f"fleet: {done}")
        self.state = dataclasses.replace(self.state, etag=new.etag) if ok \
            else fl.failed(self.state)
        self._save()

    async def _apply(self, act: fl.Apply) -> None:
        t0 = time.monotonic()
        try:
            res = await asyncio.to_thread(self.ops.apply, act.text, self.opts.confirm_timeout)
        except OSError as exc:  # the state directory (the kernel's errors are in `res`)
            res = Applied(False, "apply_failed", f"cannot apply: {exc}")
        t1 = time.monotonic()
        if not res.ok:
            self.state = fl.after_apply(self.state, act, res.result, res.detail, res.mode)
            self._save()
            self._alert("high", f"fleet-{res.result.replace('_', '-')}",
                        f"fleet policy version {act.version} not kept: {res.result}:"
                        f" {res.detail}")
            return
        # the confirmation: this host still reaches the server from under the new policy
        deadline = time.monotonic() + max(1.0, self.opts.confirm_timeout * 0.7)
        body = self._body("applied", act.version, act.rollout_id, res.detail, res.mode)
        if await self._report_until(body, deadline):
            t2 = time.monotonic()
            try:
                await asyncio.to_thread(self.ops.confirm, act.text)
            except OutguardError as exc:
                self.state = fl.after_apply(self.state, act, "rolled_back",
                                            f"the confirmation failed: {exc}", res.mode)
            else:
                self.state = fl.reported(fl.after_apply(self.state, act, "applied",
                                                        res.detail, res.mode))
                log.info("fleet policy version %d applied and confirmed (apply and verify %.0f"
                         " ms, report %.0f ms, confirm %.0f ms)", act.version, (t1 - t0) * 1e3,
                         (t2 - t1) * 1e3, (time.monotonic() - t2) * 1e3)
        else:
            try:
                done = await asyncio.to_thread(self.ops.rollback)
            except OutguardError as exc:
                done = f"the rollback failed too: {exc}"
            self.state = fl.after_apply(
                self.state, act, "rolled_back", f"the fleet server was not reached from under"
                f" version {act.version} within {self.opts.confirm_timeout:g} s: {done}",
                res.mode)
            self._alert("high", "fleet-rolled-back", self.state.detail)
        self._save()

    def _body(self, result: str, version: int | None, rollout_id: int | None, detail: str,
              mode: str | None) -> wire.ReportRequest:
        return wire.ReportRequest(
            version=version, rollout_id=rollout_id, result=result,  # type: ignore[arg-type]
            detail=detail[:4096], mode=mode,  # type: ignore[arg-type]
            agent_version=__version__, lockdown_until=self.state.lockdown_until,
            blocked_rate=self.blocked_rate())

    async def _report_until(self, body: wire.ReportRequest, deadline: float) -> bool:
        attempt = 0
        while time.monotonic() < deadline:
            try:
                assert self.client is not None
                await self.client.report_fresh(body)
                return True
            except FleetError as exc:
                log.warning("fleet: report failed (%s)", exc)
                attempt += 1
                await asyncio.sleep(min(backoff(attempt, self._rng, cap=2.0),
                                        max(0.0, deadline - time.monotonic())))
        return False

    async def _report_pending(self) -> None:
        s = self.state
        if s.reported or s.result is None or self.client is None:
            return
        try:
            await self.client.report(self._body(s.result, s.tried, s.rollout_id, s.detail,
                                                s.mode))
        except FleetError as exc:
            log.warning("fleet: report of version %s failed (%s); sent again later", s.tried,
                        exc)
            return
        self.state = fl.reported(self.state)
        self._save()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        # the first at once: `fleet hosts` showed a host just enrolled as never seen for the
        # first `heartbeat` seconds (a trial)
        while not stop.is_set() and self.client is not None:
            await self._report_pending()
            s = self.state
            with contextlib.suppress(FleetError):
                last = f"; last version tried {s.tried}: {s.result}" if s.result else ""
                await self.client.report(self._body("running", s.version, s.rollout_id,
                                                    f"heartbeat{last}", s.mode))
            await self._pause(stop, self.opts.heartbeat)

    def blocked_rate(self, now: float | None = None) -> float:
        """Blocked packets per second over the last minute (from the monitor's count)."""
        now = time.monotonic() if now is None else now
        self._samples.append((now, self.blocked()))
        self._samples = [s for s in self._samples if now - s[0] <= 60.0]
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return max(0.0, (n1 - n0) / (t1 - t0)) if t1 > t0 else 0.0
