"""`outguard fleet ...`: the central side of a fleet — the database, the API server, and what
operators do (enrol tokens, revoke, push and roll out, lockdown, look at hosts and incidents).

Every command but `serve` acts on PostgreSQL directly (`fleet.ops`, `fleet.rollout`); the DSN
comes from --db or OUTGUARD_FLEET_DB (keeps a password out of the process list).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from outguard.cli.common import fail
from outguard.cli.monitor_cmds import parse_duration
from outguard.errors import OutguardError

F = TypeVar("F", bound=Callable[..., Any])


def _db(fn: F) -> F:
    return click.option("--db", "dsn", required=True, envvar="OUTGUARD_FLEET_DB", metavar="DSN",
                        help="PostgreSQL: a libpq DSN or URI (or $OUTGUARD_FLEET_DB).")(fn)


def _json_opt(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="JSON output.")(fn)


def _with_conn(dsn: str, action: Callable[[Any], Any]) -> Any:
    import psycopg  # noqa: PLC0415

    from outguard.fleet import ops  # noqa: PLC0415

    try:
        with ops.connect(dsn) as conn:
            return action(conn)
    except OutguardError as exc:
        fail(exc)
    except psycopg.Error as exc:
        fail(OutguardError(f"database: {exc}".strip()))
    return None


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    cells = [[("-" if r.get(c) is None else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    for line in [cols, *cells]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


@click.group()
def fleet() -> None:
    """Many hosts, one PostgreSQL: the fleet API server and the operator's commands."""


@fleet.command("init")
@click.argument("dsn", envvar="OUTGUARD_FLEET_DB")
def init(dsn: str) -> None:
    """Create or migrate the fleet schema in PostgreSQL (a newer schema is refused)."""
    import psycopg  # noqa: PLC0415

    from outguard.fleet import schema  # noqa: PLC0415

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            start, end = schema.migrate(conn)
    except OutguardError as exc:
        fail(exc)
        return
    except psycopg.Error as exc:
        fail(OutguardError(f"database: {exc}".strip()))
        return
    click.echo(f"fleet schema at version {end}" + (f" (was {start})" if start != end else
                                                   " (already current)"))


@fleet.command("serve")
@_db
@click.option("--listen", default="127.0.0.1:8443", show_default=True, metavar="HOST:PORT")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--no-tls", is_flag=True, help="Plain HTTP (behind a TLS-terminating balancer,"
              " or on loopback for tests).")
@click.option("--rate", type=click.FloatRange(0.1), default=20.0, show_default=True,
              help="Requests/s per host, per replica.")
@click.option("--pool-size", type=click.IntRange(2, 200), default=10, show_default=True)
@click.option("--retention-days", type=click.IntRange(0), default=30, show_default=True,
              help="Drop day partitions older than this (0: never; `fleet prune` by hand).")
@click.option("--tick", type=click.FloatRange(0.2, 300), default=5.0, show_default=True,
              help="Seconds between periodic rollout checks.")
@click.option("--listen-db", "listen_dsn", default=None, metavar="DSN",
              help="PostgreSQL for LISTEN, when --db is a transaction-mode PgBouncer.")
@click.option("--max-connections", type=click.IntRange(10), default=10_000, show_default=True,
              help="Open connections (each waiting long-poll holds one); beyond: 503.")
def serve(dsn: str, listen: str, tls_cert: str | None, tls_key: str | None, no_tls: bool,
          rate: float, pool_size: int, retention_days: int, tick: float,
          listen_dsn: str | None, max_connections: int) -> None:
    """The fleet API (HTTPS); run as many replicas as needed behind any load balancer."""
    from outguard.fleet.server import Settings  # noqa: PLC0415
    from outguard.fleet.server import serve as run_server  # noqa: PLC0415

    if (tls_cert is None) != (tls_key is None) or (tls_cert is None and not no_tls):
        raise click.UsageError("give --tls-cert and --tls-key (or --no-tls)")
    if 0 < retention_days < 3:
        raise click.UsageError("--retention-days: 0 or at least 3")
    host, _sep, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.UsageError(f"--listen: {listen!r} is not HOST:PORT")
    _with_conn(dsn, lambda _conn: None)  # a schema too old or too new: refused, said plainly
    _say_where(host.strip("[]"), port, no_tls)
    try:
        run_server(Settings(dsn, rate=rate, burst=rate * 3, pool_size=pool_size,
                            tick_seconds=tick, retention_days=retention_days,
                            listen_dsn=listen_dsn),
                   host.strip("[]"), int(port), tls_cert, tls_key, max_connections)
    except OutguardError as exc:
        fail(exc)


def _say_where(host: str, port: str, no_tls: bool) -> None:
    """One line at start (the server said nothing: a trial could not tell where or how it
    listened), and a loud one for plain HTTP off the loopback: enrol tokens and host
    credentials then cross the network in clear unless a balancer in front terminates TLS."""
    import ipaddress  # noqa: PLC0415

    scheme = "http" if no_tls else "https"
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"outguard fleet serve: {scheme}://{shown}:{port}/v1/", err=True)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if no_tls and not loopback:
        click.echo(f"WARNING: --no-tls on {host}, not a loopback address: enrol tokens and host"
                   " credentials cross the network in clear; only behind a balancer that"
                   " terminates TLS on this host's network", err=True)


@fleet.command("enroll-token")
@_db
@click.option("--host", default=None, help="Only this host may enrol with it (and may enrol"
              " again: a reinstalled machine).")
@click.option("--ttl", default="24h", show_default=True, help="Valid for: 15m, 24h, 7d.")
def enroll_token(dsn: str, host: str | None, ttl: str) -> None:
    """Print a one-time enrol token (the database keeps only its hash)."""
    from outguard.fleet import ops  # noqa: PLC0415

    token = _with_conn(dsn, lambda c: ops.enroll_token(c, host, parse_duration(ttl)))
    click.echo(token)


@fleet.command("revoke")
@_db
@click.argument("host")
def revoke(dsn: str, host: str) -> None:
    """Refuse HOST's credential from now on (it may enrol again with a --host token)."""
    from outguard.fleet import ops  # noqa: PLC0415

    _with_conn(dsn, lambda c: ops.revoke(c, host))
    click.echo(f"revoked {host}")


@fleet.command("hosts")
@_db
@_json_opt
def hosts(dsn: str, as_json: bool) -> None:
    """The enrolled hosts: last seen, applied version, mode, agent version, lockdown."""
    from outguard.fleet import ops  # noqa: PLC0415

    rows = _with_conn(dsn, ops.hosts)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        if r["lockdown_until"]:
            r["lockdown_until"] = datetime.fromtimestamp(r["lockdown_until"], UTC).isoformat(
                timespec="seconds")
    _table(rows, ["host", "last_seen", "applied_version", "assigned_version", "mode",
                  "agent_version", "lockdown_until", "last_result", "revoked"])


@fleet.command("events")
@_db
@click.option("--since", default="24h", show_default=True, help="Window: 90s, 15m, 1h, 7d.")
@click.option("--host", default=None, help="Only hosts matching this pattern (web-*).")
@click.option("--rule", default=None, help="Only this rule (deny:NAME, default, or NAME).")
@click.option("--process", default=None, help="Only processes whose path contains this.")
@click.option("--severity", type=click.Choice(["info", "low", "medium", "high", "critical"]),
              default=None, help="Only incidents at least this severe.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@_json_opt
def events(dsn: str, since: str, host: str | None, rule: str | None, process: str | None,
           severity: str | None, limit: int, as_json: bool) -> None:
    """Incidents the fleet's hosts sent, the most recent first."""
    from outguard.fleet import ops  # noqa: PLC0415

    start = datetime.now(UTC) - parse_duration(since)
    rows = _with_conn(dsn, lambda c: ops.events(c, start, host=host, rule=rule, process=process,
                                                 severity=severity, limit=limit))
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    if not rows:
        click.echo(f"no incidents in the last {since}")
        return
    flat = [{"host": r["host"], "last seen": r.get("last_seen"), "severity": r.get("severity"),
             "count": r.get("count"), "process": (r.get("process") or {}).get("exe"),
             "destination": f"{r.get('dst')}:{r.get('dport')}", "rule": r.get("rule"),
             "title": r.get("title")} for r in rows]
    _table(flat, list(flat[0]))


@fleet.command("top")
@_db
@click.option("--since", default="1h", show_default=True, help="Window: 90s, 15m, 1h, 7d.")
@click.option("--host", default=None, help="Only hosts matching this pattern (web-*).")
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True)
@_json_opt
def top(dsn: str, since: str, host: str | None, limit: int, as_json: bool) -> None:
    """The top blocked processes, destinations and hosts across the fleet."""
    from outguard.fleet import ops  # noqa: PLC0415

    start = datetime.now(UTC) - parse_duration(since)
    got = _with_conn(dsn, lambda c: {by: ops.top(c, by, start, host=host, limit=limit)
                                     for by in ("process", "destination", "host")})
    if as_json:
        click.echo(json.dumps(got, indent=1))
        return
    for by, rows in got.items():
        click.echo(f"top blocked {by}{'es' if by == 'process' else 's'}")
        if rows:
            _table(rows, [by, "packets", "incidents", "worst", "last_seen"])
        click.echo("")


def _waves(text: str) -> list[float]:
    try:
        return [float(p.strip().rstrip("%")) for p in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: percentages such as 25%,100%") from None


@fleet.command("push")
@click.argument("policy", type=click.Path(path_type=Path, dir_okay=False))
@_db
@click.option("--to", "glob", required=True, help="Hosts matching this pattern ('web-*').")
@click.option("--canary", type=click.IntRange(0), default=1, show_default=True,
              help="Hosts in the first wave, alone.")
@click.option("--waves", default="25%,100%", show_default=True,
              help="The rest, cumulative percentages.")
@click.option("--max-rate-jump", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Halt when a host's blocked packets/s rise more than this after its apply.")
@click.option("--soak", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds a wave runs with all hosts applied before the next one starts.")
def push(policy: Path, dsn: str, glob: str, canary: int, waves: str, max_rate_jump: float,
         soak: float) -> None:
    """Validate POLICY, store it as a new version and roll it out in waves."""
    from outguard.fleet import ops  # noqa: PLC0415

    pct = _waves(waves)
    got = _with_conn(dsn, lambda c: ops.push(c, policy, glob, canary, pct, max_rate_jump, soak))
    click.echo(f"policy version {got.version}, rollout {got.rollout_id}:")
    for n, names in enumerate(got.waves):
        click.echo(f"  wave {n}{' (canary)' if n == 0 and canary else ''}: {', '.join(names)}")


@fleet.command("rollout")
@click.argument("action", type=click.Choice(["status", "pause", "resume", "abort"]))
@_db
@click.option("--id", "rid", type=int, default=None, help="The rollout (default: the latest).")
@_json_opt
def rollout_cmd(action: str, dsn: str, rid: int | None, as_json: bool) -> None:
    """A rollout's status; pause, resume or abort it (abort: hosts get their previous version)."""
    from outguard.fleet import rollout  # noqa: PLC0415

    if action != "status":
        done = _with_conn(dsn, lambda c: getattr(rollout, action)(c, rid))
        click.echo(f"rollout {done}: {action}{'d' if action.endswith('e') else 'ed'}")
        return
    got = _with_conn(dsn, lambda c: rollout.status(c, rid))
    if as_json:
        click.echo(json.dumps(got, indent=1))
        return
    click.echo(f"rollout {got['id']}: version {got['version']} to {got['selector']!r},"
               # numbered from 0 like `push` and the table below (the canary is wave 0)
               f" {got['state']}, at wave {got['wave']} (waves 0 to {got['waves'] - 1})"
               + (f" — {got['reason']}" if got["reason"] else ""))
    _table(got["hosts"], ["host", "wave", "assigned", "result", "assigned_version",
                          "previous_version", "detail"])


@fleet.command("lockdown")
@_db
@click.option("--to", "glob", required=True, help="Hosts matching this pattern ('web-*').")
@click.option("--for", "duration", default=None, help="How long: 30m, 2h.")
@click.option("--lift", is_flag=True, help="End a lockdown now.")
def lockdown(dsn: str, glob: str, duration: str | None, lift: bool) -> None:
    """Lock the matching hosts down for a while; their agents hear within seconds."""
    from outguard.fleet import ops  # noqa: PLC0415

    if lift == (duration is not None):
        raise click.UsageError("give --for DURATION, or --lift")
    seconds = None if lift else parse_duration(duration or "").total_seconds()
    names = _with_conn(dsn, lambda c: ops.lockdown(c, glob, seconds))
    click.echo(f"{'lifted' if lift else 'lockdown for ' + str(duration)}: {', '.join(names)}")


@fleet.command("prune")
@_db
@click.option("--keep-days", type=click.IntRange(3), default=30, show_default=True)
def prune(dsn: str, keep_days: int) -> None:
    """Drop the incident and flow partitions older than --keep-days."""
    from outguard.fleet import ops  # noqa: PLC0415

    dropped = _with_conn(dsn, lambda c: ops.prune(c, keep_days))
    click.echo(f"dropped {len(dropped)} partition(s)" + (f": {', '.join(dropped)}" if dropped
                                                          else ""))


@fleet.command("web")
@_db
@click.option("--listen", default="127.0.0.1:8766", show_default=True, metavar="HOST:PORT",
              help="Not loopback only with --tls-cert/--tls-key.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The view's token (made, 0600, when the file does not exist).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None)
def web(dsn: str, listen: str, token_file: Path, tls_cert: str | None,
        tls_key: str | None) -> None:
    """The fleet view: hosts, incidents, rollouts in a browser (read-only)."""
    import uvicorn  # noqa: PLC0415
    from pydantic import ValidationError  # noqa: PLC0415

    from outguard.fleet.webview import build  # noqa: PLC0415
    from outguard.policy.webconf import WebConfig, split_listen  # noqa: PLC0415
    from outguard.web.auth import Secrets, load_token_file  # noqa: PLC0415

    try:
        opts = WebConfig(listen=listen, tls_cert=Path(tls_cert) if tls_cert else None,
                         tls_key=Path(tls_key) if tls_key else None)
    except ValidationError as exc:
        raise click.UsageError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                               ) from None
    _with_conn(dsn, lambda _conn: None)  # a schema too old or too new: refused, said plainly
    try:
        keys = Secrets(load_token_file(token_file))
    except OSError as exc:
        fail(OutguardError(f"--token-file: {exc}"))
        return
    host, port = split_listen(opts.listen)
    app = build(dsn, keys, f"the token is in {token_file}", secure=opts.tls)
    click.echo(f"fleet view on {'https' if opts.tls else 'http'}://{listen}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                ssl_certfile=tls_cert, ssl_keyfile=tls_key)
