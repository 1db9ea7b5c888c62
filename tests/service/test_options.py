"""service.options: where the agent keeps its incidents unless told."""

from __future__ import annotations

from pathlib import Path

from outguard.service.options import STORE_NAME, AgentOptions


def test_the_store_defaults_to_the_state_directory() -> None:
    opts = AgentOptions(policy=None, state_dir=Path("/var/lib/og"))
    assert opts.store_location() == Path("/var/lib/og") / STORE_NAME
    assert AgentOptions(policy=None, state_dir=Path("/x"), store="sqlite:///y").store_location() \
        == "sqlite:///y"
