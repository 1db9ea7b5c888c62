"""`outguard dns install|uninstall|log|serve`: the resolver's commands. Thin; the work is in
`outguard.dns`."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import asdict
from pathlib import Path

import click

from outguard.cli.common import fail, state_dir
from outguard.errors import OutguardError

STATE = click.option("--state-dir", "state_path", type=click.Path(path_type=Path), default=None,
                     help="outguard's state directory [default: /var/lib/outguard].")


@click.group()
def dns() -> None:
    """outguard's DNS resolver: the only way out for DNS."""


@dns.command()
@click.option("--listen", default="127.0.0.1:53", show_default=True, help="The resolver's address.")
@click.option("--netns", default=None, help="Only for this network namespace (/etc/netns/NAME).")
def install(listen: str, netns: str | None) -> None:
    """Point this host (systemd-resolved or resolv.conf) at outguard's resolver."""
    from outguard.dns import install as inst  # noqa: PLC0415
    from outguard.dns.config import parse_endpoint  # noqa: PLC0415

    try:
        done = inst.install(parse_endpoint(listen), netns=netns)
    except (OutguardError, ValueError) as exc:
        fail(exc if isinstance(exc, OutguardError) else inst.InstallError(str(exc)))
        return
    click.echo(f"{done.target}: {done.path} now points at {listen}")


@dns.command()
@click.option("--netns", default=None, help="Only for this network namespace.")
def uninstall(netns: str | None) -> None:
    """Undo `outguard dns install`."""
    from outguard.dns import install as inst  # noqa: PLC0415

    try:
        changed = inst.uninstall(netns=netns)
    except OutguardError as exc:
        fail(exc)
        return
    click.echo("\n".join(f"restored {p}" for p in changed) or "nothing was installed")


@dns.command()
@click.option("--blocked", is_flag=True, help="Only queries that were refused (or would be).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--netns", default=None, help="The namespace whose state directory to read.")
@STATE
def log(blocked: bool, as_json: bool, netns: str | None, state_path: Path | None) -> None:
    """DNS events: what was resolved, what was refused, and who asked."""
    from outguard.dns.events import read_events  # noqa: PLC0415

    for e in read_events(state_dir(netns, state_path), blocked_only=blocked):
        if as_json:
            click.echo(json.dumps(asdict(e)))
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time))
        who = f" pid {e.pid} {e.exe}" if e.pid else ""
        extra = f" → {', '.join(e.addresses)}" if e.addresses else ""
        flags = "".join(f"\n    ! {c}" for c in e.classifications)
        click.echo(f"{when} {e.action:<11} {e.qname} {e.qtype} {e.rcode} [{e.rule}] from"
                   f" {e.client}{who}{extra}{flags}")


@dns.command()
@click.argument("policy", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--netns", default=None, help="Serve inside this network namespace.")
@STATE
def serve(policy: Path, netns: str | None, state_path: Path | None) -> None:
    """Run the resolver for POLICY in the foreground (for testing; `outguard run` embeds it)."""
    from outguard.compile.lower import lower  # noqa: PLC0415
    from outguard.dns.server import serve_dns  # noqa: PLC0415
    from outguard.policy.load import load_policy  # noqa: PLC0415

    try:
        ruleset = lower(load_policy(policy))
    except OutguardError as exc:
        fail(exc)
        return
    if ruleset.dns is None:
        raise click.UsageError(f"{policy} has no 'dns:' section")
    settings = ruleset.dns

    async def main() -> None:
        handle = await serve_dns(settings, ruleset, state_dir=state_dir(netns, state_path),
                                 netns=netns)
        click.echo(f"outguard dns: listening on {settings.listen[0]}:{settings.listen[1]}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await handle.close()
        click.echo(json.dumps(asdict(handle.resolver.stats)))

    try:
        asyncio.run(main())
    except OutguardError as exc:
        fail(exc)
