"""kernel.libnft: libnftables in-process, inside a private namespace."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from outguard.errors import KernelError
from outguard.kernel import netns as ns
from outguard.kernel.libnft import Nft

pytestmark = pytest.mark.kernel

TABLE = {"family": "inet", "name": "outguard"}


def _doc(*cmds: dict[str, Any]) -> dict[str, Any]:
    return {"nftables": list(cmds)}


def _base(*extra: dict[str, Any]) -> dict[str, Any]:
    """Table, a hash set with one address, an output chain."""
    return _doc(
        {"add": {"table": TABLE}},
        {"add": {"set": {**_tbl(), "name": "allow4", "type": "ipv4_addr"}}},
        {"add": {"element": {**_tbl(), "name": "allow4", "elem": ["192.0.2.1"]}}},
        {"add": {"chain": {**_tbl(), "name": "out", "type": "filter", "hook": "output",
                           "prio": 0, "policy": "accept"}}},
        *extra,
    )  # fmt: skip


def _tbl() -> dict[str, str]:
    return {"family": "inet", "table": "outguard"}


def _ruleset(name: str) -> Any:
    return json.loads(ns.run(name, ["nft", "-j", "list", "ruleset"]).stdout)


def test_run_json_creates_table_only_in_the_namespace(netns: str) -> None:
    with Nft(netns) as nft:
        assert nft.run_json(_base()) == {}
        listed = nft.run_json(_doc({"list": {"tables": None}}))
    tables = [o["table"] for o in listed["nftables"] if "table" in o]
    assert [(t["family"], t["name"]) for t in tables] == [("inet", "outguard")]
    assert "table inet outguard" in ns.run(netns, ["nft", "list", "tables"]).stdout
    host = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    assert "table inet outguard" not in host.stdout


def test_bad_batch_changes_nothing(netns: str) -> None:
    with Nft(netns) as nft:
        nft.run_json(_base())
        before = _ruleset(netns)
        bad = _doc(
            {"add": {"set": {**_tbl(), "name": "deny4", "type": "ipv4_addr"}}},
            {"flush": {"chain": {**_tbl(), "name": "out"}}},
            {"add": {"rule": {**_tbl(), "chain": "out", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                           "right": "@no_such_set"}},
                {"drop": None}]}}},
        )  # fmt: skip
        with pytest.raises(KernelError, match="nftables refused running a batch") as err:
            nft.run_json(bad)
        assert "no_such_set" in str(err.value) or "No such file" in str(err.value)
        assert _ruleset(netns) == before  # neither the set nor the flush happened


def test_error_text_comes_from_nft(netns: str) -> None:
    with Nft(netns) as nft, pytest.raises(KernelError, match="Unknown object"):
        nft.run_json(_doc({"add": {"bogus": {}}}))


def test_check_json_validates_without_committing(netns: str) -> None:
    with Nft(netns) as nft:
        nft.check_json(_base())  # valid
        assert "table" not in ns.run(netns, ["nft", "list", "tables"]).stdout
        with pytest.raises(KernelError, match="refused check"):
            nft.check_json(_doc({"add": {"chain": {**_tbl(), "name": "c"}}}))  # no table
        nft.run_json(_base())  # dry run was switched off again
    assert "table inet outguard" in ns.run(netns, ["nft", "list", "tables"]).stdout


def test_run_text_and_modes_do_not_leak(netns: str) -> None:
    with Nft(netns) as nft:
        nft.run_text("add table inet outguard")
        assert nft.run_text("list tables") == "table inet outguard\n"
        # JSON right after text and back: the output flag follows the call, not the last call.
        assert "nftables" in nft.run_json(_doc({"list": {"tables": None}}))
        assert nft.run_text("add table ip other") == ""
        assert nft.run_json(_doc({"add": {"table": {"family": "ip", "name": "x"}}})) == {}
        with pytest.raises(KernelError, match="syntax error"):
            nft.run_text("add tabel inet nope")
        # 1.0.6 reads JSON only with the JSON output flag: run_text (flag off) must not.
        with pytest.raises(KernelError, match="syntax error"):
            nft.run_text(json.dumps(_doc({"add": {"table": {"family": "ip", "name": "y"}}})))


def test_closed_context(netns: str) -> None:
    nft = Nft(netns)
    nft.close()
    nft.close()  # idempotent
    with pytest.raises(KernelError, match="closed"):
        nft.run_text("list tables")


def test_missing_namespace() -> None:
    with pytest.raises(KernelError, match="no network namespace"):
        Nft("ogt-absent")


def test_two_contexts_in_two_namespaces(netns: str, netns2: str) -> None:
    with Nft(netns) as a, Nft(netns2) as b:
        a.run_text("add table inet only_a")
        b.run_text("add table inet only_b")
        assert a.run_text("list tables") == "table inet only_a\n"
        assert b.run_text("list tables") == "table inet only_b\n"
