"""outguard's fail-closed table: what a namespace gets when a policy cannot be applied, no table of
ours is in the kernel, and no applied snapshot can be put back (a first apply at boot, with no
DNS yet, or a policy the kernel refuses).

Leaving nothing would leave egress open. The fail-closed table lets out only what the host needs
to get its real policy applied a moment later:
- loopback, `ct state established,related`, IPv6 neighbour discovery (every outguard table does);
- DNS to the resolvers: with a `dns:` section (the policy loaded) its upstreams on their ports,
  from the resolver's user if it exists; else the name servers of /etc/resolv.conf on port 53
  (loopback ones are covered by the loopback rule: `dns install` points resolv.conf there);
- everything else is logged (NFLOG, prefix `og:default`, counter `default`) and dropped.
An audit policy blocks nothing, so its failure leaves no table. The table is recorded as the
applied snapshot with the reason (`Snapshot.fallback`): `status` shows it, `restore` keeps it
at the next boot, and the next apply that works replaces it.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from outguard.apply.transact import Kernel
from outguard.errors import OutguardError
from outguard.policy import accounts
from outguard.policy.model import PolicyDoc
from outguard.state import StateDir


def resolv_conf_servers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    """Name servers of resolv.conf that are plain addresses off the loopback."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1])
            except ValueError:
                continue  # a scope id (fe80::1%eth0) or garbage
            if not addr.is_loopback and str(addr) not in out:
                out.append(str(addr))
    return out


def _dns_rules(doc: PolicyDoc | None, servers: list[str]) -> list[dict[str, object]]:
    if doc is not None and doc.dns is not None:
        from outguard.policy.dnsconf import parse_endpoint  # noqa: PLC0415

        # not created yet: the upstreams are reachable for every user
        who = doc.dns.user
        user: dict[str, object] = {"for": {"user": who}} if accounts.has_user(who) else {}
        return [{"name": f"fail-closed-dns-{i}", "to": [addr], "ports": [port], **user,
                 "comment": "fail-closed: outguard's resolver to its upstream"}
                for i, (addr, port) in enumerate(map(parse_endpoint, doc.dns.upstreams), 1)]
    return [{"name": f"fail-closed-dns-{i}", "to": [addr], "ports": [53],
             "comment": "fail-closed: a name server of resolv.conf"}
            for i, addr in enumerate(servers, 1)]


def _short(cause: OutguardError) -> str:
    """The cause in a line or two: "nftables refused …:" is followed by nft's own error."""
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    if not lines:
        return type(cause).__name__
    return " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]


def fail_closed_text(doc: PolicyDoc | None, servers: list[str]) -> str:
    """The fail-closed table as a policy (JSON is YAML): it goes through the same pipeline
    and state as any policy."""
    policy = {"version": 1, "mode": "enforce", "allow": _dns_rules(doc, servers),
              "options": {"nflog_group": doc.options.nflog_group if doc is not None else 0}}
    return json.dumps(policy, indent=1) + "\n"


def fail_closed(state: StateDir, kernel: Kernel, path: Path, cause: OutguardError,
                text: str | None, *, enforced: bool = False) -> str | None:
    """Commit and record the fail-closed table (the caller holds the lock and checked that
    no table of ours exists, and that no applied snapshot does or it could not be put back).
    Returns what was done, or None for an audit policy, unless egress was `enforced` until
    now (the applied snapshot that could not be put back was an enforcing one)."""
    from outguard.apply.applyplan import load, make_plan  # noqa: PLC0415 - the planner imports us
    from outguard.apply.executor import execute  # noqa: PLC0415

    try:
        doc: PolicyDoc | None = load(path, state, None, text).doc
    except OutguardError:
        doc = None  # the policy does not load: nothing of it can be trusted
    if doc is not None and doc.mode == "audit" and not enforced:
        return None
    servers = resolv_conf_servers()
    plan = make_plan(path, state, kernel, text=fail_closed_text(doc, servers),
                     resolver=lambda _name: [])
    execute(plan, kernel, fallback=f"{path} could not be applied: {_short(cause)}")
    dns = [r["to"][0] for r in _dns_rules(doc, servers)]  # type: ignore[index]
    return ("FAIL-CLOSED: committed outguard's fail-closed table: only loopback, established"
            " connections and DNS" + (f" to {', '.join(map(str, dns))}" if dns else " (none:"
                                      " no name server found)") + " may leave; everything else"
            " is dropped and logged. Fix the policy and apply it again.")
