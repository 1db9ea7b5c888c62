"""The `--fleet` options of `outguard run`, and what they change in how the agent starts.

Thin: options and the start's choice of policy; the fleet agent is `fleet.agent`, started by
`service.runner`. With `--fleet`, the policy the agent applies at its start is the last one
the fleet server sent and this host confirmed (STATE_DIR/fleet/policy.yaml) — with or without
the server, which is what keeps a host enforcing when it starts while the server is away. A
POLICY given on the command line is only the first one, used until the fleet sends another.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def fleet_options(fn: F) -> F:
    options = [
        click.option("--fleet", "fleet_url", metavar="URL", default=None,
                     help="Follow this fleet server (https://...): its policy, reports,"
                          " incidents and flows through a local outbox."),
        click.option("--enroll", "enroll_token", metavar="TOKEN", default=None,
                     help="First start with --fleet: enrol with this one-time token; the"
                          " credential is kept in STATE_DIR/fleet (0600)."),
        click.option("--fleet-ca", type=click.Path(path_type=Path, dir_okay=False, exists=True),
                     default=None, help="Verify the fleet server against this CA file only."),
        click.option("--fleet-host", metavar="NAME", default=None,
                     help="The name to enrol with [default: the hostname, -NETNS with --netns]."),
        click.option("--fleet-confirm-timeout", type=click.FloatRange(5, 3600), default=30.0,
                     show_default=True, metavar="SECONDS",
                     help="A pushed policy is rolled back unless the server is reached from"
                          " under it within this time."),
        click.option("--fleet-no-verify", is_flag=True,
                     help="Do not verify a pushed policy in the kernel after applying it."),
        click.option("--fleet-outbox-bound", type=click.IntRange(1, 10_000_000),
                     default=None, metavar="N",
                     help="Items (per kind) the outbox holds while the server is away; beyond"
                          " it new ones are dropped and counted [default: 100000]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def fleet_setup(kw: dict[str, Any], policy: Path | None, no_apply: bool, netns: str | None,
                state_dir: Path) -> tuple[Any, Path | None, bool]:
    """(FleetOptions or None, the policy to apply at the start, whether to apply): pops the
    --fleet options out of `kw`."""
    from outguard.fleet.agent import FleetOptions  # noqa: PLC0415
    from outguard.fleet.client import FleetError, default_host, load_credential  # noqa: PLC0415
    from outguard.fleet.local import last_good  # noqa: PLC0415
    from outguard.fleet.outbox import DEFAULT_BOUND  # noqa: PLC0415
    from outguard.state import write_private  # noqa: PLC0415

    url, token = kw.pop("fleet_url"), kw.pop("enroll_token")
    ca, host = kw.pop("fleet_ca"), kw.pop("fleet_host")
    confirm, no_verify = kw.pop("fleet_confirm_timeout"), kw.pop("fleet_no_verify")
    bound = kw.pop("fleet_outbox_bound")
    if url is None:
        if token is not None or ca is not None:
            raise click.UsageError("--enroll and --fleet-ca go with --fleet URL")
        if policy is None and not no_apply:
            raise click.UsageError("give the POLICY to apply, or --no-apply to serve what is"
                                   " applied in the state directory")
        return None, policy, not no_apply
    import logging  # noqa: PLC0415

    # httpx logs every request at INFO: a long-poll and a batch post every few seconds
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        enrolled = load_credential(state_dir) is not None
    except FleetError as exc:
        raise click.UsageError(str(exc)) from exc
    if not enrolled and token is None:
        raise click.UsageError(f"this host has not enrolled with a fleet ({state_dir}/fleet has"
                               " no credential): give --enroll TOKEN the first time")
    good = last_good(state_dir)
    if policy is not None and not good.exists():  # the first policy, until the fleet's
        good.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(good, policy.read_text())
    opts = FleetOptions(url=url, enroll=None if enrolled else token, ca=ca,
                        host=host or default_host(netns), verify=not no_verify,
                        confirm_timeout=confirm,
                        outbox_bound=bound if bound is not None else DEFAULT_BOUND)
    if good.exists() and not _confirmation_waits(state_dir):
        return opts, good, not no_apply
    # nothing yet: serve what is applied until the fleet sends one; or a pushed version still
    # waits for its confirmation (the agent stopped inside the window): an apply now would be
    # refused, and the fleet agent takes that apply over when the server gives it the version
    return opts, None, False


def _confirmation_waits(state_dir: Path) -> bool:
    import time  # noqa: PLC0415

    from outguard.apply.recovery import watchdog_alive  # noqa: PLC0415
    from outguard.errors import OutguardError  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    try:
        pending = StateDir(state_dir).pending()
    except OutguardError:
        return False
    return pending is not None and time.time() < pending.deadline and watchdog_alive(pending)
