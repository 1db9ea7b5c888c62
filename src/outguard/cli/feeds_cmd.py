"""`outguard feeds update | list | show NAME | check FILE`: threat feeds by hand.

Thin: option parsing and printing (rich progress bars and tables when run in a terminal); the
work is in `outguard.feeds` (update, sync) and `outguard.kernel.setsync`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from outguard.cli.common import fail, kernel_options
from outguard.errors import OutguardError


def _custom(state_dir: Path) -> dict[str, Any]:
    """The applied policy's own `feeds:` (empty when nothing is applied or it does not load)."""
    from outguard.feeds.sync import applied_policy  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    try:
        policy = applied_policy(StateDir(state_dir), state_dir / "feeds")
    except OutguardError:
        return {}
    return dict(policy.doc.feeds) if policy is not None else {}


@click.group()
def feeds() -> None:
    """Threat feeds: fetch, validate and sync blocklists (`@feed:NAME` in a policy)."""


@feeds.command()
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Accept a shrink/growth beyond the limits; no conditional GET.")
@click.option("--now", "ignore_interval", is_flag=True, help="Ignore the minimum interval and backoff.")
@click.option("--json", "as_json", is_flag=True)
@kernel_options
def update(names: tuple[str, ...], force: bool, ignore_interval: bool, as_json: bool,
           netns: str | None, state_dir_path: Path) -> None:
    """Fetch the applied policy's feeds (or NAMES), validate them and sync the kernel sets."""
    from outguard.feeds.alert import log_alert  # noqa: PLC0415
    from outguard.feeds.policy import PREFIX, FeedList, never_block_of  # noqa: PLC0415
    from outguard.feeds.registry import resolve  # noqa: PLC0415
    from outguard.feeds.store import FeedStore  # noqa: PLC0415
    from outguard.feeds.sync import applied_policy, sync_feeds  # noqa: PLC0415
    from outguard.feeds.update import update_feeds  # noqa: PLC0415
    from outguard.kernel.setsync import apply_in  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir_path)
    try:
        state.ensure()
        store = FeedStore(state.path / "feeds")
        policy = applied_policy(state, store.root)
        used = [fl.spec for fl in (policy.lists.values() if policy else [])
                if isinstance(fl, FeedList) and fl.name.startswith(PREFIX)]
        specs = [resolve(n, policy.doc.feeds if policy else None) for n in names] or used
        if not specs:
            click.echo("no feeds to update: name some, or apply a policy that uses @feed:NAME")
            return
        nb = never_block_of(policy.doc if policy else None, policy.lists if policy else None)
        with _Progress(sys.stderr.isatty() and not as_json) as progress:
            results = asyncio.run(update_feeds(specs, store, nb, force=force,
                                               ignore_interval=ignore_interval,
                                               progress=progress.hook))
        report = sync_feeds(state, lambda changes: apply_in(None, changes),
                            lambda: _reapply(state), fresh=_fresh(results)) \
            if any(r.status == "updated" for r in results) else None
    except OutguardError as exc:
        fail(exc)
        return
    for r in results:
        for alert in r.alerts:
            log_alert(alert)
    if as_json:
        click.echo(json.dumps({"feeds": [{"name": r.name, "status": r.status, "count": r.count,
                                          "alerts": [a.to_json() for a in r.alerts]} for r in results],
                               "sync": None if report is None else {
                                   "changed": report.changed,
                                   "reapplied": bool(report.outgrown),
                                   "seconds": report.stats.seconds if report.stats else 0,
                                   # from the first new body in hand to the kernel commit
                                   "content_to_kernel_s": _content_to_kernel(results, report)}}))
    else:
        for r in results:
            extra = f", next in {max(0, r.next_due - time.time()):.0f} s" if r.status == "not-due" else ""
            click.echo(f"{r.name:24} {r.status:13} {r.count:>9} entries{extra}")
            for alert in r.alerts:
                click.echo(f"  {alert}", err=alert.severity == "error")
        if report is not None and report.applied:
            for feed, (added, deleted) in report.changed.items():
                click.echo(f"synced {feed}: +{added} -{deleted}")
            for why in report.outgrown:
                click.echo(f"re-applied the policy with a bigger set: {why}")
            if report.stats is not None and report.stats.messages:
                click.echo(f"kernel: one transaction, {report.stats.messages} messages,"
                           f" {report.stats.seconds * 1000:.0f} ms")
    if any(not r.ok for r in results):
        sys.exit(1)


def _fresh(results: list[Any]) -> dict[str, Any]:
    return {r.name: r.content for r in results if r.content is not None}


def _reapply(state: Any) -> None:
    from outguard.engine import reapply  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415

    with Nft() as nft:
        reapply(state, nft)


def _content_to_kernel(results: list[Any], report: Any) -> float | None:
    starts = [r.body_at for r in results if r.status == "updated" and r.body_at]
    if not starts or not report.committed_at:
        return None
    return float(report.committed_at - min(starts))


class _Progress:
    """rich progress bars per feed download, only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (  # noqa: PLC0415
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), transient=True)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)

    def hook(self, name: str, done: int, total: int | None) -> None:
        if self.bar is None:
            return
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=total)
        self.bar.update(self.tasks[name], completed=done, total=total)


@feeds.command(name="list")
@kernel_options
def list_cmd(netns: str | None, state_dir_path: Path) -> None:
    """Every known feed: registry and the applied policy's own, with its last good copy."""
    from outguard.feeds.registry import known  # noqa: PLC0415
    from outguard.feeds.store import FeedStore  # noqa: PLC0415

    store = FeedStore(state_dir_path / "feeds")
    click.echo(f"{'feed':22} {'format':14} {'category':20} {'out':4} {'every':>6} {'entries':>8}  last good")
    for name, spec in sorted(known(_custom(state_dir_path)).items()):
        meta = store.meta(name)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(meta.fetched_at)) \
            if store.has_copy(name) else "-"
        click.echo(f"{name:22} {spec.format:14} {spec.category:20} {'yes' if spec.outbound else 'no':4}"
                   f" {spec.min_interval // 60:>5}m {meta.count if store.has_copy(name) else '-':>8}  {when}")


@feeds.command()
@click.argument("name")
@kernel_options
def show(name: str, netns: str | None, state_dir_path: Path) -> None:
    """One feed: where it comes from, its terms, and its last fetch."""
    from dataclasses import asdict  # noqa: PLC0415

    from outguard.feeds.registry import resolve  # noqa: PLC0415
    from outguard.feeds.store import FeedStore  # noqa: PLC0415

    try:
        spec = resolve(name, _custom(state_dir_path))
    except OutguardError as exc:
        fail(exc)
        return
    store = FeedStore(state_dir_path / "feeds")
    info = {"spec": spec.model_dump(), "record": asdict(store.meta(name)),
            "last_good_copy": str(store.copy_path(name)) if store.has_copy(name) else None}
    click.echo(json.dumps(info, indent=1))


@feeds.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--format", "fmt", default="plain",
              type=click.Choice(["plain", "spamhaus-json", "feodo-csv", "hosts", "domains", "dshield"]))
@click.option("--name", default="check", help="Use this registry feed's limits.")
def check(file: Path, fmt: str, name: str) -> None:
    """Parse and validate FILE as a feed, without storing or loading anything."""
    from outguard.feeds.parse import parse  # noqa: PLC0415
    from outguard.feeds.registry import registry  # noqa: PLC0415
    from outguard.feeds.spec import FeedSpec  # noqa: PLC0415
    from outguard.feeds.validate import default_never_block, validate  # noqa: PLC0415

    spec = registry().get(name) or FeedSpec(name=name, file=str(file), format=fmt, category="custom")  # type: ignore[arg-type]
    spec = spec.model_copy(update={"format": fmt})
    data = file.read_bytes()
    parsed = parse(data, fmt)
    verdict = validate(spec, data, parsed, None, default_never_block())
    v4 = parsed.v4()
    click.echo(f"{file}: {parsed.entries} entries, {parsed.bad} bad lines"
               f" (v4 {len(v4.singles)} addresses + {len(v4.net_values)} networks,"
               f" v6 {len(parsed.a6)} + {len(parsed.n6)}, {len(parsed.domains)} names)")
    for line, text, why in parsed.samples[:10]:
        click.echo(f"  {file}:{line}: {why}: {text}")
    for alert in verdict.alerts:
        click.echo(str(alert), err=alert.severity == "error")
    if verdict.content is None:
        sys.exit(1)
    click.echo(f"ok: {verdict.content.count} entries after merging and never-block removal")
