"""What the `gcp` export enforces, evaluated: VPC network firewall semantics as documented.

- The network evaluates its classic VPC firewall rules and its global network firewall policy
  in the order of `networkFirewallPolicyEnforcementOrder` (the API's default:
  AFTER_CLASSIC_FIREWALL, classic rules first). `gcp-network-patch.json` sets it; without that
  file the default holds. Classic rules come from `gcp-firewall-rules.json` if present.
- Classic VPC rules: lowest priority number first; at equal priority deny wins; a matching
  allow or deny decides.
- Policy rules: lowest priority first; `allow` and `deny` decide, `goto_next` goes on. The
  probed VM is one the rules target (`targetServiceAccounts` / `targetSecureTags`); a rule
  with a target list that is empty targets every VM.
- A rule's destination is `destIpRanges`, `destAddressGroups` (items from
  `gcp-address-groups.json`) or `destFqdns` (matched when the probe's name is one of them:
  GCP resolves the name and matches the addresses it got, the probe's dst is such an address).
- Nothing matched: the implied allow-egress rule.
"""

from __future__ import annotations

import json
from typing import Any

from tests.export.evaluators.cloud import Probe, Verdict, in_cidrs, in_port_texts, name_is


def _l4(configs: list[dict[str, Any]], probe: Probe, key: str) -> bool:
    for c in configs:
        proto = str(c[key]).lower()
        if proto == "all":
            return True
        if probe.proto == "icmp":
            if (proto == "icmp" and probe.version == 4) or (proto == "58" and probe.version == 6):
                return True
            continue
        if proto == probe.proto and ("ports" not in c or in_port_texts(probe.port, c["ports"])):
            return True
    return False


def _policy_match(rule: dict[str, Any], probe: Probe, groups: dict[str, list[str]]) -> bool:
    if rule.get("direction") != "EGRESS" or rule.get("disabled"):
        return False
    m = rule["match"]
    if not _l4(m.get("layer4Configs", []), probe, "ipProtocol"):
        return False
    if in_cidrs(probe.dst, m.get("destIpRanges", [])):
        return True
    for path in m.get("destAddressGroups", []):
        if in_cidrs(probe.dst, groups[path.rsplit("/", 1)[-1]]):
            return True
    return any(name_is(probe.name, f) for f in m.get("destFqdns", []))


def _classic(rules: list[dict[str, Any]], probe: Probe) -> Verdict | None:
    egress = [r for r in rules if r.get("direction") == "EGRESS" and not r.get("disabled")]
    for rule in sorted(egress, key=lambda r: (r["priority"], "allowed" in r)):
        configs = rule.get("denied") or rule.get("allowed") or []
        if in_cidrs(probe.dst, rule.get("destinationRanges", [])) and _l4(configs, probe,
                                                                          "IPProtocol"):
            return "deny" if "denied" in rule else "allow"
    return None


def _policy(rules: list[dict[str, Any]], probe: Probe,
            groups: dict[str, list[str]]) -> Verdict | None:
    for rule in sorted(rules, key=lambda r: r["priority"]):
        if _policy_match(rule, probe, groups) and rule["action"] in ("allow", "deny"):
            return "allow" if rule["action"] == "allow" else "deny"
    return None


def evaluate(files: dict[str, str], probe: Probe) -> Verdict:
    groups = {g["name"]: g["items"] for g in json.loads(files.get("gcp-address-groups.json", "[]"))}
    policy = json.loads(files.get("gcp-firewall-policy-rules.json", "[]"))
    classic = json.loads(files.get("gcp-firewall-rules.json", "[]"))
    order = json.loads(files.get("gcp-network-patch.json", "{}")).get(
        "networkFirewallPolicyEnforcementOrder", "AFTER_CLASSIC_FIREWALL")
    steps = [lambda: _classic(classic, probe), lambda: _policy(policy, probe, groups)]
    if order == "BEFORE_CLASSIC_FIREWALL":
        steps.reverse()
    for step in steps:
        verdict = step()
        if verdict is not None:
            return verdict
    return "allow"  # the implied allow-egress rule
