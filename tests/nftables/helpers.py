"""Shared pieces of the compiler tests: a fixed clock, a fake resolver, the whole pipeline."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from outguard.nftables import nft_text, nft_tx
from outguard.nftables.model import Compiled
from outguard.nftables.nft import compile_ruleset
from outguard.policy.load import load_policy, load_text
from outguard.policy.loaded import Policy
from outguard.ruleset.ir import Ruleset
from outguard.ruleset.lower import lower

FIXED_NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("OUTGUARD_UPDATE_GOLDEN") == "1"

FAKE_DNS: dict[str, list[str]] = {
    "mirror.example.test": ["203.0.113.20", "2001:db8:1::20"],
    "evil.example.test": ["198.51.100.66", "2001:db8:bad::66"],
}


def fake_resolver(name: str) -> list[str]:
    """Answers from FAKE_DNS; an unknown name does not resolve (lower reports it)."""
    return list(FAKE_DNS.get(name, []))


def lowered(policy: Policy, now: datetime = FIXED_NOW) -> Ruleset:
    return lower(policy, resolver=fake_resolver, now=now)


def compiled_of(text: str, now: datetime = FIXED_NOW) -> Compiled:
    return compile_ruleset(lowered(load_text(text), now))


def compiled_file(path: Path, now: datetime = FIXED_NOW) -> Compiled:
    return compile_ruleset(lowered(load_policy(path), now))


def script(compiled: Compiled) -> str:
    return nft_text.script(nft_tx.full(compiled))


def json_document(compiled: Compiled) -> str:
    return json.dumps(nft_tx.document(nft_tx.full(compiled)), indent=1) + "\n"


def check_golden(path: Path, actual: str) -> None:
    """Compare with the golden file byte for byte; OUTGUARD_UPDATE_GOLDEN=1 rewrites it."""
    data = actual.encode()
    if UPDATE:
        path.write_bytes(data)
        return
    assert path.exists(), f"{path} is missing: run with OUTGUARD_UPDATE_GOLDEN=1 to create it"
    expected = path.read_bytes()
    if expected != data:
        # a readable diff in the assertion message, then the byte comparison
        import difflib

        diff = "".join(difflib.unified_diff(expected.decode().splitlines(keepends=True),
                                            actual.splitlines(keepends=True),
                                            str(path), "actual"))
        raise AssertionError(f"{path.name} differs from the compiler's output "
                             f"(OUTGUARD_UPDATE_GOLDEN=1 rewrites it):\n{diff}")


def rules_text(compiled: Compiled, chain: str) -> list[str]:
    """The rules of one chain as nft text (without the `add rule inet outguard CHAIN` head)."""
    return [" ".join(nft_text.expr_text(e) for e in r.expr) for r in compiled.chains[chain].rules]


def all_commands(compiled: Compiled) -> list[dict[str, Any]]:
    return nft_tx.full(compiled)
