"""`outguard proxy serve`: the egress proxy's command. Thin; the work is in `outguard.proxy`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from outguard.cli.common import enter_netns, fail
from outguard.errors import OutguardError


@click.group()
def proxy() -> None:
    """outguard's egress proxy: HTTP and CONNECT, decided by the policy, by name and user."""


@proxy.command()
@click.argument("policy", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--netns", metavar="NAME", help="Serve inside this network namespace.")
@click.option("--metrics-listen", metavar="HOST:PORT", default=None,
              help="Serve Prometheus metrics there (e.g. 127.0.0.1:9109).")
@click.option("--agent", is_flag=True, hidden=True,
              help="Run as `outguard run`'s child: policies on stdin, status on stdout.")
def serve(policy: Path, netns: str | None, metrics_listen: str | None, agent: bool) -> None:
    """Run the proxy of POLICY's `proxy:` section in the foreground until SIGINT/SIGTERM.

    Started as root, it binds its listeners, then runs as proxy.user (outguard-proxy, created
    if missing). One JSON line per decided request on stdout; counts on stderr at the end.
    SIGHUP reads POLICY again for new requests; open tunnels go on."""
    from outguard.pipeline import load_policy, lower_policy  # noqa: PLC0415
    from outguard.proxy import control  # noqa: PLC0415
    from outguard.proxy.serve import serve as run  # noqa: PLC0415

    enter_netns(netns)
    try:
        loaded = load_policy(policy)
        ruleset = lower_policy(loaded)
    except OutguardError as exc:
        fail(exc)
        return
    config = loaded.doc.proxy
    if config is None:
        raise click.UsageError(f"{policy} has no 'proxy:' section")
    def ready(text: str) -> None:
        click.echo(text, err=True)
        if agent:
            control.emit({"listening": list(config.listen), "transparent": config.transparent,
                          "transparent_port": config.transparent_port})

    try:
        asyncio.run(run(config, ruleset, on_ready=ready,
                        reload=lambda: lower_policy(load_policy(policy)),
                        metrics_listen=metrics_listen,
                        reload_text=(lambda text: lower_policy(load_policy(policy, text=text)))
                        if agent else None))
    except OutguardError as exc:
        fail(exc)
