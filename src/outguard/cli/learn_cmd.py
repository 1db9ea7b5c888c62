"""`outguard learn` (the agent in learning mode) and `outguard flows` (the learned table).

Thin: options, the policy text learning applies, printing. The learner is `monitor.learn`,
wired into the agent by `service.learning`; the table is the store's (`Store.flows`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml

from outguard.cli.common import fail, kernel_options
from outguard.cli.monitor_cmds import _open_readonly, _store_options, _store_path, parse_duration
from outguard.errors import OutguardError, StateError

OPEN_POLICY_NAME = "learn-open.yaml"
# `outguard learn` without a policy: nothing is blocked, nothing is logged as an incident
OPEN_POLICY = """\
# written by `outguard learn` without a policy: block nothing, record every new flow
version: 1
mode: audit
learn: true
allow:
  - name: learn-everything
    comment: "outguard learn without a policy: nothing is blocked"
"""


def learning_text(path: Path) -> str:
    """The policy's text with `learn: true` (added at the end when the key is absent). A file
    that sets `learn: false` is refused: the user said not to learn under it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # the apply's own loader says where it is wrong
    if not isinstance(doc, dict) or doc.get("learn") is True:
        return text
    if "learn" in doc:
        raise StateError(f"{path}: `learn: {str(doc['learn']).lower()}`: remove it (or set it"
                         " to true) to learn under this policy")
    if text.lstrip().startswith("{"):
        raise StateError(f"{path}: add `learn: true` to it (a flow-style document cannot be"
                         " extended here)")
    return text + ("" if text.endswith("\n") else "\n") + \
        "learn: true  # added by `outguard learn`\n"


def _open_policy(state_dir: Path, netns: str | None) -> Path:
    """The open learning policy, written to the state directory, after checking that no
    outguard table is in place: replacing an enforcing policy would open egress."""
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir)
    with Nft(netns) as nft:
        present = nft.objects() is not None
    applied = state.snapshot("applied")
    ours = applied is not None and applied.source.endswith(OPEN_POLICY_NAME)
    if present and not ours:
        raise StateError("an outguard table is in place here: learning without a policy would"
                         " replace it and open egress; give the policy to learn under it"
                         " (`outguard learn POLICY`)")
    state.ensure()
    path = state_dir / OPEN_POLICY_NAME
    path.write_text(OPEN_POLICY, encoding="utf-8")
    return path


def _remove_open(state_dir: Path, netns: str | None) -> None:
    from outguard.apply.recovery import remove  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    with Nft(netns) as nft:
        remove(StateDir(state_dir), nft)


@click.command()
@click.argument("policy", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("--for", "duration", default=None, metavar="DURATION",
              help="Learn this long (90s, 15m, 8h, 7d), then stop [default: until SIGTERM].")
@click.option("--store", default=None, help="Event store: a SQLite file or sqlite:///PATH"
              " [default: STATE_DIR/events.db].")
@kernel_options
def learn(policy: Path | None, duration: str | None, store: str | None, netns: str | None,
          state_dir_path: Path) -> None:
    """Learning mode: record every new outbound flow, with its process and DNS names.

    With POLICY, it is applied (with `learn: true`) and enforced as `outguard run` would:
    nothing is blocked that it would not block. Without one, nothing at all is blocked (no
    outguard table may be in place: learning would replace it), and the open table is
    removed at the end. Each new flow (TCP, UDP, ICMP; IPv4 and IPv6) is attributed to its
    process, user, systemd unit and container and named from the DNS answers the host
    receives, from any resolver. `outguard flows` lists what was learned.
    """
    from outguard.service.learning import summary  # noqa: PLC0415
    from outguard.service.options import AgentOptions  # noqa: PLC0415
    from outguard.service.runner import Running, run_agent  # noqa: PLC0415

    seconds = parse_duration(duration).total_seconds() if duration is not None else None
    logging.basicConfig(level=logging.INFO, format="outguard: %(levelname)s: %(message)s",
                        stream=sys.stderr)
    try:
        if policy is not None:
            path, text = policy, learning_text(policy)
        else:
            path = _open_policy(state_dir_path, netns)
            text = None
    except OutguardError as exc:
        fail(exc)
        return
    opts = AgentOptions(policy=path, state_dir=state_dir_path, store=store, learn=True,
                        learn_decide=policy is not None, policy_text=text)

    def started(running: Running) -> None:
        under = f"under {policy}" if policy is not None else "with nothing blocked"
        until = f" for {duration}" if duration else " until SIGTERM"
        click.echo(f"outguard: learning {under}{until}; flows in {opts.store_location()}",
                   err=True)

    async def main() -> Running:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if seconds is not None:
            loop.call_later(seconds, stop.set)
        return await run_agent(opts, stop, started=started)

    try:
        running = asyncio.run(main())
    except OutguardError as exc:
        fail(exc)
        return
    finally:
        if policy is None:
            try:
                _remove_open(state_dir_path, netns)
            except OutguardError as exc:
                click.echo(f"outguard: the open learning table could not be removed: {exc}",
                           err=True)
    click.echo(summary(running.learn_books), err=True)


def _row(flow: Any) -> tuple[str, ...]:
    port = f":{flow.port}" if flow.port is not None else ""
    return (flow.last_seen.astimezone().strftime("%Y-%m-%d %H:%M:%S"), str(flow.count),
            flow.exe or "?", flow.user or "", flow.unit or flow.container or "",
            f"{flow.dst}{port}/{flow.proto}", ",".join(flow.names) or "-",
            flow.decision or "-", flow.signature or "")


@click.command()
@click.option("--since", default="7d", show_default=True, help="Window: 90s, 15m, 1h, 7d.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line (what `suggest --flows` and `simulate` read).")
@_store_options
def flows(since: str, as_json: bool, netns: str | None, state_dir: Path | None,
          store: str | None) -> None:
    """The learned flows (`outguard learn`, `learn: true`), the most recently seen first."""
    start = datetime.now(UTC) - parse_duration(since)
    try:
        db = _open_readonly(_store_path(netns, state_dir, store))
        try:
            found = db.flows(since=start)
        finally:
            db.close()
    except OutguardError as exc:
        fail(exc)
        return
    if as_json:
        for flow in found:
            click.echo(json.dumps(flow.to_json()))
        return
    if not found:
        click.echo(f"no flows learned in the last {since} (`outguard learn` records them)")
        return
    heads = ("last seen", "count", "process", "user", "unit", "destination", "names",
             "decision", "signature")
    rows = [heads, *(_row(f) for f in found)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(heads) - 1)]
    for r in rows:
        cells = [c.rjust(w) if i == 1 else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=False))]
        click.echo("  ".join([*cells, r[-1]]).rstrip())
