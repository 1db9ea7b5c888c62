"""`outguard explain`: the decision for one destination, the rule behind it, and why.

Thin: resolves the destination (a host name may have several addresses), the user and group,
then asks `decide` once per address.
"""

from __future__ import annotations

import grp
import json
import pwd
from pathlib import Path
from typing import Literal

import click

from outguard.compile.lower import lower, system_resolver
from outguard.decide import Decision, Flow, decide
from outguard.errors import OutguardError
from outguard.policy.addresses import parse_ip
from outguard.policy.load import load_policy
from outguard.policy.targets import parse_target


def _id(value: str | None, kind: Literal["user", "group"]) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid if kind == "user" else grp.getgrnam(value).gr_gid
    except KeyError:
        raise OutguardError(f"no {kind} {value!r} on this machine") from None


def run_explain(policy: Path, dest: str, port: int | None, proto: str, user: str | None,
                group: str | None, as_json: bool) -> None:
    ruleset = lower(load_policy(policy))
    uid, gid = _id(user, "user"), _id(group, "group")
    flow_proto: Literal["tcp", "udp", "icmp"] = "tcp" if proto == "tcp" else (
        "udp" if proto == "udp" else "icmp")
    if parse_ip(dest) is not None:
        addresses = [dest]
    else:
        try:
            name = parse_target(dest)
        except ValueError as exc:
            raise OutguardError(str(exc)) from None
        addresses = list(ruleset.resolved.get(name.value, ())) or system_resolver(name.value)
        if not addresses:
            raise OutguardError(f"{dest!r} does not resolve; give an address")
    results: list[tuple[str, Decision]] = []
    for address in addresses:
        flow = Flow(dst=address, port=port, proto=flow_proto, uid=uid, gid=gid,
                    name=None if address == dest else dest)
        results.append((address, decide(ruleset, flow)))
    if as_json:
        click.echo(json.dumps([{"destination": a, "action": d.action, "verdict": d.verdict,
                                "rule": d.rule, "reason": d.reason} for a, d in results], indent=1))
        return
    for address, d in results:
        shown = f"{dest} ({address})" if address != dest else dest
        target = f"{shown} port {port}/{proto}" if port else f"{shown} {proto}"
        click.echo(f"{d.action.upper():5}  {target}: {d.verdict} by {d.rule}\n       {d.reason}")
