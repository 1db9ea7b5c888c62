"""`outguard status`: the applied policy, its counters, and what is wrong (for people and for
monitoring: `--check` exits 2 when something is).

Thin: reads the kernel by netlink (table, counters, object names, rule digests — never set
elements, so it stays fast next to a 1M-element set) and prints `outguard.apply.status`.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from outguard.cli.common import fail, kernel_options
from outguard.clock import system_clock
from outguard.errors import OutguardError

CHECK_FAILED = 2


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--check", is_flag=True,
              help="Exit 2 when something is wrong: drift (or drift that cannot be told), no"
                   " table, the fail-closed table, rules that apply only in part, a pending"
                   " confirmation nothing will roll back, a `dns:` policy with no agent"
                   " running.")
@kernel_options
def status(as_json: bool, check: bool, netns: str | None, state_dir_path: Path) -> None:
    """Applied policy, mode, per-rule packet counters, pending confirmation, drift."""
    from outguard import agentstate  # noqa: PLC0415
    from outguard.apply.status import status as read_status  # noqa: PLC0415
    from outguard.kernel import counters as kc  # noqa: PLC0415
    from outguard.kernel.cgroups import CgroupLookup  # noqa: PLC0415
    from outguard.kernel.rules import rule_digests  # noqa: PLC0415
    from outguard.nftables.nft_verdict import log_figures  # noqa: PLC0415
    from outguard.state import StateDir  # noqa: PLC0415

    now = system_clock()  # one moment for every age, deadline and expiry shown
    cgroups = CgroupLookup()
    try:
        sock = kc.open_socket()
        with sock:
            present = kc.table_exists(sock=sock)
            counters = kc.read_counters(sock=sock) if present else {}
            objects = kc.table_objects(sock=sock) if present else None
            rules = rule_digests(sock=sock) if present else None
        report = agentstate.read(state_dir_path)
        info = read_status(StateDir(state_dir_path), counters, present, objects=objects,
                           rules=rules, agent=report, clock=lambda: now,
                           cgroup_exists=lambda p: cgroups(p) is not None)
    except OutguardError as exc:
        fail(exc)
        return
    # what the monitor could see: blocked, logged, not logged (over the per-flow log rate)
    info["logging"] = log_figures(counters)
    info["monitor"] = report
    info["fleet"] = None
    fleet_lines: list[str] = []
    if (state_dir_path / "fleet").is_dir():  # only then: the fleet's modules take time to load
        from outguard.fleet import status as fleet_status  # noqa: PLC0415

        info["fleet"] = fleet_status.read(state_dir_path)
        fleet_lines = fleet_status.lines(info["fleet"])
    if as_json:
        click.echo(json.dumps(info, indent=1))
    else:
        _print(info, present, now)
        for line in fleet_lines:
            click.echo(line)
    if check and info["problems"]:
        sys.exit(CHECK_FAILED)


def _print(info: dict[str, Any], present: bool, now: float) -> None:
    for problem in info["problems"]:
        click.echo(f"PROBLEM: {problem}")
    last = info["last_rollback"]
    if last:
        who = {"watchdog": "the watchdog", "hand": "hand",
               "settle": "outguard (a stale confirmation)"}.get(last["by"], last["by"])
        click.echo(f"rolled back by {who} at {last['at']}: {last['why']}"
                   f" (policy {str(last['from'])[:12]} → "
                   f"{str(last['to'])[:12] if last['to'] else 'no table'})")
    lockdown = info.get("lockdown")
    if lockdown:
        kept = f", keeping {', '.join(lockdown['keep'])}" if lockdown["keep"] else ""
        click.echo(f"LOCKDOWN until {lockdown['until_text']} ({lockdown['seconds_left']:.0f} s"
                   f" left{kept}): {lockdown['dropped']} packet(s) dropped")
    if info["policy_hash"] is None:
        click.echo("no outguard policy is applied" + (
            " (but an outguard table exists)" if present else ""))
        return
    what = "FAIL-CLOSED table" if info["fail_closed"] else "policy"
    click.echo(f"{what}  {info['policy_hash'][:12]}  applied {info['applied_at']}  mode"
               f" {info['mode']}\nsource  {info['source']}")
    drift = info["drift"]
    if present:
        click.echo("drift   " + ("unknown (apply again to record the rules)" if drift is None
                                 else f"{len(drift)} finding(s)" if drift else "none"))
    pending = info["pending_confirmation"]
    if pending:
        deadline = datetime.fromtimestamp(pending["deadline"], UTC).isoformat(timespec="seconds")
        state = {"waiting": f"rolls back in {pending['seconds_left']:.0f} s",
                 "expired": f"its deadline {deadline} passed and no watchdog rolled it back",
                 "orphaned": "its watchdog is gone"}[pending["state"]]
        click.echo(f"PENDING confirmation of policy {pending['policy_hash'][:12]}: {state}")
    for warning in info["warnings"]:
        click.echo(f"warning: {warning}")
    click.echo(f"{'rule':40} {'packets':>12} {'bytes':>14}")
    expired = info["expired"]
    for key, value in info["counters"].items():
        click.echo(f"{key:40} {value['packets']:>12} {value['bytes']:>14}"
                   + (f"  expired at {expired[key]}" if key in expired else ""))
    from outguard import agentstate  # noqa: PLC0415

    for line in agentstate.status_lines(info["logging"], info["monitor"], lambda: now,
                                        audit=info["mode"] == "audit"):
        click.echo(line)
