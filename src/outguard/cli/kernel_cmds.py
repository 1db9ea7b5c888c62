"""The commands that change or read the kernel: apply, plan, confirm, rollback, status, remove,
and the hidden `_watchdog` that an apply with --confirm-timeout leaves behind.

Thin: option parsing and printing; the work is in `engine`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from outguard.cli.aws_cmd import apply_aws, aws_options
from outguard.cli.common import fail, kernel_options
from outguard.errors import OutguardError


def _spawn_watchdog(state_dir: Path) -> Callable[[str, float], int]:
    def spawn(token: str, deadline: float) -> int:
        log = os.open(state_dir / "watchdog.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # A new session: the watchdog outlives the apply command, its terminal and its
            # SSH session — the things a bad policy may have just cut off.
            proc = subprocess.Popen(
                [sys.executable, "-m", "outguard", "_watchdog", "--state-dir", str(state_dir),
                 "--token", token, "--deadline", repr(deadline)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                close_fds=True)
        finally:
            os.close(log)
        return proc.pid
    return spawn


@click.command()
@click.argument("policy", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--confirm-timeout", type=click.FloatRange(1, 86400), default=None,
              metavar="SECONDS", help="Roll back by itself unless `outguard confirm` comes in time.")
@click.option("--timings", is_flag=True, help="Print phase timings as one JSON line on stderr.")
@click.option("--backend", type=click.Choice(["nftables", "iptables", "iptables-nft",
                                              "iptables-legacy", "aws"]), default="nftables",
              help="iptables*: load the iptables export (ipset + restore) instead;"
                   " aws: reconcile a security group's egress rules (see aws_cmd).")
@aws_options
@kernel_options
def apply(policy: Path, confirm_timeout: float | None, timings: bool, backend: str,
          netns: str | None, state_dir_path: Path, **aws: Any) -> None:
    """Apply POLICY in one atomic transaction (replaces only outguard's own table)."""
    if backend == "aws":
        apply_aws(policy, **aws)
        return
    if backend != "nftables":
        _apply_iptables(policy, backend, confirm_timeout, netns)
        return
    from outguard.engine import apply_policy  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir_path)
    try:
        state.ensure()
        with Nft() as nft:
            report = apply_policy(policy, state, nft, confirm_timeout=confirm_timeout,
                                  spawn_watchdog=_spawn_watchdog(state_dir_path))
    except OutguardError as exc:
        fail(exc)
        return
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    where = f" in network namespace {netns}" if netns else ""
    click.echo(f"applied {policy} ({report.mode}, {report.rules} rules, policy"
               f" {report.policy_hash[:12]}){where}")
    if report.pending is not None:
        click.echo(f"rolls back in {confirm_timeout:g} s unless you run `outguard confirm"
                   f"{' --netns ' + netns if netns else ''}`")
    if timings:
        click.echo(json.dumps({k: round(v, 2) for k, v in report.timings.items()}
                              | {"method": report.method}), err=True)


def _apply_iptables(policy: Path, backend: str, confirm_timeout: float | None,
                    netns: str | None) -> None:
    from outguard.compile.lower import lower  # noqa: PLC0415
    from outguard.export.iptables_apply import apply_ruleset  # noqa: PLC0415
    from outguard.policy.load import load_policy  # noqa: PLC0415

    if confirm_timeout is not None:
        fail(OutguardError("--confirm-timeout needs the nftables backend"))
    variant = {"iptables": "default", "iptables-nft": "nft", "iptables-legacy": "legacy"}
    try:
        report = apply_ruleset(lower(load_policy(policy)), variant[backend], None)  # type: ignore[arg-type]
    except OutguardError as exc:
        fail(exc)
        return
    where = f" in network namespace {netns}" if netns else ""
    click.echo(f"applied {policy} with {backend} ({len(report.chains[4])} chains,"
               f" {len(report.sets)} ipsets){where}")


@click.command()
@kernel_options
def confirm(netns: str | None, state_dir_path: Path) -> None:
    """Keep the policy applied with --confirm-timeout."""
    from outguard.engine import confirm as do_confirm  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    try:
        click.echo(do_confirm(StateDir(state_dir_path)))
    except OutguardError as exc:
        fail(exc)


@click.command()
@kernel_options
def rollback(netns: str | None, state_dir_path: Path) -> None:
    """Restore the previously applied policy (or remove the table if there was none)."""
    from outguard.engine import rollback as do_rollback  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    try:
        with Nft() as nft:
            click.echo(do_rollback(StateDir(state_dir_path), nft))
    except OutguardError as exc:
        fail(exc)


@click.command()
@kernel_options
def remove(netns: str | None, state_dir_path: Path) -> None:
    """Remove outguard's table (and nothing else)."""
    from outguard.engine import remove as do_remove  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    try:
        with Nft() as nft:
            do_remove(StateDir(state_dir_path), nft)
    except OutguardError as exc:
        fail(exc)
    click.echo("removed outguard's table")


@click.command()
@click.option("--json", "as_json", is_flag=True)
@kernel_options
def status(as_json: bool, netns: str | None, state_dir_path: Path) -> None:
    """Applied policy, mode, per-rule packet counters, pending confirmation."""
    from outguard.compile.nft_verdict import log_figures  # noqa: PLC0415
    from outguard.engine import status as read_status  # noqa: PLC0415
    from outguard.kernel.counters import read_counters, table_exists  # noqa: PLC0415
    from outguard.monitor import agentstate  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    try:
        present = table_exists()
        counters = read_counters() if present else {}
        info = read_status(StateDir(state_dir_path), counters, present)
    except OutguardError as exc:
        fail(exc)
        return
    # what the monitor could see: blocked, logged, not logged (over the per-flow log rate)
    info["logging"] = log_figures(counters)
    info["monitor"] = agentstate.read(state_dir_path)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    if not info["applied"]:
        click.echo("no outguard policy is applied" + (
            " (but an outguard table exists)" if present else ""))
        return
    click.echo(f"policy  {info['policy_hash'][:12]}  applied {info['applied_at']}  mode"
               f" {info['mode']}\nsource  {info['source']}")
    pending = info["pending_confirmation"]
    if pending:
        click.echo(f"PENDING confirmation: rolls back in {pending['seconds_left']:.0f} s")
    click.echo(f"{'rule':40} {'packets':>12} {'bytes':>14}")
    for key, value in info["counters"].items():
        click.echo(f"{key:40} {value['packets']:>12} {value['bytes']:>14}")
    for line in agentstate.status_lines(info["logging"], info["monitor"]):
        click.echo(line)


@click.command(name="_watchdog", hidden=True)
@click.option("--state-dir", type=click.Path(path_type=Path), required=True)
@click.option("--token", required=True)
@click.option("--deadline", type=float, required=True)
def watchdog(state_dir: Path, token: str, deadline: float) -> None:
    """Roll back at DEADLINE unless the pending confirmation TOKEN was confirmed."""
    from outguard.engine import rollback as do_rollback  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir)
    while time.time() < deadline:
        pending = state.pending()
        if pending is None or pending.token != token:
            return
        time.sleep(min(0.2, max(0.0, deadline - time.time())))
    with Nft() as nft:
        message = do_rollback(state, nft, token=token)
    click.echo(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} watchdog: {message}")


def register(group: click.Group) -> None:
    from outguard.cli.plan import plan  # noqa: PLC0415

    for command in (apply, plan, confirm, rollback, remove, status, watchdog):
        group.add_command(command)
