"""The shared example policies of the export tests, made ready for export (`export.names.
for_export`) with a fixed clock and a fake resolver (documentation addresses only), and the
golden-file check."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from outguard.export.fidelity import Export
from outguard.export.names import for_export
from outguard.policy.load import load_policy, load_text
from outguard.ruleset.ir import Ruleset
from tests.cases import CASE_NOW, CASE_POLICY
from tests.nftables.helpers import FAKE_DNS, FIXED_NOW, UPDATE, check_golden

HERE = Path(__file__).parent
POLICY_DIR = HERE / "policies"
CLOUD_DIR = POLICY_DIR / "cloud"  # the cloud targets' extra cases (issue 17)
GOLDEN_DIR = HERE / "golden"
LAB_POLICY = HERE.parents[1] / "examples" / "lab-policy.yaml"

DNS: dict[str, list[str]] = FAKE_DNS | {
    "api.example.test": ["203.0.113.30", "2001:db8:1::30"],
    "partner.example.test": ["192.0.2.40"],
    "c2.example.test": ["198.51.100.99"],
}


def resolver(name: str) -> list[str]:
    return list(DNS.get(name, []))


def policy_names() -> list[str]:
    """Every shared example policy: the lab's, the decision table's, and tests/export/policies."""
    return ["lab-policy", "cases", *sorted(p.stem for p in POLICY_DIR.glob("*.yaml"))]


def cloud_policy_names() -> list[str]:
    """The shared policies and the cloud targets' own (names in lists, collisions, audit)."""
    return policy_names() + sorted(f"cloud/{p.stem}" for p in CLOUD_DIR.glob("*.yaml"))


def now_of(name: str) -> datetime:
    return CASE_NOW if name == "cases" else FIXED_NOW


def ruleset(name: str) -> Ruleset:
    if name == "cases":
        return for_export(load_text(CASE_POLICY), resolver=resolver, now=CASE_NOW)
    path = LAB_POLICY if name == "lab-policy" else POLICY_DIR / f"{name}.yaml"
    return for_export(load_policy(path), resolver=resolver, now=FIXED_NOW)


def ruleset_of(text: str) -> Ruleset:
    return for_export(load_text(text), resolver=resolver, now=FIXED_NOW)


__all__ = ["GOLDEN_DIR", "check_export", "check_golden", "cloud_policy_names", "now_of", "policy_names",
           "resolver", "ruleset", "ruleset_of"]


def check_export(target: str, policy: str, export: Export) -> None:
    """Every file of the export and its fidelity report against golden/<target>/<policy>/."""
    where = GOLDEN_DIR / target / policy
    if UPDATE:
        where.mkdir(parents=True, exist_ok=True)
    names = {*export.files, "fidelity.txt"}
    for name, content in export.files.items():
        check_golden(where / name, content)
    check_golden(where / "fidelity.txt", export.report() + "\n")
    if not UPDATE:
        stray = {p.name for p in where.iterdir()} - names
        assert not stray, f"golden files the export no longer writes: {stray}"
