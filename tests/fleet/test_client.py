"""The agent's client: the credential file (0600, atomic, a damaged one is an error, never a
silent new enrolment), enrolment, and the policy long-poll with its ETag, against the tiny
real server."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from outguard.fleet import wire
from outguard.fleet.client import (
    Credential,
    FleetClient,
    FleetError,
    RefusedError,
    credential_path,
    default_host,
    enroll,
    load_credential,
    save_credential,
)
from tests.fleet.tinyserver import Tiny


def test_credential_private_atomic_round_trip(tmp_path: Path) -> None:
    assert load_credential(tmp_path) is None
    cred = Credential("https://fleet.example", "web-1", 4, "s3cret")
    path = save_credential(tmp_path, cred)
    assert path == credential_path(tmp_path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o077 == 0  # the fleet directory: owner only
    assert load_credential(tmp_path) == cred
    save_credential(tmp_path, Credential("https://fleet.example", "web-1", 4, "new"))
    assert load_credential(tmp_path).credential == "new"  # type: ignore[union-attr]
    assert [p.name for p in path.parent.iterdir()] == ["credential.json"]  # no temp left


def test_damaged_credential_is_an_error(tmp_path: Path) -> None:
    save_credential(tmp_path, Credential("u", "h", 1, "c"))
    credential_path(tmp_path).write_text('{"url": "u"}')
    with pytest.raises(FleetError, match="not a fleet credential"):
        load_credential(tmp_path)


def test_default_host_is_valid() -> None:
    assert wire.valid_host(default_host())
    assert wire.valid_host(default_host("og-w20b-h1"))
    assert default_host("og_x").endswith("-og-x")


def test_enroll_once_then_refused() -> None:
    with Tiny() as tiny:
        cred = asyncio.run(enroll(tiny.url, None, "tok-1", "web-1"))
        assert (cred.host_id, cred.credential, cred.host) == (7, "cred-1", "web-1")
        with pytest.raises(RefusedError, match="409 enrol token already used") as got:
            asyncio.run(enroll(tiny.url, None, "tok-1", "web-1"))
        assert got.value.status == 409


def test_policy_long_poll_etag() -> None:
    with Tiny() as tiny:
        async def scenario() -> None:
            client = FleetClient(tiny.url, None, Credential(tiny.url, "h", 7, "cred-1"))
            try:
                assert (await client.policy(None, 0)).status == 204
                tiny.set_policy({"version": 1, "policy": "p1", "rollout_id": None,
                                 "lockdown_until": None})
                first = await client.policy(None, 0)
                assert first.status == 200 and first.etag == '"1-0"'
                assert first.policy is not None and first.policy.policy == "p1"
                t0 = time.monotonic()
                same = await client.policy(first.etag, 0.5)  # held, then 304
                assert same.status == 304 and time.monotonic() - t0 >= 0.45
                loop = asyncio.get_running_loop()
                loop.call_later(0.3, tiny.set_policy, {"version": 2, "policy": "p2",
                                                       "rollout_id": 5, "lockdown_until": None})
                t0 = time.monotonic()
                pushed = await client.policy(first.etag, 20)  # answered at the push
                assert pushed.status == 200 and pushed.policy is not None
                assert pushed.policy.version == 2 and time.monotonic() - t0 < 2
            finally:
                await client.close()
        asyncio.run(scenario())
