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


def _netns(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A namespace name that stays inside /etc/netns and the state directory."""
    if value is None:
        return None
    from outguard.dns.install import InstallError, check_netns  # noqa: PLC0415

    try:
        return check_netns(value)
    except InstallError as exc:
        raise click.BadParameter(str(exc)) from None


STATE = click.option("--state-dir", "state_path", type=click.Path(path_type=Path), default=None,
                     help="outguard's state directory [default: /var/lib/outguard, or"
                          " /var/lib/outguard/netns/NAME with --netns].")


@click.group()
def dns() -> None:
    """outguard's DNS resolver: the only way out for DNS."""


@dns.command()
@click.option("--listen", default="127.0.0.1:53", show_default=True,
              help="The resolver's address (the policy's dns.listen).")
@click.option("--netns", default=None, callback=_netns,
              help="Only for this network namespace (/etc/netns/NAME).")
def install(listen: str, netns: str | None) -> None:
    """Point this host (systemd-resolved or resolv.conf) at outguard's resolver.

    What was there is kept (resolv.conf.outguard-saved) and put back by `uninstall`."""
    from outguard.dns import install as inst  # noqa: PLC0415
    from outguard.policy.dnsconf import parse_endpoint  # noqa: PLC0415

    try:
        endpoint = parse_endpoint(listen)
    except ValueError as exc:
        fail(inst.InstallError(f"--listen: {exc}"))
        return
    try:
        done = inst.install(endpoint, netns=netns)
    except OutguardError as exc:
        fail(exc)
        return
    click.echo(f"{done.target}: {done.path} now points at {listen}")
    if done.saved is not None:
        click.echo(f"the previous configuration is kept in {done.saved}")
    if done.target == "systemd-resolved":
        click.echo("run `systemctl restart systemd-resolved` to make it take effect")


@dns.command()
@click.option("--netns", default=None, callback=_netns, help="Only for this network namespace.")
def uninstall(netns: str | None) -> None:
    """Undo `outguard dns install`: put back what it replaced."""
    from outguard.dns import install as inst  # noqa: PLC0415

    try:
        changed = inst.uninstall(netns=netns)
    except OutguardError as exc:
        fail(exc)
        return
    click.echo("\n".join(str(c) for c in changed) or "nothing was installed")


@dns.command()
@click.option("--blocked", is_flag=True, help="Only queries that were refused (or would be).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--netns", default=None, callback=_netns,
              help="The namespace whose state directory to read.")
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
@click.option("--netns", default=None, callback=_netns, help="Serve inside this network namespace.")
@STATE
def serve(policy: Path, netns: str | None, state_path: Path | None) -> None:
    """Run the resolver for POLICY in the foreground (`outguard run` embeds it).

    Started as root, the resolver binds its address, then runs as dns.user (outguard-dns,
    created if missing); its counters are printed as JSON when it stops (SIGINT, SIGTERM)."""
    from outguard.dns.supervisor import serve_dns  # noqa: PLC0415
    from outguard.pipeline import load_policy, lower_policy  # noqa: PLC0415

    try:
        ruleset = lower_policy(load_policy(policy))
    except OutguardError as exc:
        fail(exc)
        return
    if ruleset.dns is None:
        raise click.UsageError(f"{policy} has no 'dns:' section")
    settings = ruleset.dns

    async def main() -> None:
        handle = await serve_dns(settings, ruleset, state_dir=state_dir(netns, state_path),
                                 netns=netns)
        click.echo(f"outguard dns: listening on {settings.listen[0]}:{settings.listen[1]}"
                   f" as {handle.settings.user} (pid {handle.pid})")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await handle.close()
        click.echo(json.dumps(asdict(handle.stats())))

    try:
        asyncio.run(main())
    except OutguardError as exc:
        fail(exc)
