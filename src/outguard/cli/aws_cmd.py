"""`outguard apply POLICY --backend aws --security-group sg-…`: the options and the printing.

Thin: loading and lowering the policy, then `export.aws_apply.reconcile`, which does the work.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from outguard.cli.common import fail
from outguard.errors import OutguardError

F = TypeVar("F", bound=Callable[..., Any])


def aws_options(fn: F) -> F:
    """--security-group, --region, --endpoint-url, --dry-run, --revoke-foreign (only with
    --backend aws)."""
    options = [
        click.option("--security-group", "aws_group", metavar="SG_ID",
                     help="aws: the security group whose egress rules become the policy."),
        click.option("--region", "aws_region", default=None, help="aws: the region."),
        click.option("--endpoint-url", "aws_endpoint", default=None,
                     help="aws: another EC2 endpoint (e.g. a local moto server)."),
        click.option("--dry-run", "aws_dry_run", is_flag=True,
                     help="aws: print what would change, change nothing."),
        click.option("--revoke-foreign", "aws_revoke_foreign", is_flag=True,
                     help="aws: also revoke egress rules to other security groups or prefix"
                          " lists (kept and reported by default)."),
    ]
    wrapped: Any = fn
    for option in reversed(options):
        wrapped = option(wrapped)
    return cast(F, wrapped)


def apply_aws(policy: Path, *, aws_group: str | None, aws_region: str | None,
              aws_endpoint: str | None, aws_dry_run: bool, aws_revoke_foreign: bool = False) -> None:
    from outguard.export import aws_apply  # noqa: PLC0415
    from outguard.pipeline import load_policy  # noqa: PLC0415
    from outguard.ruleset.lower import lower  # noqa: PLC0415

    if not aws_group:
        raise click.UsageError("--backend aws needs --security-group sg-…")
    try:
        loaded = load_policy(policy)
        result = aws_apply.reconcile(aws_apply.client(aws_region, aws_endpoint), aws_group,
                                     lower(loaded), dry_run=aws_dry_run,
                                     revoke_foreign=aws_revoke_foreign)
    except OutguardError as exc:
        fail(exc)
        return
    for warning in [*loaded.warnings, *result.ledger.warnings]:
        click.echo(f"warning: {warning}", err=True)
    for item in result.ledger.fidelity():
        if item.level != "exact":
            click.echo(f"{item.level}: {item.rule}: {item.how}", err=True)
    todo = result.plan
    for atom, desc in sorted(todo.authorize.items()):
        click.echo(f"+ {atom.proto} {atom.from_port}-{atom.to_port} {atom.cidr} ({desc})")
    for atom, rule_id in sorted(todo.revoke.items()):
        click.echo(f"- {atom.proto} {atom.from_port}-{atom.to_port} {atom.cidr} ({rule_id})")
    for rule_id in todo.other:
        click.echo(f"- {rule_id} (a rule outguard does not write)")
    verb = "would change" if aws_dry_run else "changed"
    click.echo(f"{aws_group}: {'up to date' if todo.empty else verb + ': ' + todo.summary()}")
    click.echo("note: the network-ACL and Network Firewall parts are in `outguard compile"
               " --target aws`; they are not applied here", err=True)
