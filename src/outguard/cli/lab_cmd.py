"""`outguard lab up | down | demo`: the command-line face of `outguard.lab`.

Place in the data flow: registered on the main `outguard` click group (``cli.add_command(lab)``);
it only parses options, prints, and maps `OutguardError` to a message and exit status 1. Progress
goes to stderr, results (the up summary, the demo report) to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from outguard.errors import OutguardError
from outguard.lab import demo as lab_demo
from outguard.lab import lifecycle
from outguard.lab import topology as t


def _fail(exc: OutguardError) -> click.ClickException:
    notes = getattr(exc, "__notes__", [])
    return click.ClickException("\n".join([str(exc), *notes]))


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


def up_summary(result: lifecycle.UpResult) -> str:
    """What `lab up` built, and how to use it."""
    paths = t.LabPaths()
    rows = []
    for h in t.HOSTS:
        ports = ", ".join(f"{x.port}/{x.kind}" for x in t.LISTENERS if x.host == h.name)
        rows.append((h.fqdn, " ".join(h.addresses), ports))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [
        f"lab up in {result.seconds:.1f} s" + (" (rebuilt from scratch)" if result.rebuilt else ""),
        f"  {t.SERVER_NS}: the protected server, {t.SERVER_V4} {t.SERVER_V6}, "
        f"resolver {t.DNS_V4}",
        f"  {t.INET_NS}: the lab's internet:",
        *(f"    {a.ljust(w0)}  {b.ljust(w1)}  {c}" for a, b, c in rows),
        f"  runtime files and logs: {paths.root}/ (HTTPS CA: {paths.tls_cert})",
        "",
        "Try:",
        f"  ip netns exec {t.SERVER_NS} curl http://api.example.test/",
        f"  outguard apply --netns {t.SERVER_NS} --state-dir {paths.state_dir} "
        "examples/lab-policy.yaml",
        "Remove it with: outguard lab down (from a clone: .venv/bin/outguard lab down)",
    ]
    return "\n".join(lines)


@click.group("lab")
def lab() -> None:
    """A demo lab in network namespaces: a protected server and a small internet (needs root)."""


@lab.command("up")
def up_cmd() -> None:
    """Build the lab (rebuilding it from scratch if it exists) and wait until it answers."""
    try:
        result = lifecycle.up(say=_progress)
    except OutguardError as exc:
        raise _fail(exc) from exc
    click.echo(up_summary(result))


@lab.command("down")
def down_cmd() -> None:
    """Remove the lab: processes, namespaces, /etc/netns dirs, runtime files. Idempotent."""
    try:
        result = lifecycle.down()
    except OutguardError as exc:
        raise _fail(exc) from exc
    if result.anything:
        what = ", ".join(result.namespaces + result.daemons)
        click.echo(f"lab removed ({what}) in {result.seconds:.1f} s")
    else:
        click.echo("no lab was running; nothing left behind")


@lab.command("demo")
@click.option("--policy", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Policy to demo [default: examples/lab-policy.yaml].")
@click.option("--down", "down_after", is_flag=True,
              help="Remove the lab at the end instead of leaving it up.")
@click.option("--journey", is_flag=True,
              help="From no policy to enforce: learn the server's workload, suggest, simulate,"
                   " apply --verify --confirm-timeout, confirm, then a JNDI callback and a"
                   " lockdown (about 2 minutes).")
def demo_cmd(policy: Path | None, down_after: bool, journey: bool) -> None:
    """Fresh lab, apply the lab policy, run real clients, report what was blocked.

    Exits 1 if any step is not allowed/blocked as the policy says (with --journey: if any
    step of the journey does not show what it should).
    """
    if journey:
        if policy is not None:
            raise click.UsageError("--journey writes its own policy: drop --policy")
        _journey(down_after)
        return
    try:
        result = lab_demo.run_demo(
            lab_demo.find_policy(policy), down_after=down_after, say=_progress
        )
    except OutguardError as exc:
        raise _fail(exc) from exc
    click.echo(result.text, nl=False)
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    click.echo(f"({timings})", err=True)
    if not result.ok:
        sys.exit(1)


def _journey(down_after: bool) -> None:
    from outguard.lab import journey  # noqa: PLC0415

    try:
        result = journey.run_journey(down_after=down_after, say=click.echo)
    except OutguardError as exc:
        raise _fail(exc) from exc
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    click.echo(f"\njourney {'complete' if result.ok else 'FAILED: see the ✗ above'} ({timings})")
    if not down_after:
        click.echo("The lab stays up; remove it with: outguard lab down"
                   " (from a clone: .venv/bin/outguard lab down)")
    if not result.ok:
        sys.exit(1)


@lab.command("proxy-demo")
def proxy_demo_cmd() -> None:
    """A cloud API whose address moves, reached by name through the egress proxy both
    times, while the direct way out stays closed (`proxy: {only_egress: true}`).

    Needs a lab that is up (`outguard lab up`); applies its own policy there. Exits 1 if a
    step does not show what it should.
    """
    from outguard.lab import lifecycle, proxydemo  # noqa: PLC0415

    if not lifecycle.is_up():
        raise click.ClickException("the lab is not up: `outguard lab up` first")
    try:
        result = proxydemo.run(say=_progress)
    except OutguardError as exc:
        raise _fail(exc) from exc
    click.echo("\n".join(result.lines()))
    if not result.ok:
        sys.exit(1)
