"""`outguard check`: load the policy (every error at once), add what this machine says (units,
names, the NFLOG group), and — as root — have the kernel check the ruleset `apply` would send
(libnftables' dry run, like `nft -c`: nothing is committed).

Exit 0: valid (warnings may follow); 1: errors, or warnings with `--strict`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from outguard.cli.common import fail
from outguard.errors import OutguardError, PolicyError, Problem
from outguard.policy.loaded import Policy

# Addresses for host names in the dry run: what a name resolves to changes nothing the kernel
# could refuse, and the dry run must not wait for DNS.
_PLACEHOLDER = {4: "192.0.2.1", 6: "2001:db8::1"}


def kernel_refusal(policy: Policy, netns: str | None = None) -> str | None:
    """What the kernel (of network namespace `netns`; None: this one) says to the ruleset
    `apply` would send, in check mode (None: it takes it, or it cannot be asked here: not root,
    no libnftables, a ruleset only nft text holds)."""
    if os.geteuid() != 0:
        return None
    from outguard.kernel.libnft import Nft  # noqa: PLC0415
    from outguard.nftables import nft_tx  # noqa: PLC0415
    from outguard.pipeline import compile_policy  # noqa: PLC0415

    _ruleset, compiled = compile_policy(policy, resolver=lambda _n: list(_PLACEHOLDER.values()))
    if compiled.needs_text:  # `socket cgroupv2`: nft 1.0.6's JSON cannot say it
        return None
    document = nft_tx.document(nft_tx.full(compiled))
    try:
        with Nft(netns) as nft:
            nft.check_json(document)
    except OSError:
        return None  # libnftables is not installed: apply would say so
    except OutguardError as exc:
        return str(exc)
    return None


def run_check(policy_path: Path, strict: bool, state_dir: Path,
              netns: str | None = None) -> None:
    from outguard.pipeline import load_policy  # noqa: PLC0415
    from outguard.policy.host import machine_warnings  # noqa: PLC0415
    from outguard.ruleset.reach import HostView, reach_warnings  # noqa: PLC0415

    try:
        policy = load_policy(policy_path, feed_dir=state_dir / "feeds")
        # what this machine says: units, names, the NFLOG group, and what the host itself
        # must reach (its name servers, its feeds' hosts)
        machine = machine_warnings(policy) + reach_warnings(policy, HostView.of_netns(netns))
        # a name that does not resolve now says more than "resolved at apply time": one line
        unresolved = {w.path for w in machine if w.message.startswith("host name ")}
        warnings = sorted([w for w in policy.warnings
                           if not (w.path in unresolved and w.message.startswith("host name "))]
                          + machine, key=lambda w: (w.file != str(policy_path), w.line, w.col))
        refusal = kernel_refusal(policy)
        if refusal is not None:
            raise PolicyError([Problem(str(policy_path), 1, 1, "",
                                       f"the kernel refuses the ruleset: {refusal}")])
    except OutguardError as exc:
        fail(exc)
        return
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    rules = len(policy.doc.allow) + len(policy.doc.deny)
    summary = f"{rules} rules, {len(policy.doc.lists)} lists, {len(warnings)} warnings"
    if strict and warnings:
        click.echo(f"{policy_path}: failed --strict: {len(warnings)} warning(s), no error"
                   f" ({summary})", err=True)
        sys.exit(1)
    click.echo(f"{policy_path}: ok ({summary})")
