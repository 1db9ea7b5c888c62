"""`outguard feeds update | list | show NAME | check FILE`: threat feeds by hand.

Thin: option parsing and printing (rich progress bars when run in a terminal); the work is in
`outguard.feeds` (update, sync, report) and `outguard.kernel.setsync`.
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
from outguard.errors import OutguardError, PolicyError


def _applied(state_dir: Path) -> tuple[dict[str, Any], set[str]]:
    """The applied policy's own `feeds:` and the feeds its rules use, from its recorded text
    (validated, not loaded: no list file or feed is read). Empty when nothing is applied."""
    from pydantic import ValidationError  # noqa: PLC0415

    from outguard.policy.model import PolicyDoc  # noqa: PLC0415
    from outguard.policy.yamlpos import YamlSyntaxError, load_yaml  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir)
    try:
        got, text = state.read("applied"), state.policy_text("applied")
        if got is None or text is None:
            return {}, set()
        doc = PolicyDoc.model_validate(load_yaml(text)[0])
    except (OutguardError, YamlSyntaxError, ValidationError, ValueError) as exc:
        click.echo(f"warning: the applied policy's feeds are not shown: {exc}", err=True)
        return {}, set()
    used = {t.value[len("feed:"):] for rule in [*doc.deny, *doc.allow] for t in rule.to or []
            if t.kind == "list" and t.value.startswith("feed:")}
    base = Path(got[0].source).parent  # a relative `file:` is relative to the policy
    return {name: d.model_copy(update={"file": str(base / d.file)})
            if d.file is not None and not Path(d.file).is_absolute() else d
            for name, d in doc.feeds.items()}, used


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
    from outguard.apply.run import feed_host  # noqa: PLC0415
    from outguard.feeds.scheduler import fetch_round, sync_round  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir_path)
    host = feed_host()  # this namespace: `--netns` runs the command inside it
    try:
        state.ensure()
        try:
            with _Progress(sys.stderr.isatty() and not as_json) as progress:
                got = asyncio.run(fetch_round(state, host, names=names, force=force,
                                              ignore_interval=ignore_interval,
                                              progress=progress.hook))
        except PolicyError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            fail(OutguardError(f"the policy applied in {state.path} no longer loads: no feed was"
                               " updated (fix it and `outguard apply` it again)"))
            return
        policy, results = got.policy, got.results
        if not results:
            if policy is None:  # the timer on a host where nothing is applied: say it loudly
                fail(OutguardError(f"no policy is applied in {state.path}, so no feed is in use;"
                                   " name feeds to fetch them ahead of `outguard apply`, or give"
                                   " the --netns / --state-dir of the apply"))
            click.echo("the applied policy uses no feeds (@feed:NAME): nothing to update")
            return
        report = sync_round(state, host, got)
    except OutguardError as exc:
        fail(exc)
        return
    if as_json:
        click.echo(json.dumps({"feeds": [{"name": r.name, "status": r.status, "count": r.count,
                                          "alerts": [a.to_json() for a in r.alerts]} for r in results],
                               "applied": policy is not None,
                               "sync": None if report is None else {
                                   "changed": report.changed,
                                   "reapplied": bool(report.outgrown),
                                   "seconds": report.stats.seconds if report.stats else 0,
                                   # from the first new body in hand to the kernel commit
                                   "content_to_kernel_s": _content_to_kernel(results, report)}}))
    else:
        _print_update(results, report, policy is not None)
    if any(not r.ok for r in results):
        sys.exit(1)


def _print_update(results: list[Any], report: Any, applied: bool) -> None:
    """Each alert once (the CLI prints them; it used to log them too, so every refusal came
    twice): errors to stderr, the rest to stdout."""
    for r in results:
        extra = f", next in {max(0, r.next_due - time.time()):.0f} s" if r.status == "not-due" else ""
        click.echo(f"{r.name:24} {r.status:13} {r.count:>9} entries{extra}")
        for alert in r.alerts:
            click.echo(f"  {alert}", err=alert.severity == "error")
    if not applied and any(r.status == "updated" for r in results):
        click.echo("no policy is applied: the copies are kept for the next `outguard apply`")
    if report is not None and report.applied:
        for feed, (added, deleted) in report.changed.items():
            click.echo(f"synced {feed}: +{added} -{deleted}")
        for why in report.outgrown:
            click.echo(f"re-applied the policy with a bigger set: {why}")
        if report.stats is not None and report.stats.messages:
            click.echo(f"kernel: one transaction, {report.stats.messages} messages,"
                       f" {report.stats.seconds * 1000:.0f} ms")


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
@click.option("--json", "as_json", is_flag=True, help="One JSON object per feed, in a list.")
@kernel_options
def list_cmd(as_json: bool, netns: str | None, state_dir_path: Path) -> None:
    """Every known feed: registry and the applied policy's own, with its last good copy."""
    from outguard.feeds.registry import known  # noqa: PLC0415
    from outguard.feeds.report import list_lines, list_row  # noqa: PLC0415
    from outguard.feeds.store import FeedStore  # noqa: PLC0415

    store = FeedStore(state_dir_path / "feeds")
    custom, used = _applied(state_dir_path)
    try:
        specs = sorted(known(custom).items())
        if as_json:
            click.echo(json.dumps([list_row(spec, store, name in used) for name, spec in specs],
                                  indent=1))
        else:
            click.echo("\n".join(list_lines([spec for _n, spec in specs], store, used)))
    except OutguardError as exc:
        fail(exc)


@feeds.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable (ISO times in UTC, bytes).")
@kernel_options
def show(name: str, as_json: bool, netns: str | None, state_dir_path: Path) -> None:
    """One feed: where it comes from, its terms and limits, and its last fetch."""
    from outguard.feeds.registry import resolve  # noqa: PLC0415
    from outguard.feeds.report import show_json, show_lines  # noqa: PLC0415
    from outguard.feeds.store import FeedStore  # noqa: PLC0415

    custom, used = _applied(state_dir_path)
    store = FeedStore(state_dir_path / "feeds")
    try:
        spec = resolve(name, custom)
        if as_json:
            click.echo(json.dumps(show_json(spec, store, name in used), indent=1))
        else:
            click.echo("\n".join(show_lines(spec, store, name in used)))
    except OutguardError as exc:
        fail(exc)


@feeds.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--format", "fmt", default="plain",
              type=click.Choice(["plain", "spamhaus-json", "feodo-csv", "hosts", "domains", "dshield"]))
@click.option("--name", default="check", help="Use this registry feed's limits.")
def check(file: Path, fmt: str, name: str) -> None:
    """Parse and validate FILE as a feed, without storing or loading anything."""
    from outguard.feeds.local import read_bounded  # noqa: PLC0415
    from outguard.feeds.parse import parse  # noqa: PLC0415
    from outguard.feeds.policy import never_block_of  # noqa: PLC0415
    from outguard.feeds.registry import registry  # noqa: PLC0415
    from outguard.feeds.spec import FeedSpec  # noqa: PLC0415
    from outguard.feeds.validate import validate  # noqa: PLC0415

    spec = registry().get(name) or FeedSpec(name=name, file=str(file), format=fmt, category="custom")  # type: ignore[arg-type]
    spec = spec.model_copy(update={"format": fmt})
    data, why = read_bounded(str(file), spec.max_bytes)
    if data is None:
        click.echo(f"error: {why}", err=True)
        sys.exit(1)
    parsed = parse(data, fmt)
    verdict = validate(spec, data, parsed, None, never_block_of(None))
    v4 = parsed.v4()
    click.echo(f"{file}: {parsed.entries} entries, {parsed.bad} bad lines"
               f" (v4 {len(v4.singles)} addresses + {len(v4.net_values)} networks,"
               f" v6 {len(parsed.a6)} + {len(parsed.n6)}, {len(parsed.domains)} names)")
    if verdict.reason != "unreadable":  # the lines of a file that is no list are not echoed
        for line, text, reason in parsed.samples[:10]:
            click.echo(f"  {file}:{line}: {reason}: {text}")
    for alert in verdict.alerts:
        click.echo(str(alert), err=alert.severity == "error")
    if verdict.content is None:
        sys.exit(1)
    click.echo(f"ok: {verdict.content.count} entries after merging and never-block removal")
