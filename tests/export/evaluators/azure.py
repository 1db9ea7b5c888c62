"""What the `azure` export enforces, evaluated: an existing NSG on the machine's NIC or subnet
with the exported outbound rules, and, when `azure-firewall-policy.json` is there, egress
routed through an Azure Firewall that uses the policy.

- NSG: the exported rules plus the built-in outbound rules (65000 AllowVnetOutBound, ignored
  here: the probes are internet addresses; 65001 AllowInternetOutBound; 65500 DenyAllOutBound).
  Lowest priority first; the first rule whose protocol, destination prefix and port match
  decides. Two rules with one name (Azure compares names without case) are one rule: the later
  deployment replaces the earlier. Once the rules hold 4,000 destination prefixes, Azure
  refuses every further rule (in the template's order).
- Azure Firewall (IPv4 only; IPv6 is not routed through it): all network rule collections
  before all application rule collections, each in priority order (rule collection group, then
  collection); the first matching rule's collection action decides. Network rules match
  protocol, port and destination: addresses, IP groups (their `ipAddresses`) or FQDNs (the
  probe's name). Application rules match only HTTP/TLS flows, by the probe's name against
  `targetFqdns` (`*.x`: every name below x) and protocol/port. Nothing matched: deny.
- The flow is allowed only when the NSG and (if present) the firewall allow it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.export.evaluators.cloud import Probe, Verdict, in_cidrs, in_port_texts, name_is

BUILTIN = [{"name": "AllowInternetOutBound", "properties": {
               "priority": 65001, "access": "Allow", "protocol": "*", "direction": "Outbound",
               "destinationAddressPrefix": "*", "destinationPortRange": "*"}},
           {"name": "DenyAllOutBound", "properties": {
               "priority": 65500, "access": "Deny", "protocol": "*", "direction": "Outbound",
               "destinationAddressPrefix": "*", "destinationPortRange": "*"}}]
MAX_PREFIXES = 4000  # addresses and prefixes per NSG
_CHILD = re.compile(r"/(?P<name>[^/']+)'\)\]$")


def _nsg_rules(files: dict[str, str]) -> list[dict[str, Any]]:
    name = "azure-nsg-rules.json" if "azure-nsg-rules.json" in files else "azure-nsg.json"
    doc = json.loads(files[name])
    by_name: dict[str, dict[str, Any]] = {}
    for res in doc["resources"]:
        if res["type"] == "Microsoft.Network/networkSecurityGroups/securityRules":
            match = _CHILD.search(res["name"])
            name = match.group("name") if match else res["name"]
            by_name[name.lower()] = {"name": name, "properties": res["properties"]}
        elif res["type"] == "Microsoft.Network/networkSecurityGroups":
            for rule in res["properties"].get("securityRules", []):
                by_name[rule["name"].lower()] = rule
    deployed, used = [], 0
    for rule in by_name.values():  # past the limit, Azure refuses the rule
        props = rule["properties"]
        used += len(props.get("destinationAddressPrefixes") or [1])
        if used <= MAX_PREFIXES:
            deployed.append(rule)
    return deployed


def _nsg_match(props: dict[str, Any], probe: Probe) -> bool:
    if props["direction"] != "Outbound":
        return False
    proto = props["protocol"]
    if proto != "*" and proto.lower() != probe.proto:
        return False
    prefixes = props.get("destinationAddressPrefixes") or [props["destinationAddressPrefix"]]
    if not in_cidrs(probe.dst, prefixes):
        return False
    ports = props.get("destinationPortRanges") or [props["destinationPortRange"]]
    return ports == ["*"] or (probe.proto != "icmp" and in_port_texts(probe.port, ports))


def nsg(files: dict[str, str], probe: Probe) -> Verdict:
    rules = sorted(_nsg_rules(files) + BUILTIN, key=lambda r: r["properties"]["priority"])
    for rule in rules:
        if _nsg_match(rule["properties"], probe):
            return "allow" if rule["properties"]["access"] == "Allow" else "deny"
    return "deny"


def _net_match(rule: dict[str, Any], probe: Probe, groups: dict[str, list[str]]) -> bool:
    protos = [p.lower() for p in rule["ipProtocols"]]
    if "any" not in protos and probe.proto not in protos:
        return False
    if probe.proto != "icmp" and not in_port_texts(probe.port, rule["destinationPorts"]):
        return False
    if in_cidrs(probe.dst, rule.get("destinationAddresses", [])):
        return True
    for ref in rule.get("destinationIpGroups", []):
        if in_cidrs(probe.dst, groups[ref.split("'")[3]]):
            return True
    return any(name_is(probe.name, f) for f in rule.get("destinationFqdns", []))


def _app_match(rule: dict[str, Any], probe: Probe) -> bool:
    if probe.layer7 not in ("tls", "http"):
        return False
    kind = "Https" if probe.layer7 == "tls" else "Http"
    if not any(p["protocolType"] == kind and p["port"] == probe.port for p in rule["protocols"]):
        return False
    return any(name_is(probe.name, f) for f in rule.get("targetFqdns", []))


def firewall(files: dict[str, str], probe: Probe) -> Verdict:
    if "azure-firewall-policy.json" not in files or probe.version == 6:
        return "allow"
    doc = json.loads(files["azure-firewall-policy.json"])
    groups = {r["name"]: r["properties"]["ipAddresses"] for r in doc["resources"]
              if r["type"] == "Microsoft.Network/ipGroups"}
    collections = []
    for res in doc["resources"]:
        if res["type"] == "Microsoft.Network/firewallPolicies/ruleCollectionGroups":
            prio = res["properties"]["priority"]
            prio = 1000 if isinstance(prio, str) else prio  # the template's parameter default
            collections += [(prio, c["priority"], c) for c in res["properties"]["ruleCollections"]]
    collections.sort(key=lambda t: (t[0], t[1]))
    for kind in ("NetworkRule", "ApplicationRule"):
        for _g, _c, coll in collections:
            for rule in coll["rules"]:
                if rule["ruleType"] != kind:
                    continue
                hit = (_net_match(rule, probe, groups) if kind == "NetworkRule"
                       else _app_match(rule, probe))
                if hit:
                    return "allow" if coll["action"]["type"] == "Allow" else "deny"
    return "deny"


def evaluate(files: dict[str, str], probe: Probe) -> Verdict:
    return "allow" if nsg(files, probe) == firewall(files, probe) == "allow" else "deny"
