"""The `gcp` export target: the whole policy as ONE global network firewall policy (Compute
REST bodies), its `@list`s as address groups, its host names as FQDN objects (`destFqdns`).

Place in the data flow: `Ruleset` → `view.views` → `plan` (a `GcpPlan`, also read by
`terraform_gcp`) → JSON files of REST request bodies.

Why one policy and no classic VPC firewall rules: a network evaluates the classic VPC rules
and its network firewall policy in the order `networkFirewallPolicyEnforcementOrder` says,
and the API's default is AFTER_CLASSIC_FIREWALL. An earlier version put addresses in VPC rules
(with a deny-all) and names in the policy, so the VPC deny-all decided first and every name
allow was dead. Now every rule, the default deny included, is in the policy, in outguard's
order (deny rules, allow rules, deny-all; lowest priority number first, the first match
decides), and `gcp-network-patch.json` sets the order to BEFORE_CLASSIC_FIREWALL so that no
classic VPC rule of the network can decide first.

Every rule targets only the protected VMs: a service account (default
`outguard-egress@PROJECT_ID.iam.gserviceaccount.com`, which you create and give to the server)
or secure tags. Without a target a one-server policy would be the default-deny of every VM
in the network.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from outguard.export.cloud_names import NameBook, rfc1035
from outguard.export.common import ExportError
from outguard.export.fidelity import Export
from outguard.export.gcp_plan import GcpOptions, GcpPlan
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

FIRST_PRIORITY = 1000
DEFAULT_PRIORITY = 2_147_483_000  # after every rule; 2147483644-7 are the policy's own defaults
MAX_RANGES = 5000  # destination IP ranges per firewall policy rule
MAX_FQDNS = 100  # destination FQDN objects per firewall policy rule
ORDER = "BEFORE_CLASSIC_FIREWALL"


def _l4(view: RuleView, version: int | None) -> list[dict[str, Any]]:
    """layer4Configs; version None: for FQDN objects, which resolve to both families."""
    if view.proto == "icmp":
        return [{"ipProtocol": p} for p in ({4: ["icmp"], 6: ["58"]}.get(version or 0)
                                            or ["icmp", "58"])]
    if view.proto == "any" and not view.ports:
        return [{"ipProtocol": "all"}]
    protos = ["tcp", "udp"] if view.proto == "any" else [view.proto]
    ports = port_texts(view.ports)
    return [{"ipProtocol": p} | ({"ports": ports} if ports else {}) for p in protos]


def _source_cidrs(ruleset: Ruleset, key: str, version: int) -> list[str]:
    el = ruleset.sources[key].elements
    singles, nets = (el.v4, el.v4_nets) if version == 4 else (el.v6, el.v6_nets)
    bits = 32 if version == 4 else 128
    return [f"{a}/{bits}" for a in singles] + list(nets)


class _Builder:
    def __init__(self, ruleset: Ruleset, options: GcpOptions, ledger: Ledger) -> None:
        self.rs = ruleset
        self.plan = GcpPlan(options)
        self.ledger = ledger
        self.rule_names = NameBook(rfc1035, 63)
        self.group_names = NameBook(rfc1035, 63)
        self.groups: dict[tuple[str, int], str] = {}  # (list key, version) → group name

    def add(self, view: RuleView | None, match: dict[str, Any], action: str, label: str,
            *, log: bool) -> None:
        rule = {"priority": FIRST_PRIORITY + len(self.plan.rules), "action": action,
                "direction": "EGRESS", "ruleName": self.rule_names.take(label),
                "match": match, "enableLogging": log} | self.plan.options.target()
        if view is not None:
            rule["description"] = (view.rule.comment or view.key)[:2000]
        self.plan.rules.append(rule)
        self.plan.rule_keys.append(view.key if view is not None else "default")

    def group(self, key: str, version: int, cidrs: list[str]) -> str:
        if (key, version) not in self.groups:
            name = self.group_names.take(f"og-{key.removeprefix('list:')}-v{version}")
            self.groups[(key, version)] = name
            self.plan.address_groups.append({
                "name": name, "type": f"IPV{version}", "capacity": max(len(cidrs), 1),
                "items": cidrs, "purpose": ["DEFAULT"],
                "description": f"outguard list @{key.removeprefix('list:')}"})
        return self.plan.group_path(self.groups[(key, version)])

    def rule(self, view: RuleView) -> None:
        if not common_notes(view, self.ledger, "a GCP firewall policy rule", mode=self.rs.mode):
            return
        action = "deny" if view.deny else "allow"
        base = f"og-{view.rule.section}-{view.rule.name}"
        log = view.deny
        for version in (4, 6):
            l4 = _l4(view, version)
            if view.any_destination:
                self.add(view, {"destIpRanges": [ALL_V4 if version == 4 else ALL_V6],
                                "layer4Configs": l4}, action, f"{base}-v{version}", log=log)
                continue
            if view.rule.inline:
                inline = _source_cidrs(self.rs, view.rule.inline, version)
                for i, part in enumerate(chunks(inline, MAX_RANGES)):
                    self.add(view, {"destIpRanges": list(part), "layer4Configs": l4}, action,
                             f"{base}-v{version}" + (f"-{i}" if i else ""), log=log)
            for key in view.rule.lists:
                cidrs = _source_cidrs(self.rs, key, version)
                if cidrs:
                    self.add(view, {"destAddressGroups": [self.group(key, version, cidrs)],
                                    "layer4Configs": l4}, action,
                             f"{base}-{key.removeprefix('list:')}-v{version}", log=log)
        for i, part in enumerate(chunks(view.names, MAX_FQDNS)):
            self.add(view, {"destFqdns": list(part), "layer4Configs": _l4(view, None)}, action,
                     f"{base}-fqdn" + (f"-{i}" if i else ""), log=log)
        if view.names:
            self.ledger.approx(view.key, "host names as FQDN objects (destFqdns): GCP resolves"
                                         " them itself and matches the addresses it got, not"
                                         " the name the VM asked for")
        if view.wildcards:
            self.ledger.note(view.key, "approximated" if view.has_addresses or view.names
                             else "dropped",
                             "wildcards " + ", ".join(view.wildcards) + " left out: GCP FQDN"
                             " objects take no wildcards")


def plan(ruleset: Ruleset, ledger: Ledger, options: GcpOptions | None = None) -> GcpPlan:
    """The policy's rules and address groups, and each rule's fidelity in `ledger`."""
    builder = _Builder(ruleset, options or GcpOptions(), ledger)
    for view in views(ruleset):
        builder.rule(view)
    if ruleset.mode != "audit":
        for version, cidr in ((4, ALL_V4), (6, ALL_V6)):
            builder.add(None, {"destIpRanges": [cidr], "layer4Configs": [{"ipProtocol": "all"}]},
                        "deny", f"og-default-deny-v{version}", log=True)
            builder.plan.rules[-1]["priority"] = DEFAULT_PRIORITY + version
            builder.plan.rules[-1]["description"] = "outguard default: deny every other egress"
    return builder.plan


def _json(doc: Any) -> str:
    return json.dumps(doc, indent=2) + "\n"


OPTIONS = {
    "project": "the GCP project id (default: the placeholder PROJECT_ID)",
    "network": "the VPC network's name (default: the placeholder NETWORK)",
    "policy": "the network firewall policy's name (default: outguard-egress)",
    "service-accounts": "comma-separated service-account e-mails the rules target"
                        " (default: outguard-egress@PROJECT.iam.gserviceaccount.com)",
    "secure-tags": "comma-separated secure tag values (tagValues/123…) the rules target"
                   " instead of service accounts",
}
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ACCOUNT = re.compile(r"^[a-z0-9][a-z0-9._-]*@[a-z0-9][a-z0-9.-]*\.[a-z]+$")
_TAG = re.compile(r"^tagValues/[0-9]+$")


def _checked(option: str, value: str, pattern: re.Pattern[str], form: str) -> str:
    if not pattern.match(value):
        raise ExportError(f"gcp option {option}: {value!r} is not {form}")
    return value


def options_of(project: str | None = None, network: str | None = None,
               policy: str | None = None, service_accounts: str | None = None,
               secure_tags: str | None = None) -> GcpOptions:
    """`GcpOptions` from the command line's `-o KEY=VALUE` texts, each checked."""
    opts = GcpOptions()
    if project is not None:
        opts = replace(opts, project=_checked("project", project, _PROJECT, "a GCP project id"
                                              " (6-30 of a-z, 0-9, -; a letter first)"))
    if network is not None:
        opts = replace(opts, network=_checked("network", network, _RFC1035, "a network name"))
    if policy is not None:
        opts = replace(opts, policy=_checked("policy", policy, _RFC1035, "a policy name"))
    if service_accounts is not None:
        accounts = tuple(a.strip() for a in service_accounts.split(",") if a.strip())
        for account in accounts:
            _checked("service-accounts", account, _ACCOUNT, "a service-account e-mail")
        opts = replace(opts, service_accounts=accounts)
    if secure_tags is not None:
        tags = tuple(t.strip() for t in secure_tags.split(",") if t.strip())
        for tag in tags:
            _checked("secure-tags", tag, _TAG, "a secure tag value (tagValues/<number>)")
        opts = replace(opts, secure_tags=tags)
    if opts.service_accounts and opts.secure_tags:
        raise ExportError("gcp options service-accounts and secure-tags: give one of them"
                          " (a rule targets service accounts or secure tags, not both)")
    return opts


def export_gcp(ruleset: Ruleset, options: GcpOptions | None = None, **cli: str) -> Export:
    """REST bodies: address groups, the policy, its rules, its association, the network order.
    `cli`: the command line's options (`OPTIONS`), when `options` is not given."""
    ledger = Ledger()
    opts = options or options_of(**cli)
    gcp = plan(ruleset, ledger, opts)
    if ruleset.dns is not None:
        ledger.approx("dns", "the dns: section is not exported: DNS is not forced through"
                             " outguard's resolver, names are those of export time")
    default_note(ruleset, ledger, "a GCP firewall policy", logs="firewall rules logging")
    network = f"projects/{opts.project}/global/networks/{opts.network}"
    files: dict[str, str] = {}
    if gcp.address_groups:
        files["gcp-address-groups.json"] = _json(gcp.address_groups)
    files["gcp-firewall-policy.json"] = _json({
        "name": opts.policy, "description": f"outguard policy {ruleset.policy_digest[:12]}"})
    files["gcp-firewall-policy-rules.json"] = _json(gcp.rules)
    files["gcp-firewall-policy-association.json"] = _json({
        "name": f"{opts.policy}-{opts.network}"[:63], "attachmentTarget": network})
    files["gcp-network-patch.json"] = _json({"networkFirewallPolicyEnforcementOrder": ORDER})
    from outguard.export.terraform_gcp import terraform_gcp  # noqa: PLC0415

    files["outguard-gcp.tf.json"] = terraform_gcp(
        gcp, f"outguard policy {ruleset.policy_digest[:12]}")
    ledger.warn(f"the rules apply only to {opts.target_text()}: give that identity to the"
                " servers this policy protects (other VMs in the network are not affected)")
    ledger.warn("gcp-network-patch.json sets the network's networkFirewallPolicyEnforcementOrder"
                f" to {ORDER}: with the API's default AFTER_CLASSIC_FIREWALL, a classic VPC"
                " firewall rule that matches first (allow or deny) decides instead of this policy")
    order = {v.key: i for i, v in enumerate(views(ruleset))} | {"dns": 1 << 29, "default": 1 << 30}
    fidelity = sorted(ledger.fidelity(), key=lambda f: order[f.rule])
    return Export("gcp", files, fidelity, ledger.warnings)
