"""The monitor's commands: `run` (the agent), `events` (stored incidents), `top` (a live view).

Thin: options and printing; the agent is `service.runner`, the data is `store`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from outguard.cli.common import fail, kernel_options
from outguard.cli.fleetrun import fleet_options, fleet_setup
from outguard.errors import OutguardError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration such as 90s, 15m, 1h, 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _store_path(netns: str | None, state_dir: Path | None, store: str | None) -> str | Path:
    from outguard.cli.common import state_dir as default_state  # noqa: PLC0415
    from outguard.service.options import STORE_NAME  # noqa: PLC0415

    return store if store is not None else default_state(netns, state_dir) / STORE_NAME


def _open_readonly(where: str | Path) -> Any:
    from outguard.store import StoreError  # noqa: PLC0415
    from outguard.store.sqlite import SQLiteStore  # noqa: PLC0415

    text = str(where)
    if "://" in text and not text.startswith("sqlite:///"):
        raise StoreError(f"{text!r}: only SQLite stores can be read for now")
    return SQLiteStore(Path(text.removeprefix("sqlite://")), readonly=True)


_STORE_OPTIONS = [
    click.option("--netns", metavar="NAME", help="The agent of this network namespace (its"
                 " default state directory)."),
    click.option("--state-dir", type=click.Path(path_type=Path), default=None,
                 help="The agent's state directory [default: /var/lib/outguard]."),
    click.option("--store", default=None, help="Event store: a SQLite file or sqlite:///PATH"
                 " [default: STATE_DIR/events.db]."),
]


def _web(listen: str | None, cert: Path | None, key: Path | None) -> Any:
    """`--web`'s options, checked now (a bad address is a usage error, before any apply)."""
    from pydantic import ValidationError  # noqa: PLC0415

    from outguard.policy.webconf import WebConfig  # noqa: PLC0415

    if listen is None:
        if cert is not None or key is not None:
            raise click.UsageError("--web-tls-cert/--web-tls-key need --web HOST:PORT")
        return None
    try:
        return WebConfig(listen=listen, tls_cert=cert, tls_key=key)
    except ValidationError as exc:
        why = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise click.BadParameter(why, param_hint="--web") from exc


def _store_options(fn: Any) -> Any:
    for option in reversed(_STORE_OPTIONS):
        fn = option(fn)
    return fn


@click.command()
@click.argument("policy", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("--metrics-listen", metavar="HOST:PORT", default=None,
              help="Serve Prometheus metrics here (e.g. 127.0.0.1:9108).")
@click.option("--store", default=None, help="Event store: a SQLite file or sqlite:///PATH"
              " [default: STATE_DIR/events.db].")
@click.option("--signatures", "signatures", multiple=True, type=click.Path(path_type=Path),
              help="Extra signature file(s): add, replace or disable signatures.")
@click.option("--no-apply", is_flag=True, help="Do not apply: serve the policy applied in the"
              " state directory (POLICY, if given, only while nothing is applied).")
@click.option("--web", "web_listen", metavar="HOST:PORT", default=None,
              help="Serve the dashboard here (e.g. 127.0.0.1:8765; its token is"
                   " STATE_DIR/web.token). Another address than loopback needs --web-tls-*.")
@click.option("--web-tls-cert", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="PEM certificate for the dashboard (HTTPS).")
@click.option("--web-tls-key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="PEM private key of --web-tls-cert.")
@click.option("--no-proxy", is_flag=True, help="Do not start the egress proxy of the"
              " policy's `proxy:` section (run `outguard proxy serve` yourself).")
@fleet_options
@kernel_options
def run(policy: Path | None, metrics_listen: str | None, store: str | None,
        signatures: tuple[Path, ...], no_apply: bool, web_listen: str | None,
        web_tls_cert: Path | None, web_tls_key: Path | None, no_proxy: bool,
        netns: str | None, state_dir_path: Path, **fleet: Any) -> None:
    """The agent: apply POLICY, then monitor what it blocks until SIGTERM.

    Every blocked packet is attributed to a process, classified, aggregated into incidents,
    stored, and alerted through the policy's `alerts:` section. The resolver (`dns:`), the
    egress proxy (`proxy:`), feeds, alerts and classifier follow the policy applied in the
    state directory: a new `outguard apply` (or rollback) reaches them within a second, all
    at once. SIGHUP (`systemctl reload`) reloads them, and first applies POLICY again unless
    --no-apply. A reload that fails changes nothing and is logged, alerted and counted. The
    store is flushed on exit; the policy stays applied.

    With --fleet URL the agent also follows a fleet server (see `outguard fleet`): it applies
    the version assigned to this host with a confirmation window and a verify, reports the
    result, puts in the fleet's lockdowns, and sends incidents and learned flows through a
    local outbox. Whatever the server does, the host keeps enforcing, monitoring and alerting.
    """
    from outguard.cli.sdnotify import Watchdog, notify, watchdog_interval  # noqa: PLC0415
    from outguard.monitor.metrics import parse_listen  # noqa: PLC0415
    from outguard.service.options import AgentOptions  # noqa: PLC0415
    from outguard.service.runner import Running, run_agent  # noqa: PLC0415

    fleet_opts, policy, apply = fleet_setup(fleet, policy, no_apply, netns, state_dir_path)
    if metrics_listen is not None:
        try:
            parse_listen(metrics_listen)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--metrics-listen") from exc
    logging.basicConfig(level=logging.INFO, format="outguard: %(levelname)s: %(message)s",
                        stream=sys.stderr)
    opts = AgentOptions(policy=policy, state_dir=state_dir_path, apply=apply, store=store,
                        signatures=signatures, metrics_listen=metrics_listen,
                        web=_web(web_listen, web_tls_cert, web_tls_key), fleet=fleet_opts,
                        proxy=not no_proxy)

    watchdogs: list[Watchdog] = []

    def started(running: Running) -> None:
        where = f" in network namespace {netns}" if netns else ""
        metrics = (f", metrics on http://{metrics_listen}/metrics" if metrics_listen else "")
        if running.web is not None:
            metrics += f", dashboard on {running.web.url}"
        click.echo(f"outguard: monitoring{where}, serving {running.reloader.stats.serving};"
                   f" events in {opts.store_location()}{metrics}", err=True)
        running.reloader.on_status = lambda text: notify(f"STATUS={text}")
        notify("READY=1", f"STATUS=serving {running.reloader.stats.serving}")
        if (interval := watchdog_interval()) is not None:
            watchdogs.append(Watchdog(asyncio.get_running_loop(), interval))
            watchdogs[-1].start()

    async def main() -> None:
        stop, reload = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # from the start: SIGHUP's default action would end the agent
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        try:
            running = await run_agent(opts, stop, started=started, reload=reload)
        finally:
            notify("STOPPING=1")
            for dog in watchdogs:
                dog.stop()
        click.echo(f"outguard: stopped after {running.agent.packets} blocked packets; store"
                   " flushed", err=True)
        if running.learn_books is not None:  # the policy says `learn: true`
            from outguard.service.learning import summary  # noqa: PLC0415

            click.echo(summary(running.learn_books), err=True)

    try:
        asyncio.run(main())
    except OutguardError as exc:
        fail(exc)


def _when(ts: datetime) -> str:
    return ts.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def fit_path(text: str, width: int) -> str:
    """A path shortened at its left, at a `/`: `…/jvm/java-17/bin/java`. Never cut inside a
    name: a file name longer than `width` is shown whole."""
    if len(text) <= width:
        return text
    parts = text.split("/")
    kept = parts[-1]
    for part in reversed(parts[:-1]):
        if len(f"…/{part}/{kept}") > width:
            break
        kept = f"{part}/{kept}"
    return f"…/{kept}" if len(kept) + 2 <= width else parts[-1]


def _table(found: list[Any]) -> list[str]:
    rows = []
    for inc in found:
        pid = f"[{inc.pid}]" if inc.pid is not None else ""
        rows.append((_when(inc.last_seen), inc.severity, str(inc.count),
                     fit_path(inc.process, 40 - len(pid)) + pid,
                     inc.dst + (f":{inc.dport}" if inc.dport is not None else ""), inc.rule,
                     inc.action or "?", inc.title))
    heads = ("last seen", "severity", "count", "process", "destination", "rule", "action",
             "title")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads[:-1])]

    def line(cells: tuple[str, ...]) -> str:
        out = [c.rjust(w) if i == 2 else c.ljust(w) for i, (c, w) in
               enumerate(zip(cells, widths, strict=False))]
        return "  ".join([*out, cells[-1]]).rstrip()
    return [line(heads), *(line(r) for r in rows)]


@click.command()
@click.option("--since", default="24h", show_default=True, help="Window: 90s, 15m, 1h, 7d.")
@click.option("--rule", default=None, help="Only this rule: default, deny:NAME, dns:default, or"
              " a bare rule NAME (in any section).")
@click.option("--process", default=None, help="Only processes whose path contains this.")
@click.option("--severity", type=click.Choice(["info", "low", "medium", "high", "critical"]),
              default=None, help="Only incidents at least this severe.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_store_options
def events(since: str, rule: str | None, process: str | None, severity: str | None, limit: int,
           as_json: bool, netns: str | None, state_dir: Path | None, store: str | None) -> None:
    """Incidents the agent recorded, the most recent first."""
    from outguard.store import Query  # noqa: PLC0415

    window = parse_duration(since)
    start = datetime.now(UTC) - window
    hint = ""
    try:
        db = _open_readonly(_store_path(netns, state_dir, store))
        try:
            found = db.query(Query(since=start, rule=rule, process=process,
                                   min_severity=severity, limit=limit))
            if rule is not None and not found:
                known = db.rules(start)
                hint = (f"no incidents of rule {rule!r} in the last {since}; rules with"
                        f" incidents: {', '.join(known)}" if known else "")
        finally:
            db.close()
    except OutguardError as exc:
        fail(exc)
        return
    if hint:
        click.echo(hint, err=True)
    if as_json:
        for inc in found:
            click.echo(json.dumps(inc.to_json()))
        return
    if not found:
        if not hint:
            click.echo(f"no incidents in the last {since}")
        return
    for text in _table(found):
        click.echo(text)


_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": ""}


def _frame(db: Any, window: timedelta, limit: int, width: int = 80) -> Any:
    from rich.console import Group  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    since = datetime.now(UTC) - window
    tables = []
    for by, title in (("process", "top blocked processes"),
                      ("destination", "top blocked destinations")):
        table = Table(title=title, expand=True)
        table.add_column(by, overflow="fold")  # wrapped if it must, not cut with "…"
        table.add_column("packets", justify="right")
        table.add_column("incidents", justify="right")
        table.add_column("worst")
        table.add_column("last seen")
        for row in db.top(by, since, limit):
            # the other four columns and the borders take ~60 characters
            key = fit_path(row.key, max(16, width - 60)) if by == "process" else row.key
            table.add_row(key, str(row.packets), str(row.incidents),
                          f"[{_STYLE[row.severity]}]{row.severity}[/]" if _STYLE[row.severity]
                          else row.severity, _when(row.last_seen))
        tables.append(table)
    return Group(*tables)


@click.command()
@click.option("--since", default="1h", show_default=True, help="Window: 90s, 15m, 1h, 7d.")
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True)
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@_store_options
def top(since: str, limit: int, interval: float, once: bool, netns: str | None,
        state_dir: Path | None, store: str | None) -> None:
    """A live view of the top blocked processes and destinations."""
    from rich.console import Console  # noqa: PLC0415
    from rich.live import Live  # noqa: PLC0415

    window = parse_duration(since)
    try:
        db = _open_readonly(_store_path(netns, state_dir, store))
    except OutguardError as exc:
        fail(exc)
        return
    console = Console()
    try:
        if once or not sys.stdout.isatty():
            console.print(_frame(db, window, limit, console.width))
            return
        with Live(_frame(db, window, limit, console.width), console=console, screen=False,
                  refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                live.update(_frame(db, window, limit, console.width))
    except KeyboardInterrupt:
        pass
    except OutguardError as exc:  # the store went bad while we read it
        fail(exc)
    finally:
        db.close()


def register(group: click.Group) -> None:
    for command in (run, events, top):
        group.add_command(command)
