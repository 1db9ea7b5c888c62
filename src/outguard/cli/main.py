"""The `outguard` command: policy commands that only read (check, schema, compile, explain)
and, from `kernel_cmds`, the ones that change the kernel. Imports stay inside commands so that
start-up costs only what a command needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from outguard import __version__
from outguard.cli.common import fail, kernel_options
from outguard.errors import KernelError, OutguardError

# pydantic looks for plugins through every installed package's entry points (~10 ms of each
# command's start-up); outguard uses none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

POLICY = click.argument("policy", type=click.Path(path_type=Path, dir_okay=False))

# Commands whose modules are heavy (the lab, the agent, feeds, DNS) are imported only when they
# run: name → "module:attribute". Add new command groups here, not as imports.
LAZY_COMMANDS: dict[str, str] = {
    "lab": "outguard.cli.lab_cmd:lab",
    "run": "outguard.cli.monitor_cmds:run",
    "events": "outguard.cli.monitor_cmds:events",
    "top": "outguard.cli.monitor_cmds:top",
    "feeds": "outguard.cli.feeds_cmd:feeds",
    "dns": "outguard.cli.dns_cmd:dns",
    "learn": "outguard.cli.learn_cmd:learn",
    "flows": "outguard.cli.learn_cmd:flows",
    "lockdown": "outguard.cli.lockdown_cmd:lockdown",
    "verify": "outguard.cli.verify_cmd:verify",
    "suggest": "outguard.cli.journey_cmds:suggest",
    "simulate": "outguard.cli.journey_cmds:simulate",
    "doctor": "outguard.cli.doctor_cmd:doctor",
    "proxy": "outguard.cli.proxy_cmd:proxy",
    "fleet": "outguard.cli.fleet_cmd:fleet",
}
# Their help's first paragraph, so that `outguard --help` lists them without importing them
# (the lab alone took ~470 ms); tests/cli/test_main.py keeps these equal to the commands' own.
LAZY_HELP: dict[str, str] = {
    "lab": "A demo lab in network namespaces: a protected server and a small internet (needs"
           " root).",
    "run": "The agent: apply POLICY, then monitor what it blocks until SIGTERM.",
    "events": "Incidents the agent recorded, the most recent first.",
    "top": "A live view of the top blocked processes and destinations.",
    "feeds": "Threat feeds: fetch, validate and sync blocklists (`@feed:NAME` in a policy).",
    "dns": "outguard's DNS resolver: the only way out for DNS.",
    "learn": "Learning mode: record every new outbound flow, with its process and DNS names.",
    "flows": "The learned flows (`outguard learn`, `learn: true`), the most recently seen"
             " first.",
    "lockdown": "Drop every new outbound connection for a while, except loopback, established"
                " connections (your SSH session), outguard's resolver to its upstreams and the"
                " --keep rules.",
    "verify": "Test the applied policy in the kernel: a probe per rule (as its user), and one"
              " for the default; exit 1 when any outcome differs from the policy.",
    "suggest": "A reviewable policy from the learned flows.",
    "simulate": "Replay the learned flows through POLICY: what would it block? Exit 1 if"
                " anything that got out when learned and is not classified would be.",
    "doctor": "Check the host: kernel, state directory, ports, units.",
    "proxy": "outguard's egress proxy: HTTP and CONNECT, decided by the policy, by name and user.",
    "fleet": "Many hosts, one PostgreSQL: the fleet API server and the operator's commands.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with the lazy commands' help taken from LAZY_HELP."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in LAZY_COMMANDS and name not in self.commands:
                stand_in = click.Command(name, help=LAZY_HELP[name])  # click's own shortening
                rows.append((name, stand_in.get_short_help_str(limit)))
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            import importlib  # noqa: PLC0415

            module, _, attr = LAZY_COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="outguard")
def cli() -> None:
    """outguard: default-deny egress filtering, enforced by nftables."""


@cli.command()
@POLICY
@click.option("--strict", is_flag=True, help="Fail (exit 1) on warnings too.")
@click.option("--netns", metavar="NAME",
              help="Check inside this network namespace (its resolv.conf, its kernel).")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None,
              help="Where feeds' last good copies are [default: /var/lib/outguard, or"
                   " /var/lib/outguard/netns/NAME with --netns].")
def check(policy: Path, strict: bool, netns: str | None, state_dir: Path | None) -> None:
    """Validate POLICY: every error at once as FILE:LINE:COL: path: message, then warnings.

    As root, the kernel also checks the ruleset apply would send (nothing is committed)."""
    from outguard.cli.check import run_check  # noqa: PLC0415
    from outguard.cli.common import enter_netns  # noqa: PLC0415
    from outguard.cli.common import state_dir as default_state_dir  # noqa: PLC0415

    enter_netns(netns)
    run_check(policy, strict, default_state_dir(netns, state_dir), netns)


@cli.command()
def schema() -> None:
    """Print the policy's JSON Schema (for editors)."""
    from outguard.policy.schema import policy_schema  # noqa: PLC0415

    click.echo(json.dumps(policy_schema(), indent=2))


@cli.command(name="compile")
@POLICY
@click.option("--json", "as_json", is_flag=True, help="Print the nftables JSON batch instead.")
@click.option("--target", default=None, metavar="TARGET",
              help="Export for another firewall (iptables, ufw, ...); fidelity report on stderr.")
@click.option("--strict", is_flag=True, help="With --target: fail unless every rule is exact.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="With --target: write the files into this directory instead of stdout.")
@click.option("-o", "--option", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="With --target: a target option (`-o help` lists them).")
@kernel_options
def compile_cmd(policy: Path, as_json: bool, target: str | None, strict: bool,
                out_dir: Path | None, option_pairs: tuple[str, ...], netns: str | None,
                state_dir_path: Path) -> None:
    """Print the nftables ruleset POLICY compiles to (nothing is applied).

    Host names resolve as they would for `apply` (with --netns: through that namespace's
    /etc/netns/NAME/resolv.conf); feeds come from the state directory's last good copies."""
    feed_dir = state_dir_path / "feeds"
    if target is not None:
        from outguard.cli.export_cmd import run_export  # noqa: PLC0415

        run_export(policy, target, strict, out_dir, feed_dir, option_pairs)
        return
    from outguard.nftables import nft_text, nft_tx  # noqa: PLC0415
    from outguard.pipeline import compile_policy, load_policy  # noqa: PLC0415

    try:
        loaded = load_policy(policy, feed_dir=feed_dir)
        cmds = nft_tx.full(compile_policy(loaded)[1])
    except OutguardError as exc:
        fail(exc)
        return
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(nft_tx.document(cmds), indent=1))
    else:
        click.echo(nft_text.script(cmds), nl=False)


@cli.command()
@POLICY
@click.option("--to", "dest", required=True, metavar="HOST_OR_IP", help="Destination.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Destination port [default: every port, grouped by decision].")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]), default=None,
              help="Protocol [default: tcp and udp, each answered].")
@click.option("--user", default=None, help="User name or uid of the process.")
@click.option("--group", default=None, help="Group name or gid of the process.")
@click.option("--json", "as_json", is_flag=True)
@kernel_options
def explain(policy: Path, dest: str, port: int | None, proto: str | None, user: str | None,
            group: str | None, as_json: bool, netns: str | None, state_dir_path: Path) -> None:
    """Which rule decides a destination, and why.

    With a `dns:` section a host name is decided by name, as outguard's resolver and the
    kernel decide it, without resolving it; without one, per address it resolves to."""
    from outguard.cli.explain import run_explain  # noqa: PLC0415
    from outguard.kernel.netns import local_addresses  # noqa: PLC0415

    try:
        # the host's own addresses are loopback to the kernel (`oif lo`): decide must know them
        local = local_addresses()
    except KernelError as exc:
        click.echo(f"warning: the host's own addresses are unknown ({exc}): traffic to them is"
                   " decided by the rules, though the kernel accepts it as loopback", err=True)
        local = []
    try:
        run_explain(policy, dest, port, proto, user, group, as_json, state_dir_path / "feeds",
                    local, state_dir_path)
    except OutguardError as exc:
        fail(exc)


def _register() -> None:
    from outguard.cli import kernel_cmds  # noqa: PLC0415

    kernel_cmds.register(cli)


_register()


def main() -> None:
    cli(prog_name="outguard")
