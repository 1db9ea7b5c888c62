"""Golden tests for the compiler: policy → `nft -f` text and nftables JSON, byte for byte.

Pipeline: `nft_text.script(nft_tx.full(compile_ruleset(lower(policy, resolver=fake,
now=FIXED_NOW))))` and `nft_tx.document(...)` as JSON (indent 1, as `outguard compile --json`).
Inputs are `golden/*.yaml` (plus the lab's own `examples/lab-policy.yaml`); outputs are
`golden/<name>.nft` and `golden/<name>.json`. After an intended change of the compiler, rewrite them
with `OUTGUARD_UPDATE_GOLDEN=1 .venv/bin/pytest tests/nftables/test_golden.py` and read the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from outguard.nftables.model import Compiled
from outguard.policy.load import load_policy
from outguard.ruleset.keys import RuleKey
from tests.nftables.helpers import (
    GOLDEN,
    check_golden,
    compiled_file,
    json_document,
    lowered,
    script,
)

LAB_POLICY = Path(__file__).resolve().parents[2] / "examples" / "lab-policy.yaml"

POLICIES: dict[str, Path] = {
    path.stem: path for path in sorted(GOLDEN.glob("*.yaml"))
} | {"lab-policy": LAB_POLICY}

TEXT_ONLY = {"unit"}  # `socket cgroupv2`: nft 1.0.6 takes it as text only


def _compiled(name: str) -> Compiled:
    return compiled_file(POLICIES[name])


def test_every_input_has_its_goldens() -> None:
    expected = set(POLICIES)
    assert {"minimal", "issue-example", "lists", "overlap", "deny-allow", "any-destination",
            "owners", "audit", "reject", "forward", "expires", "unit", "hostnames",
            "lab-policy"} <= expected
    stray = {p.stem for p in GOLDEN.glob("*.nft")} - expected
    assert not stray, f"golden files without an input policy: {stray}"


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_text_golden(name: str) -> None:
    check_golden(GOLDEN / f"{name}.nft", script(_compiled(name)))


@pytest.mark.parametrize("name", sorted(set(POLICIES) - TEXT_ONLY))
def test_json_golden(name: str) -> None:
    check_golden(GOLDEN / f"{name}.json", json_document(_compiled(name)))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_needs_text_only_for_cgroup_rules(name: str) -> None:
    assert _compiled(name).needs_text is (name in TEXT_ONLY)


@pytest.mark.parametrize("name", sorted(set(POLICIES) - TEXT_ONLY))
def test_json_golden_is_a_valid_nftables_document(name: str) -> None:
    doc = json.loads(json_document(_compiled(name)))
    assert doc["nftables"][0] == {"metainfo": {"json_schema_version": 1}}
    table = {"table": {"family": "inet", "name": "outguard"}}
    assert doc["nftables"][1:4] == [{"add": table}, {"delete": table}, {"add": table}]
    for cmd in doc["nftables"][4:]:
        ((verb, obj),) = cmd.items()
        assert verb == "add"
        ((_kind, body),) = obj.items()
        assert (body["family"], body["table"]) == ("inet", "outguard")


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_golden_semantics(name: str) -> None:
    """What to check by eye in every golden file, checked by machine as well."""
    compiled = _compiled(name)
    ruleset = lowered(load_policy(POLICIES[name]))
    text = script(compiled)
    # one counter per live rule, plus the default; one log counter per blocking decision
    assert compiled.counters == (["default"] + [RuleKey.parse(r.counter).counter for r in ruleset.rules()]
                                 + ["log.default"]
                                 + [f"log.{RuleKey.parse(r.counter).counter}" for r in ruleset.deny])
    for rule in ruleset.rules():
        if not (rule.inline or rule.lists or rule.any_destination):
            continue  # only wildcard names: nothing in the kernel until the DNS resolver fills it
        assert f'counter name "{RuleKey.parse(rule.counter).counter}"' in text
    # every deny rule passes the per-flow log gate, then logs with its own prefix (with the
    # kernel's action); the default the same with og:default
    action = " audit" if ruleset.mode == "audit" else \
        " reject" if ruleset.default_action == "reject" else ""
    gate = {"jump": {"target": "log_gate"}}
    held = 2 if action == " reject" else 0  # a held SYN's retransmit: reset, not logged again
    for rule in ruleset.deny:
        chain = compiled.chains[f"v_deny_{rule.name}"]
        assert chain.rules[0].expr == [{"counter": RuleKey.parse(rule.counter).counter}]
        assert chain.rules[1 + held].expr == [gate]
        assert chain.rules[2 + held].expr == [
            {"counter": f"log.{RuleKey.parse(rule.counter).counter}"},
            {"log": {"prefix": f"og:deny:{rule.name}{action}", "group": ruleset.nflog_group}}]
    default = compiled.chains["v_default"].rules
    assert default[held].expr == [gate]
    assert default[held + 1].expr == [{"counter": "log.default"}, {"log": {
        "prefix": f"og:default{action}", "group": ruleset.nflog_group}}]
    # the gate limits per flow: three levels per family, each a plain set and a token bucket
    # with the policy's rate
    updates = [e["set"] for r in compiled.chains["log_gate"].rules for e in r.expr if "set" in e]
    limited = [u for u in updates if u.get("stmt")]
    assert len(updates) == 12 and len(limited) == 6
    assert all(u["stmt"] == [{"limit": {"rate": ruleset.log_rate[0], "per": ruleset.log_rate[1],
                                        "burst": max(5, ruleset.log_rate[0]), "inv": True}}]
               for u in limited)
    # allow rules never log
    assert text.count("log prefix") == len(ruleset.deny) + 1
    # the output chain: established, loopback, ND, deny before allow, then the default
    out = [line for line in text.splitlines() if line.startswith("add rule inet outguard output ")]
    heads = [line.removeprefix("add rule inet outguard output ") for line in out]
    assert heads[0] == "ct state established,related accept"
    assert heads[1] == 'oif "lo" accept'
    assert heads[2].startswith("icmpv6 type {")
    jumps = [h for h in heads if h.startswith("jump ")]
    assert jumps == [f"jump {s}" for s in ("deny", "allow") if getattr(ruleset, s)]
    assert heads[-1] == 'counter name "default" goto v_default'
