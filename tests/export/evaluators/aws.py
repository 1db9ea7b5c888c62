"""What the `aws` export enforces, evaluated: the files applied to a NEW security group in a VPC
whose subnet uses the VPC's DEFAULT network ACL, traffic routed through Network Firewall, and,
with `aws-dns-firewall.json`, the VPC's resolver running the DNS Firewall rule group.

- Security group (stateful): starts with the allow-all egress rules AWS gives a new group
  (0.0.0.0/0 and ::/0), minus `aws-security-group-revoke-default.json`, plus
  `aws-security-group-egress.json`. A packet passes if ANY rule allows it (the union of
  allows); there is no deny.
- Network ACL (stateless): the default ACL's entries (100: allow all IPv4, 101: allow all
  IPv6) plus the exported egress entries; an entry whose number is already taken is refused by
  the API (left out here). Entries are tried in ascending number; the first match decides;
  nothing matched: deny (the `*` entry).
- Network Firewall, stateful domain lists (TLS SNI / HTTP Host, so only for flows that speak
  TLS or HTTP): DENYLIST drops a listed name; ALLOWLIST passes a listed name and drops every
  other TLS/HTTP flow; ALERTLIST only logs. `.example.test` matches the domain and below.
- DNS Firewall (for probes that looked a name up): rules by ascending priority; the first rule
  whose domain list matches the name decides (ALLOW: resolves, BLOCK: the name does not resolve,
  so the flow never starts); ALERT goes on. `*.x` matches every name below x; `*` every name.
- The flow is allowed only when every one of these allows it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.export.evaluators.cloud import Probe, Verdict, in_cidrs, name_is

DEFAULT_ACL = [{"RuleNumber": 100, "Protocol": "-1", "RuleAction": "allow", "CidrBlock": "0.0.0.0/0"},
               {"RuleNumber": 101, "Protocol": "-1", "RuleAction": "allow", "Ipv6CidrBlock": "::/0"}]
_PROTO = {"tcp": ("tcp", "6"), "udp": ("udp", "17"), "icmp": ("icmp", "1", "icmpv6", "58")}


def _ranges(perm: dict[str, Any]) -> list[str]:
    return ([r["CidrIp"] for r in perm.get("IpRanges", [])]
            + [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])])


def _perm_l4(perm: dict[str, Any], probe: Probe) -> bool:
    proto = str(perm["IpProtocol"])
    if proto == "-1":
        return True
    if proto not in _PROTO[probe.proto]:
        return False
    if probe.proto == "icmp":
        return (proto in ("icmp", "1")) == (probe.version == 4)
    lo, hi = perm.get("FromPort", -1), perm.get("ToPort", -1)
    return probe.port is not None and lo <= probe.port <= hi


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (str(a["IpProtocol"]), a.get("FromPort"), a.get("ToPort")) == (
        str(b["IpProtocol"]), b.get("FromPort"), b.get("ToPort"))


def security_group(files: dict[str, str], probe: Probe) -> Verdict:
    perms = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
              "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]
    for gone in json.loads(files.get("aws-security-group-revoke-default.json",
                                     '{"IpPermissions": []}'))["IpPermissions"]:
        for perm in perms:
            if _same(perm, gone):
                drop = set(_ranges(gone))
                perm["IpRanges"] = [r for r in perm.get("IpRanges", []) if r["CidrIp"] not in drop]
                perm["Ipv6Ranges"] = [r for r in perm.get("Ipv6Ranges", [])
                                      if r["CidrIpv6"] not in drop]
    perms += json.loads(files["aws-security-group-egress.json"])["IpPermissions"]
    ok = any(_perm_l4(p, probe) and in_cidrs(probe.dst, _ranges(p)) for p in perms)
    return "allow" if ok else "deny"


def _entry_match(entry: dict[str, Any], probe: Probe) -> bool:
    cidr = entry.get("CidrBlock") or entry.get("Ipv6CidrBlock")
    if cidr is None or not in_cidrs(probe.dst, [cidr]):
        return False
    proto = str(entry["Protocol"])
    if proto == "-1":
        return True
    if proto not in _PROTO[probe.proto]:
        return False
    if probe.proto == "icmp":
        return (proto == "1") == (probe.version == 4)
    rng = entry.get("PortRange")
    return rng is None or (probe.port is not None and rng["From"] <= probe.port <= rng["To"])


def network_acl(files: dict[str, str], probe: Probe) -> Verdict:
    entries = {e["RuleNumber"]: e for e in DEFAULT_ACL}
    for entry in json.loads(files["aws-network-acl-egress.json"])["Entries"]:
        entries.setdefault(entry["RuleNumber"], entry)  # a taken number: the API refuses it
    for number in sorted(entries):
        if _entry_match(entries[number], probe):
            return "allow" if entries[number]["RuleAction"] == "allow" else "deny"
    return "deny"


def _domain(name: str | None, target: str) -> bool:
    if name is None:
        return False
    name = name.lower().rstrip(".")
    return name == target.lstrip(".") or (target.startswith(".") and name.endswith(target))


_SURICATA = re.compile(r'^(drop|alert) (ip|tcp|udp|icmp) \$HOME_NET any -> \$(\w+) (\S+) ')


def _suricata_ports(text: str, port: int | None) -> bool:
    if text == "any":
        return True
    for part in text.strip("[]").split(","):
        lo, _sep, hi = part.partition(":")
        if port is not None and int(lo) <= port <= int(hi or lo):
            return True
    return False


def _address_drop(group: dict[str, Any], probe: Probe) -> bool:
    """A drop rule of an IP-set rule group (`aws_nfw_ipsets`) matches the probe."""
    ip_sets = group["RuleGroup"]["RuleVariables"]["IPSets"]
    for line in group["RuleGroup"]["RulesSource"]["RulesString"].splitlines():
        found = _SURICATA.match(line)
        assert found is not None, line
        action, proto, variable, ports = found.groups()
        if action != "drop" or not in_cidrs(probe.dst, ip_sets[variable]["Definition"]):
            continue
        if proto == "ip" or (proto == probe.proto and (
                proto == "icmp" or _suricata_ports(ports, probe.port))):
            return True
    return False


def network_firewall(files: dict[str, str], probe: Probe) -> Verdict:
    groups = json.loads(files.get("aws-network-firewall-rule-groups.json", '{"RuleGroups": []}'))
    if any(_address_drop(g, probe) for g in groups["RuleGroups"]
           if "RulesString" in g["RuleGroup"]["RulesSource"]):
        return "deny"
    if probe.layer7 not in ("tls", "http"):
        return "allow"
    for kind in ("DENYLIST", "ALLOWLIST"):
        for group in groups["RuleGroups"]:
            if "RulesSourceList" not in group["RuleGroup"]["RulesSource"]:
                continue
            src = group["RuleGroup"]["RulesSource"]["RulesSourceList"]
            if src["GeneratedRulesType"] != kind:
                continue
            hit = any(_domain(probe.name, t) for t in src["Targets"])
            if kind == "DENYLIST" and hit:
                return "deny"
            if kind == "ALLOWLIST" and not hit:
                return "deny"
    return "allow"


def dns_firewall(files: dict[str, str], probe: Probe) -> Verdict:
    if probe.name is None or "aws-dns-firewall.json" not in files:
        return "allow"
    doc = json.loads(files["aws-dns-firewall.json"])
    lists = {u["FirewallDomainListId"]: u["Domains"] for u in doc["UpdateFirewallDomains"]}
    for rule in sorted(doc["CreateFirewallRule"], key=lambda r: r["Priority"]):
        domains = lists.get(rule["FirewallDomainListId"], [])
        if any(d == "*" or name_is(probe.name, d) for d in domains):
            if rule["Action"] == "ALLOW":
                return "allow"
            if rule["Action"] == "BLOCK":
                return "deny"
    return "allow"


def evaluate(files: dict[str, str], probe: Probe) -> Verdict:
    parts = (security_group, network_acl, network_firewall, dns_firewall)
    return "allow" if all(part(files, probe) == "allow" for part in parts) else "deny"
