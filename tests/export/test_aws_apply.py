"""`aws_apply.reconcile` against a real moto server (subprocess on 127.0.0.1) through real boto3.

The first run replaces the group's default allow-all with the policy's rules; a second run makes
no write call; a changed policy makes exactly one authorize and one revoke call with exactly
the rules that changed. Calls are counted with botocore's own event hooks (no mocks).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from outguard.export.aws import export_aws
from outguard.export.aws_apply import AwsError, current_rules, plan, reconcile
from outguard.export.aws_atoms import Atom
from tests.export.cloud_inputs import ruleset, ruleset_of

MOTO = Path(sys.executable).with_name("moto_server")

POLICY_A = """\
version: 1
allow:
  - name: web
    to: [203.0.113.10, "2001:db8:1::10"]
    ports: [80, 443]
    proto: tcp
  - name: dns
    to: [192.0.2.53]
    ports: [53]
"""
# web loses port 80 and gains 203.0.113.11; dns unchanged; ntp new
POLICY_B = """\
version: 1
allow:
  - name: web
    to: [203.0.113.10, 203.0.113.11, "2001:db8:1::10"]
    ports: [443]
    proto: tcp
  - name: dns
    to: [192.0.2.53]
    ports: [53]
  - name: ntp
    to: [203.0.113.0/24]
    ports: [123]
    proto: udp
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Calls:
    """Every EC2 operation boto3 sends, with the caller's parameters, from botocore's
    provide-client-params event (fired for each API call before it is serialized)."""

    def __init__(self, ec2: Any) -> None:
        self.names: list[str] = []
        self.params: dict[str, list[dict[str, Any]]] = {}
        ec2.meta.events.register("provide-client-params.ec2.*", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.names.append(model.name)
        self.params.setdefault(model.name, []).append(dict(params))

    def writes(self) -> list[str]:
        return [n for n in self.names if not n.startswith("Describe")]


@pytest.fixture
def ec2(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_endpoint)


@pytest.fixture
def group(ec2: Any) -> str:
    vpc = ec2.create_vpc(CidrBlock="192.0.2.0/24")["Vpc"]["VpcId"]
    name = f"og-{os.urandom(4).hex()}"
    return str(ec2.create_security_group(GroupName=name, Description="outguard test",
                                         VpcId=vpc)["GroupId"])


def _egress(ec2: Any, group_id: str) -> set[Atom]:
    rules = current_rules(ec2, group_id)
    out = set()
    for r in rules:
        if r["IsEgress"]:
            cidr = r.get("CidrIpv4") or r.get("CidrIpv6")
            proto = r["IpProtocol"]
            out.add(Atom(proto, -1, -1, cidr) if proto == "-1"
                    else Atom(proto, r["FromPort"], r["ToPort"], cidr))
    return out


def test_first_run_replaces_default_allow_all(ec2: Any, group: str) -> None:
    assert Atom("-1", -1, -1, "0.0.0.0/0") in _egress(ec2, group)
    result = reconcile(ec2, group, ruleset_of(POLICY_A))
    assert Atom("-1", -1, -1, "0.0.0.0/0") in result.plan.revoke
    assert _egress(ec2, group) == {
        Atom("tcp", 80, 80, "203.0.113.10/32"), Atom("tcp", 443, 443, "203.0.113.10/32"),
        Atom("tcp", 80, 80, "2001:db8:1::10/128"), Atom("tcp", 443, 443, "2001:db8:1::10/128"),
        Atom("tcp", 53, 53, "192.0.2.53/32"), Atom("udp", 53, 53, "192.0.2.53/32")}


def test_second_run_changes_nothing(ec2: Any, group: str) -> None:
    reconcile(ec2, group, ruleset_of(POLICY_A))
    before = current_rules(ec2, group)
    calls = Calls(ec2)
    result = reconcile(ec2, group, ruleset_of(POLICY_A))
    assert result.plan.empty
    assert calls.writes() == []
    assert current_rules(ec2, group) == before  # same rule ids: nothing was re-created


def test_changed_policy_makes_exactly_the_needed_calls(ec2: Any, group: str) -> None:
    reconcile(ec2, group, ruleset_of(POLICY_A))
    ids_before = {r["SecurityGroupRuleId"] for r in current_rules(ec2, group)}
    calls = Calls(ec2)
    reconcile(ec2, group, ruleset_of(POLICY_B))
    assert calls.writes() == ["AuthorizeSecurityGroupEgress", "RevokeSecurityGroupEgress"]
    (auth,) = calls.params["AuthorizeSecurityGroupEgress"]
    added = {(p["IpProtocol"], p.get("FromPort"), r.get("CidrIp") or r.get("CidrIpv6"))
             for p in auth["IpPermissions"]
             for r in p.get("IpRanges", []) + p.get("Ipv6Ranges", [])}
    assert added == {("tcp", 443, "203.0.113.11/32"), ("udp", 123, "203.0.113.0/24")}
    (revoke,) = calls.params["RevokeSecurityGroupEgress"]
    assert len(revoke["SecurityGroupRuleIds"]) == 2  # port 80 to 203.0.113.10 and 2001:db8:1::10
    assert set(revoke["SecurityGroupRuleIds"]) <= ids_before
    assert Atom("tcp", 80, 80, "203.0.113.10/32") not in _egress(ec2, group)
    assert reconcile(ec2, group, ruleset_of(POLICY_B)).plan.empty


@pytest.mark.parametrize("name", ["lab-policy", "cases", "cloud-mixed", "cloud-fqdn"])
def test_shared_policies_reconcile_idempotently(ec2: Any, group: str, name: str) -> None:
    rules = ruleset(name)
    first = reconcile(ec2, group, rules)
    assert first.plan.authorize
    assert set(first.plan.authorize) == _egress(ec2, group)
    calls = Calls(ec2)
    assert reconcile(ec2, group, rules).plan.empty
    assert calls.writes() == []


def test_unknown_group_is_a_clear_error(ec2: Any) -> None:
    with pytest.raises(AwsError, match="sg-0000000000000dead"):
        reconcile(ec2, "sg-0000000000000dead", ruleset_of(POLICY_A))


def test_plan_revokes_rules_it_cannot_express_and_duplicates() -> None:
    desired = {Atom("tcp", 443, 443, "203.0.113.10/32"): "x"}
    current = [
        {"IsEgress": True, "SecurityGroupRuleId": "r1", "IpProtocol": "tcp", "FromPort": 443,
         "ToPort": 443, "CidrIpv4": "203.0.113.10/32"},
        {"IsEgress": True, "SecurityGroupRuleId": "r2", "IpProtocol": "-1",
         "ReferencedGroupInfo": {"GroupId": "sg-1"}},
        {"IsEgress": False, "SecurityGroupRuleId": "r3", "IpProtocol": "-1", "CidrIpv4": "0.0.0.0/0"},
        {"IsEgress": True, "SecurityGroupRuleId": "r4", "IpProtocol": "6", "FromPort": 443,
         "ToPort": 443, "CidrIpv4": "203.0.113.10/32"},
    ]
    todo = plan(current, desired)
    assert todo.authorize == {}
    assert todo.other == [] and todo.kept == {"r2": "all to security group sg-1"}
    assert list(todo.revoke.values()) == ["r4"]  # "6" is tcp: a duplicate of r1
    assert plan(current, desired, revoke_foreign=True).other == ["r2"]


def test_rules_to_other_groups_are_kept_and_reported(ec2: Any, group: str) -> None:
    """Issue 17: reconcile revoked egress rules to other groups and prefix lists, which the
    policy cannot express, with no word outside the dry run."""
    vpc = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["VpcId"]
    db = ec2.create_security_group(GroupName=f"og-db-{os.urandom(3).hex()}", Description="db",
                                   VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_egress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "UserIdGroupPairs": [{"GroupId": db}]}])
    result = reconcile(ec2, group, ruleset_of(POLICY_A))
    (kept,) = result.plan.kept.values()
    assert kept == f"tcp 5432-5432 to security group {db}"
    assert any(r.get("ReferencedGroupInfo", {}).get("GroupId") == db
               for r in current_rules(ec2, group) if r["IsEgress"])
    (default,) = [f for f in result.ledger.fidelity() if f.rule == "default"]
    assert default.level == "approximated" and db in default.how
    again = reconcile(ec2, group, ruleset_of(POLICY_A), revoke_foreign=True)
    assert len(again.plan.other) == 1
    assert not any(r.get("ReferencedGroupInfo") for r in current_rules(ec2, group) if r["IsEgress"])


def test_cli_apply_backend_aws(ec2: Any, group: str, moto_endpoint: str, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_A)
    cmd = [sys.executable, "-m", "outguard", "apply", str(policy), "--backend", "aws",
           "--security-group", group, "--region", "us-east-1", "--endpoint-url", moto_endpoint]
    first = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert first.returncode == 0, first.stderr
    assert f"{group}: changed: 6 egress rules to authorize, 1 to revoke" in first.stdout
    assert "+ tcp 443-443 203.0.113.10/32 (outguard allow:web)" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"{group}: up to date"
    missing = subprocess.run(cmd[:7], capture_output=True, text=True, check=False, timeout=60)
    assert missing.returncode != 0 and "--security-group" in missing.stderr


@pytest.mark.parametrize("name", ["cloud-mixed", "cases", "cloud/names-in-lists"])
def test_exported_files_apply_to_a_new_group_and_the_default_acl(ec2: Any, group: str,
                                                                 name: str) -> None:
    """The export's JSON, as the README says to use it, against moto: the group ends with
    exactly the policy's rules (its allow-all revoked), and every network-ACL entry is taken
    by the VPC's default ACL (issue 17: numbering from 100 collided with its allow-all)."""
    files = export_aws(ruleset(name)).files
    ec2.authorize_security_group_egress(
        GroupId=group, **json.loads(files["aws-security-group-egress.json"]))
    revoke = json.loads(files["aws-security-group-revoke-default.json"])
    revoke["IpPermissions"][0].pop("Ipv6Ranges")  # a VPC without IPv6 has no ::/0 rule
    ec2.revoke_security_group_egress(GroupId=group, **revoke)
    assert Atom("-1", -1, -1, "0.0.0.0/0") not in _egress(ec2, group)
    assert len(_egress(ec2, group)) == sum(
        len(p.get("IpRanges", [])) + len(p.get("Ipv6Ranges", []))
        for p in json.loads(files["aws-security-group-egress.json"])["IpPermissions"])
    vpc = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["VpcId"]
    (acl,) = ec2.describe_network_acls(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                {"Name": "default", "Values": ["true"]}])["NetworkAcls"]
    entries = json.loads(files["aws-network-acl-egress.json"])["Entries"]
    for entry in entries:
        ec2.create_network_acl_entry(NetworkAclId=acl["NetworkAclId"], **entry)
    (after,) = ec2.describe_network_acls(NetworkAclIds=[acl["NetworkAclId"]])["NetworkAcls"]
    numbers = sorted(e["RuleNumber"] for e in after["Entries"] if e["Egress"])
    assert numbers == sorted([e["RuleNumber"] for e in entries] + [100, 32767])
