"""The `gcp` export target: VPC firewall rules (Compute REST `Firewall` resources, EGRESS) and
host names as global network firewall policy rules (`match.destFqdns`, the REST name of
gcloud's `--dest-fqdns`).

Place in the data flow: `Ruleset` → `view.views` → two JSON files of REST request bodies.

VPC firewall rules are evaluated by priority, lowest first; at equal priority deny wins. Deny
rules get 1000+i, allow rules 2000+i, and a deny-all at 65534 sits above the implied allow-egress
rule (65535), so the order is outguard's. A rule holds IPv4 or IPv6 ranges, never both.
"""

from __future__ import annotations

import json
import re
from typing import Any

from outguard.export.fidelity import Export
from outguard.export.view import (
    ALL_V4,
    ALL_V6,
    Ledger,
    RuleView,
    chunks,
    common_notes,
    default_note,
    port_texts,
    views,
)
from outguard.ruleset.ir import Ruleset

DENY_BASE, ALLOW_BASE, DEFAULT_PRIORITY = 1000, 2000, 65534
MAX_RANGES = 5000  # destination ranges per rule (Compute API reference)
MAX_FQDNS = 100  # destination FQDNs per firewall policy rule


def gcp_name(text: str) -> str:
    """An RFC 1035 resource name: [a-z]([-a-z0-9]{0,61}[a-z0-9])?"""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = ("og-" + name if not name.startswith("og-") else name)[:63].rstrip("-")
    return name


def _l4(view: RuleView, version: int) -> list[dict[str, Any]]:
    if view.proto == "icmp":
        return [{"IPProtocol": "icmp" if version == 4 else "58"}]
    if view.proto == "any" and not view.ports:
        return [{"IPProtocol": "all"}]
    protos = ["tcp", "udp"] if view.proto == "any" else [view.proto]
    ports = port_texts(view.ports)
    return [{"IPProtocol": p} | ({"ports": ports} if ports else {}) for p in protos]


def _firewalls(ruleset: Ruleset, ledger: Ledger) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    counters = {"deny": DENY_BASE, "allow": ALLOW_BASE}
    for view in views(ruleset):
        if not common_notes(view, ledger, "a VPC firewall rule", mode=ruleset.mode):
            continue
        section = view.rule.section
        for version in (4, 6):
            ranges = list(view.cidrs(version))
            parts = list(chunks(ranges, MAX_RANGES))
            if len(parts) > 1:
                ledger.warn(f"{view.key}: {len(ranges)} IPv{version} ranges split into"
                            f" {len(parts)} rules of at most {MAX_RANGES}")
            for i, part in enumerate(parts):
                name = gcp_name(f"og-{section}-{view.rule.name}-v{version}"
                                + (f"-{i}" if i else ""))
                out.append({
                    "name": name, "network": "global/networks/NETWORK", "direction": "EGRESS",
                    "priority": counters[section], "destinationRanges": list(part),
                    "denied" if view.deny else "allowed": _l4(view, version),
                    "description": (view.rule.comment or view.key)[:400],
                    "logConfig": {"enable": view.deny}})
        counters[section] += 1
    if counters["deny"] > ALLOW_BASE or counters["allow"] >= DEFAULT_PRIORITY:
        ledger.warn("more rules than outguard's priority bands hold (deny 1000-1999, allow"
                    " 2000-65533): priorities overlap")
    if ruleset.mode != "audit":
        for version, cidr in ((4, ALL_V4), (6, ALL_V6)):
            out.append({"name": f"og-default-deny-v{version}", "network": "global/networks/NETWORK",
                        "direction": "EGRESS", "priority": DEFAULT_PRIORITY,
                        "destinationRanges": [cidr], "denied": [{"IPProtocol": "all"}],
                        "description": "outguard default: deny every other egress",
                        "logConfig": {"enable": True}})
    return out


def _fqdn_rules(ruleset: Ruleset, ledger: Ledger) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    counters = {"deny": DENY_BASE, "allow": ALLOW_BASE}
    for view in views(ruleset):
        if (view.owner() is not None and not view.deny) or (ruleset.mode == "audit" and view.deny):
            continue
        if view.wildcards:
            ledger.approx(view.key, "wildcards " + ", ".join(view.wildcards) + " left out:"
                          " GCP FQDN objects take no wildcards")
            if not view.has_addresses and not view.names:
                ledger.drop(view.key, "only wildcard names, which GCP firewall rules cannot hold")
        if not view.names:
            continue
        section = view.rule.section
        layer4 = [{"ipProtocol": c["IPProtocol"]} | ({"ports": c["ports"]} if "ports" in c else {})
                  for c in _l4(view, 4)]
        for i, part in enumerate(chunks(view.names, MAX_FQDNS)):
            out.append({
                "priority": counters[section], "action": "deny" if view.deny else "allow",
                "direction": "EGRESS", "ruleName": gcp_name(f"og-{section}-{view.rule.name}-fqdn"
                                                            + (f"-{i}" if i else "")),
                "description": (view.rule.comment or view.key)[:400],
                "match": {"destFqdns": list(part), "layer4Configs": layer4},
                "enableLogging": view.deny})
        counters[section] += 1
        ledger.approx(view.key, "names in a network firewall policy rule (destFqdns), resolved"
                                " by Cloud DNS; the policy must be associated with the network")
    return out


def export_gcp(ruleset: Ruleset) -> Export:
    ledger = Ledger()
    firewalls = _firewalls(ruleset, ledger)
    fqdn = _fqdn_rules(ruleset, ledger)
    default_note(ruleset, ledger, "a VPC firewall rule", logs="firewall rules logging")
    files = {"gcp-firewall-rules.json": json.dumps(firewalls, indent=2) + "\n"}
    if fqdn:
        files["gcp-network-firewall-policy-rules.json"] = json.dumps(fqdn, indent=2) + "\n"
        ledger.warn("a network firewall policy is evaluated before the VPC firewall rules by"
                    " default: its allow rules for names are decided before the VPC deny rules"
                    " for addresses, so such a deny does not beat them there")
    order = {v.key: i for i, v in enumerate(views(ruleset))} | {"default": 1 << 30}
    fidelity = sorted(ledger.fidelity(), key=lambda f: order[f.rule])
    return Export("gcp", files, fidelity, ledger.warnings)
