"""`outguard suggest` and `outguard simulate`: from the learned flows to a policy, and a policy
replayed over them.

Thin: where the flows come from (the store's learned table, or `--flows FILE`), the feeds
applied, the name servers, and printing; the work is `journey.suggest` and `journey.simulate`.
Exit codes of simulate: 0 nothing that got out when learned (and is not classified) would be
blocked, 1 something would, 2 an error (a policy that does not load, a store or flows file that
cannot be read).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from outguard.cli.monitor_cmds import _open_readonly, _store_options, _store_path, parse_duration
from outguard.errors import OutguardError, PolicyError
from outguard.events import LearnedFlow

Source = Callable[[], Iterable[LearnedFlow]]


def _flows(flows_file: Path | None, since: str | None, netns: str | None,
           state_dir: Path | None, store: str | None) -> Source:
    """A way to read the flows again (suggest and simulate take two passes over a file)."""
    start = datetime.now(UTC) - parse_duration(since) if since is not None else None
    if flows_file is not None:
        from outguard.journey.flowfile import read_flows  # noqa: PLC0415

        def from_file() -> Iterator[LearnedFlow]:
            for flow in read_flows(flows_file):
                if start is None or flow.last_seen >= start:
                    yield flow
        return from_file
    where = _store_path(netns, state_dir, store)

    def from_store() -> Iterator[LearnedFlow]:
        # streamed: a million rows are never all in memory
        db = _open_readonly(where)
        try:
            yield from db.flows_iter(since=start)
        except sqlite3.Error as exc:
            raise OutguardError(f"{where}: cannot read the learned flows: {exc}") from None
        finally:
            db.close()
    return from_store


def _state(netns: str | None, state_dir: Path | None) -> Path:
    from outguard.cli.common import state_dir as default_state  # noqa: PLC0415

    return default_state(netns, state_dir)


def _feed_check(state: Path, extra: Any = None) -> Callable[[str], str | None]:
    """`dst` → the applied feed holding it (and the `--against` policy's feeds), or None."""
    from outguard.feeds.lookup import FeedIndex  # noqa: PLC0415
    from outguard.pipeline import load_applied  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    indexes = []
    try:
        applied = load_applied(StateDir(state))
    except (OutguardError, OSError):
        applied = None
    for policy in (applied, extra):
        if policy is not None:
            index = FeedIndex.of_policy(policy)
            if index.feeds:
                indexes.append(index)

    def check(dst: str) -> str | None:
        for index in indexes:
            hits = index.lookup(dst)
            if hits:
                return hits[0].feed
        return None
    return check


def _flows_options(fn: Any) -> Any:
    fn = click.option("--flows", "flows_file", type=click.Path(path_type=Path, dir_okay=False),
                      default=None, help="Read the flows from this file (JSON Lines, as"
                      " `outguard flows --json` prints) instead of the store.")(fn)
    fn = click.option("--since", default=None, help="Only flows seen in this window (90s, 15m,"
                      " 1h, 7d) [default: 7d from the store; every flow of a --flows file].")(fn)
    return _store_options(fn)


@click.command()
@_flows_options
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the policy here instead of printing it.")
@click.option("--against", "against", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Keep this policy as written and add only what it misses"
              " (a unified diff unless --out).")
@click.option("--per", type=click.Choice(["service", "host"]), default="service",
              show_default=True, help="Rules per systemd unit or executable, or host-wide.")
def suggest(flows_file: Path | None, since: str | None, out: Path | None, against: Path | None,
            per: str, netns: str | None, state_dir: Path | None, store: str | None) -> None:
    """A reviewable policy from the learned flows."""
    from outguard.cli.common import fail  # noqa: PLC0415

    try:
        text = _suggest(flows_file, since, against, per == "host", netns, state_dir, store,
                        as_diff=out is None)
    except OutguardError as exc:
        fail(exc)
        return
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(OutguardError(f"{out}: cannot write: {exc.strerror or exc}"))
    click.echo(f"wrote {out}", err=True)


def _suggest(flows_file: Path | None, since: str | None, against: Path | None, per_host: bool,
             netns: str | None, state_dir: Path | None, store: str | None,
             as_diff: bool) -> str:
    from outguard.journey.render import render  # noqa: PLC0415
    from outguard.journey.suggest import suggest as build  # noqa: PLC0415
    from outguard.ruleset.reach import HostView, name_servers  # noqa: PLC0415

    state = _state(netns, state_dir)
    window = since if since is not None or flows_file else "7d"
    # not run inside the namespace (only its state directory is meant): its own resolv.conf
    view = HostView(resolv_conf=Path(f"/etc/netns/{netns}/resolv.conf"),
                    shown=f"/etc/netns/{netns}/resolv.conf") if netns else HostView()
    hint, _shown = name_servers(view)
    if against is None and flows_file is None:
        return render(_suggest_store(since or "7d", per_host, _feed_check(state), hint, netns,
                                     state_dir, store))
    source = _flows(flows_file, window, netns, state_dir, store)
    if against is None:
        return render(build(source(), per_host=per_host, on_feed=_feed_check(state),
                            upstream_hint=hint))
    return _against(against, source, per_host, state, hint, as_diff)


def _suggest_store(since: str, per_host: bool, on_feed: Callable[[str], str | None],
                   hint: list[str], netns: str | None, state_dir: Path | None,
                   store: str | None) -> Any:
    """`suggest` over the store's summary of the table: SQLite groups a million rows."""
    from outguard.journey.aggregate import collect_summary  # noqa: PLC0415
    from outguard.journey.suggest import suggest_table  # noqa: PLC0415
    from outguard.store import flowsummary as fs  # noqa: PLC0415

    start = datetime.now(UTC) - parse_duration(since)
    db = _open_readonly(_store_path(netns, state_dir, store))
    try:
        table = db.flows_summary(lambda c: collect_summary(
            fs.suggest_rows(c, start, per_host), lambda dsts: fs.classified(c, start, dsts),
            on_feed=on_feed))
    finally:
        db.close()
    return suggest_table(table, per_host=per_host, upstream_hint=hint)


def _against(path: Path, source: Source, per_host: bool, state: Path, hint: list[str],
             as_diff: bool) -> str:
    from outguard.journey.against import diff, merge  # noqa: PLC0415
    from outguard.journey.simulate import LearnedNames, Replayer  # noqa: PLC0415
    from outguard.journey.suggest import suggest as build  # noqa: PLC0415
    from outguard.pipeline import load_policy, lower_policy  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OutguardError(f"{path}: cannot read: {exc}") from None
    policy = load_policy(path, text=text, feed_dir=state / "feeds")
    names = LearnedNames(source())
    ruleset = lower_policy(policy, resolver=names.resolver)
    replayer = Replayer(ruleset, names=names)
    taken = [r.name for r in (*policy.doc.allow, *policy.doc.deny)]
    denied: dict[str, int] = {}

    def missing(flow: LearnedFlow) -> bool:
        """Only what the default blocks is missing: an allow rule would not beat the user's
        own deny rule, so what one of those blocks is left to the user."""
        decision, _name = replayer.decision(flow)
        if decision.rule.startswith("deny:"):
            denied[decision.rule] = denied.get(decision.rule, 0) + 1
        return decision.verdict != "accept" and not decision.rule.startswith("deny:")

    suggestion = build(source(), per_host=per_host, on_feed=_feed_check(state, policy),
                       keep=missing, use_dns=ruleset.dns is not None, upstream_hint=hint,
                       upstreams=[host for host, _port in ruleset.dns.upstreams]
                       if ruleset.dns is not None else None, taken=taken)
    suggestion.notes += [f"{n} learned flows are blocked by your rule {rule}: nothing added for"
                         " them" for rule, n in sorted(denied.items())]
    merged = merge(text, str(path), suggestion)
    return diff(text, merged, str(path)) if as_diff else merged


@click.command()
@click.argument("policy", type=click.Path(path_type=Path, dir_okay=False))
@_flows_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per flow, then the"
              " summary object.")
@click.option("--all", "show_all", is_flag=True, help="Print allowed flows too (text).")
def simulate(policy: Path, flows_file: Path | None, since: str | None, as_json: bool,
             show_all: bool, netns: str | None, state_dir: Path | None,
             store: str | None) -> None:
    """Replay the learned flows through POLICY: what would it block? Exit 1 if anything that
    got out when learned and is not classified would be."""
    from outguard.journey.simulate import Outcome  # noqa: PLC0415
    from outguard.journey.simulate import simulate as replay  # noqa: PLC0415
    from outguard.pipeline import load_policy, lower_policy  # noqa: PLC0415

    def each(o: Outcome) -> None:
        if as_json:
            click.echo(json.dumps(o.to_json()))
        elif o.blocked or show_all:
            click.echo(_line(o))

    try:
        source = _flows(flows_file, since if since is not None or flows_file else "7d", netns,
                        state_dir, store)
        loaded = load_policy(policy, feed_dir=_state(netns, state_dir) / "feeds")
        if flows_file is None and not as_json and not show_all:
            ruleset, summary = _simulate_store(loaded, since or "7d", each, netns, state_dir,
                                               store)
        else:
            names = _names(flows_file, since, source, netns, state_dir, store)
            ruleset = lower_policy(loaded, resolver=names.resolver)
            summary = replay(ruleset, source(), each=each, names=names)
    except OutguardError as exc:
        _error(exc)
        return
    if as_json:
        click.echo(json.dumps({"summary": summary.to_json()}))
    else:
        _print_summary(summary, ruleset.mode == "audit")
    sys.exit(1 if summary.regressions else 0)


def _simulate_store(loaded: Any, since: str, each: Callable[[Any], None], netns: str | None,
                    state_dir: Path | None, store: str | None) -> tuple[Any, Any]:
    """(ruleset, summary) over the store's distinct questions (one decision each, a million
    rows asking tens of thousands); only the rows to an address something of which would be
    blocked are read whole, for their lines."""
    from outguard.journey.simulate import (  # noqa: PLC0415
        Replayer,
        question_names,
        simulate_questions,
    )
    from outguard.pipeline import lower_policy  # noqa: PLC0415
    from outguard.store import flowsummary as fs  # noqa: PLC0415

    start = datetime.now(UTC) - parse_duration(since)
    db = _open_readonly(_store_path(netns, state_dir, store))
    try:
        questions = db.flows_summary(lambda c: list(fs.questions(c, start)))
        names = question_names(questions)
        ruleset = lower_policy(loaded, resolver=names.resolver)
        replayer = Replayer(ruleset, names=names)
        summary = simulate_questions(
            replayer, questions, lambda dsts: db.flows_summary(
                lambda c: fs.flows_to(c, start, dsts)), each=each)
    finally:
        db.close()
    return ruleset, summary


def _names(flows_file: Path | None, since: str | None, source: Source, netns: str | None,
           state_dir: Path | None, store: str | None) -> Any:
    """The names the table saw per address: from a file without building every flow."""
    from outguard.journey.flowfile import read_names  # noqa: PLC0415
    from outguard.journey.simulate import LearnedNames, question_names  # noqa: PLC0415
    from outguard.store import flowsummary as fs  # noqa: PLC0415

    if flows_file is None:
        window = datetime.now(UTC) - parse_duration(since or "7d")
        db = _open_readonly(_store_path(netns, state_dir, store))
        try:
            return question_names(db.flows_summary(lambda c: list(fs.questions(c, window))))
        finally:
            db.close()
    start = datetime.now(UTC) - parse_duration(since) if since is not None else None
    return LearnedNames(()).add(read_names(flows_file, start))


def _error(exc: OutguardError) -> None:
    if isinstance(exc, PolicyError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} error(s) in the policy", err=True)
    else:
        click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _line(o: Any) -> str:
    f = o.flow
    port = f"/{f.port}" if f.port is not None else ""
    where = f"{o.name or (f.names[0] if f.names else f.dst)} ({f.dst})" if f.names else f.dst
    head = "BLOCK" if o.blocked else "ALLOW"
    marks = [f"{f.signature} ({f.severity})"] if f.severity and o.blocked else []
    marks += ["got out when learned"] if o.got_out else []
    mark = f"  [{', '.join(marks)}]" if marks else ""
    who = f.unit or f.user or "?"
    return f"{head}  {f.exe or '?'} ({who}) -> {where} {f.proto}{port}: {o.decision.rule}{mark}"


def _print_summary(summary: Any, audit: bool) -> None:
    click.echo(f"{summary.flows} flows replayed: {summary.blocked} would be blocked"
               f"{' (audit mode: logged, not blocked)' if audit else ''}, {summary.got_out}"
               " of them got out when learned, "
               f"{summary.classified_blocked} classified medium or worse;"
               f" {summary.regressions} got out and are not classified (what it would break)")
    for exe, b in sorted(summary.by_process.items(), key=lambda kv: (-kv[1].flows, kv[0])):
        click.echo(f"  {exe}: {b.flows} flows ({b.connections} connections),"
                   f" {b.got_out} got out when learned, {b.regressions} not classified")
        for where, rules in sorted(b.destinations.items()):
            click.echo(f"    {where}: {', '.join(sorted(rules))}")
