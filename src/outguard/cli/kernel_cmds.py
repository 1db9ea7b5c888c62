"""The commands that change the kernel: apply, confirm, rollback, remove, restore, and the hidden
`_watchdog` that an apply with --confirm-timeout leaves behind (`plan` and `status` read it: in
their own modules).

Thin: option parsing and printing; the work is in `apply`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from outguard.cli.aws_cmd import apply_aws, aws_options
from outguard.cli.common import confirm_command, fail, kernel_options
from outguard.errors import OutguardError, PolicyError, StateError

# Removed as backends (issue 14: a backend is whole or export-only); still accepted as values
# so that the error says what to do instead.
IPTABLES_BACKENDS = ("iptables", "iptables-nft", "iptables-legacy")


def _spawn_watchdog(state_dir: Path) -> Callable[[str, float, str], int]:
    def spawn(token: str, deadline: float, base: str) -> int:
        from outguard.kernel import procs  # noqa: PLC0415
        from outguard.kernel.cgroups import CGROUP_FD_ENV  # noqa: PLC0415

        inherited = os.environ.get(CGROUP_FD_ENV, "")
        log = os.open(state_dir / "watchdog.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # A new session: the watchdog outlives the apply command, its terminal and its
            # SSH session — the things a bad policy may have just cut off. It knows its token,
            # deadline and base itself: a damaged pending file does not stop it.
            return procs.start_detached(
                [sys.executable, "-m", "outguard", "_watchdog", "--state-dir", str(state_dir),
                 "--token", token, "--deadline", repr(deadline), "--base", base],
                log=log, pass_fds=(int(inherited),) if inherited.isdigit() else ())
        finally:
            os.close(log)
    return spawn


@click.command()
@click.argument("policy", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--confirm-timeout", type=click.FloatRange(1, 86400), default=None,
              metavar="SECONDS", help="Roll back by itself unless `outguard confirm` comes in time.")
@click.option("--timings", is_flag=True, help="Print phase timings as one JSON line on stderr.")
@click.option("--verify", "verify_after", is_flag=True,
              help="Run `outguard verify` right after the commit; roll back on any mismatch.")
@click.option("--backend", type=click.Choice(["nftables", "aws", *IPTABLES_BACKENDS]),
              default="nftables",
              help="aws: reconcile a security group's egress rules (see aws_cmd). iptables is"
                   " export-only: `outguard compile POLICY --target iptables --out DIR`.")
@aws_options
@kernel_options
def apply(policy: Path, confirm_timeout: float | None, timings: bool, verify_after: bool,
          backend: str, netns: str | None, state_dir_path: Path, **aws: Any) -> None:
    """Apply POLICY in one atomic transaction (replaces only outguard's own table).

    If it cannot be applied and that leaves no table of outguard's (at boot), the last
    applied ruleset is put back, or a fail-closed one; the command then fails."""
    if backend in IPTABLES_BACKENDS:
        raise click.UsageError(
            f"--backend {backend} is gone: outguard applies, confirms, rolls back and removes only"
            " its nftables table. For an iptables host, export the policy and deploy the export"
            f" there: `outguard compile {policy} --target iptables --out DIR`, then"
            f" `sh DIR/deploy.sh{'' if backend == 'iptables' else ' ' + backend[9:]}` as root"
            " (DIR/README.txt: persistence with netfilter-persistent, DIR/remove.sh to undo)")
    if backend == "aws":
        apply_aws(policy, **aws)
        return
    from outguard.apply.recovery import FailClosedError  # noqa: PLC0415
    from outguard.apply.run import apply_policy  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir_path)
    try:
        state.ensure()
        with Nft() as nft:
            report = apply_policy(policy, state, nft, confirm_timeout=confirm_timeout,
                                  spawn_watchdog=_spawn_watchdog(state_dir_path))
            if verify_after:
                from outguard.cli.verify_cmd import run_verify  # noqa: PLC0415

                if not run_verify(state, nft, 2.0, False, rollback=True):
                    sys.exit(1)
    except FailClosedError as exc:
        loud(exc.cause, exc.done)
        return
    except OutguardError as exc:
        fail(exc)
        return
    if report.settled:
        click.echo(f"warning: {report.settled}", err=True)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    where = f" in network namespace {netns}" if netns else ""
    click.echo(f"applied {policy} ({report.mode}, {report.rules} rules, policy"
               f" {report.policy_hash[:12]}){where}")
    if report.pending is not None:
        click.echo(f"rolls back in {confirm_timeout:g} s unless you run"
                   f" `{confirm_command(netns, state_dir_path)}`")
    if timings:
        click.echo(json.dumps({k: round(v, 2) for k, v in report.timings.items()}
                              | {"method": report.method}), err=True)


def loud(cause: OutguardError, done: str) -> None:
    """A policy that could not be applied, and what outguard put in its place: on stderr,
    where boot logs and the terminal show it; exit 1."""
    if isinstance(cause, PolicyError):
        for problem in cause.problems:
            click.echo(str(problem), err=True)
    else:
        click.echo(f"error: {cause}", err=True)
    bar = "!" * 72
    click.echo(f"{bar}\nTHE POLICY WAS NOT APPLIED.\n{done}\n{bar}", err=True)
    sys.exit(1)


@click.command()
@kernel_options
def confirm(netns: str | None, state_dir_path: Path) -> None:
    """Keep the policy applied with --confirm-timeout (fails if nothing waits)."""
    from outguard.apply.recovery import confirm as do_confirm  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    try:
        with Nft() as nft:
            click.echo(do_confirm(StateDir(state_dir_path), nft, time.time()))
    except OutguardError as exc:
        fail(exc)


@click.command()
@click.option("--remove", "allow_remove", is_flag=True,
              help="With no previous policy, remove outguard's table (opens all egress).")
@kernel_options
def rollback(allow_remove: bool, netns: str | None, state_dir_path: Path) -> None:
    """Restore the previously applied policy (with --remove: none, remove the table)."""
    from outguard.apply.lockdown import reinstate  # noqa: PLC0415
    from outguard.apply.recovery import rollback as do_rollback  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir_path)
    try:
        with Nft() as nft:
            message = do_rollback(state, nft, allow_remove=allow_remove)
            kept = reinstate(state, nft)
    except OutguardError as exc:
        fail(exc)
        return
    click.echo(message)
    if kept is not None:
        click.echo(kept, err=kept.startswith("WARNING"))
    if "removed" in message:
        _dns_hint(netns)


@click.command()
@click.option("--force", is_flag=True,
              help="Also remove a table this state directory did not apply.")
@kernel_options
def remove(force: bool, netns: str | None, state_dir_path: Path) -> None:
    """Remove outguard's table (and nothing else): egress is open afterwards."""
    from outguard.apply.recovery import remove as do_remove  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    try:
        with Nft() as nft:
            message = do_remove(StateDir(state_dir_path), nft, force=force)
    except OutguardError as exc:
        fail(exc)
        return
    click.echo(message)
    _dns_hint(netns)


def _dns_hint(netns: str | None) -> None:
    """`dns install` pointed this host at outguard's resolver, which the agent runs: without
    outguard it answers nobody."""
    from outguard.dns.install import MARK  # noqa: PLC0415

    pointed = [p for p in (Path("/etc/resolv.conf"),
                           Path("/etc/systemd/resolved.conf.d/outguard.conf"))
               if _mentions(p, MARK)]
    if pointed:
        # under --netns, /etc/resolv.conf is `ip netns exec`'s bind mount of the namespace's
        shown = f"/etc/netns/{netns}/resolv.conf" if netns and pointed[0] == Path(
            "/etc/resolv.conf") else str(pointed[0])
        click.echo(f"hint: {shown} still points this host at outguard's resolver (`outguard"
                   " dns install`); if the agent no longer runs, names stop resolving: run"
                   f" `outguard dns uninstall{' --netns ' + netns if netns else ''}`", err=True)


def _mentions(path: Path, mark: str) -> bool:
    try:
        return mark in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


@click.command()
@kernel_options
def restore(netns: str | None, state_dir_path: Path) -> None:
    """Commit the last applied ruleset again, from the state directory alone (for boot).

    No policy is read and no name resolved; an apply that was never confirmed is rolled back
    first. Fails when nothing was ever applied here."""
    from outguard.apply.lockdown import current_lockdown, reinstate  # noqa: PLC0415
    from outguard.apply.recovery import restore as do_restore  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir_path)
    where = f" in network namespace {netns}" if netns else ""
    try:
        with Nft() as nft:
            try:
                message = do_restore(state, nft, time.time())
            except StateError:
                # a lockdown put in with no policy: the boot brings it back until its end
                if state.snapshot("applied") is not None or current_lockdown(state) is None:
                    raise
                message = "nothing was applied here; a lockdown is in force"
            kept = reinstate(state, nft)
    except OutguardError as exc:
        fail(exc)
        return
    click.echo(message + where)
    if kept is not None:
        click.echo(kept, err=kept.startswith("WARNING"))


@click.command(name="_watchdog", hidden=True)
@click.option("--state-dir", type=click.Path(path_type=Path), required=True)
@click.option("--token", required=True)
@click.option("--deadline", type=float, required=True)
@click.option("--base", default=None)
def watchdog(state_dir: Path, token: str, deadline: float, base: str | None) -> None:
    """Roll back at DEADLINE unless the pending confirmation TOKEN was confirmed."""
    from outguard.apply.lockdown import reinstate  # noqa: PLC0415
    from outguard.apply.recovery import rollback as do_rollback  # noqa: PLC0415
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    state = StateDir(state_dir)
    while time.time() < deadline:
        try:
            pending, damaged = state.pending(), False
        except StateError:
            # a damaged file is no confirmation (confirm deletes it): keep waiting
            pending, damaged = None, (state_dir / "pending.json").exists()
        if not damaged and (pending is None or pending.token != token):
            return
        time.sleep(min(0.2, max(0.0, deadline - time.time())))
    for attempt in range(3):
        try:
            with Nft() as nft:
                message = do_rollback(state, nft, token=token, base=base)
                kept = reinstate(state, nft)
            if kept is not None:
                message = f"{message}; {kept}"
            break
        except OutguardError as exc:
            message = f"rollback failed (attempt {attempt + 1} of 3): {exc}"
            click.echo(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} watchdog: {message}")
            time.sleep(1)
    click.echo(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} watchdog: {message}")


def register(group: click.Group) -> None:
    from outguard.cli.plan import plan  # noqa: PLC0415
    from outguard.cli.status_cmd import status  # noqa: PLC0415

    for command in (apply, plan, confirm, rollback, remove, restore, status, watchdog):
        group.add_command(command)
