"""`check` runs what the kernel would: every policy the loader accepts, the kernel accepts.

Hypothesis builds policies that are mostly valid (so that they get past the loader) and full of
the corners a hostile tester tries: overlapping ports and networks, duplicate destinations,
IPv4-mapped addresses, long names and comments, extreme options, a `dns:` section. Each policy
the loader accepts is compiled, to the JSON batch `apply` sends and to nft text, and checked by
the kernel in check mode (libnftables' dry run and `nft -c -f`: nothing is committed) inside a
network namespace made for this test. Rules owned by a systemd unit or cgroup are left out: the
kernel resolves those paths against the machine's cgroups (tests/kernel covers them).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from outguard.errors import KernelError, PolicyError
from outguard.kernel import netns as ns
from outguard.kernel.libnft import Nft
from outguard.nftables import nft_text, nft_tx
from outguard.nftables.nft import compile_ruleset
from outguard.policy.load import load_text
from outguard.policy.loaded import Policy
from outguard.ruleset.lower import lower
from tests.kernel.conftest import kernel_skip_reason, new_netns

pytestmark = pytest.mark.kernel

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

ADDRS = ["203.0.113.10", "203.0.113.11", "198.51.100.7", "192.0.2.53", "2001:db8::10",
         "2001:db8::53", "::ffff:203.0.113.10", "::ffff:198.51.100.7", "0.0.0.0", "::",
         "255.255.255.255", "::1", "127.0.0.1"]
NETS = ["203.0.113.0/24", "203.0.113.0/25", "203.0.113.8/29", "198.51.100.0/24",
        "2001:db8::/32", "2001:db8::/64", "2001:db8:1::/48", "0.0.0.0/0", "::/0", "0.0.0.0/1",
        "::ffff:0:0/96", "::ffff:203.0.113.0/120", "128.0.0.0/1", "192.0.2.0/31",
        "2001:db8::/127"]
NAMES = ["example.test", "api.example.test", "*.cdn.example.test", "xn--bcher-kva.example"]
PORTS: list[Any] = [1, 22, 53, 80, 443, 8080, 65535, "1-1024", "1-65535", "80-90", "85-95",
                    "443-443", "8000-8100", "100-200", "150-250"]
USERS: list[Any] = [0, 65534, "nobody", "root", 4294967294, 1]

UPSTREAMS = ["192.0.2.53", "192.0.2.53:5353", "2001:db8::53", "[2001:db8::53]:53", "203.0.113.10",
             "::ffff:192.0.2.53", "[::ffff:192.0.2.53]:53", "fe80::1%eth0", "[fe80::1%lo]:53",
             "0.0.0.0", "::", "127.0.0.1", "192.0.2.53:853"]
GOOD_UPSTREAMS = ["192.0.2.53", "192.0.2.53:5353", "2001:db8::53", "[2001:db8::53]:53",
                  "203.0.113.10"]
# comments: any printable text (what the loader refuses is tested in test_hostile.py)
text_chars = st.characters(blacklist_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"],
                           blacklist_characters='"')


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, valid, other)


def rule_names() -> st.SearchStrategy[str]:
    first = st.sampled_from("abcxyz0189AZ")
    rest = st.text(alphabet="abcxyz019_.-", max_size=47)
    return st.builds(lambda f, r: f + r, first, rest)


def rule(list_names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    dest = st.sampled_from(ADDRS + NETS + NAMES + [f"@{n}" for n in list_names])
    return st.fixed_dictionaries(
        {"name": rule_names()},
        optional={
            "to": st.lists(dest, min_size=1, max_size=6),
            "ports": st.lists(st.sampled_from(PORTS), min_size=1, max_size=5),
            "proto": st.sampled_from(["tcp", "udp", "any", "tcp", "udp", "any", "icmp"]),
            "for": st.one_of(
                st.fixed_dictionaries({"user": st.sampled_from(USERS)}),
                st.fixed_dictionaries({"group": st.sampled_from([0, "root", 65534])}),
                st.fixed_dictionaries({"user": st.sampled_from(USERS),
                                       "group": st.sampled_from([0, "root", 65534])})),
            "comment": st.text(text_chars, max_size=200),
            "expires": st.sampled_from(["2001-01-01T00:00:00Z", "2030-01-01T00:00:00Z",
                                        "2261-12-31T23:59:59Z", "2030-06-01", "2026-06-01T13:00:00"]),
        })


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    list_names = draw(st.lists(st.sampled_from(["partners", "bad", "a:b.c-d", "x" * 64, "f"]),
                               max_size=3, unique=True))
    doc: dict[str, Any] = {"version": 1}
    if draw(st.booleans()):
        doc["mode"] = draw(st.sampled_from(["enforce", "audit"]))
    doc["allow"] = draw(st.lists(rule(list_names), max_size=4))
    doc["deny"] = draw(st.lists(rule(list_names), max_size=3))
    doc["lists"] = {n: draw(st.lists(st.sampled_from(ADDRS + NETS + NAMES[:2]), max_size=6))
                    for n in list_names}
    if draw(st.booleans()):
        doc["options"] = draw(st.fixed_dictionaries({}, optional={
            "default_action": st.sampled_from(["drop", "reject"]),
            "nflog_group": st.sampled_from([0, 1, 65535]),
            "log_rate": st.sampled_from(["1/second", "10/second", "1/day", "999999999/second",
                                         "999999999/day", "60/minute"]),
            "forward": st.booleans()}))
    if draw(st.booleans()):
        doc["dns"] = draw(st.fixed_dictionaries(
            {"upstreams": st.lists(mostly(st.sampled_from(GOOD_UPSTREAMS), st.sampled_from(UPSTREAMS)),
                                   min_size=1, max_size=3)},
            optional={"listen": st.sampled_from(["127.0.0.1:53", "127.0.0.53:5353", "[::1]:53"]),
                      "user": st.sampled_from([0, "root", 65534, -1, 2**32, 2**32 - 1,
                                               "no-such-user-xyz"])}))
    # rule names must be unique; the loader refuses duplicates (tested elsewhere)
    seen: set[str] = set()
    for section in ("deny", "allow"):
        doc[section] = [r for r in doc[section] if not (r["name"] in seen or seen.add(r["name"]))]
    return doc


@pytest.fixture(scope="module")
def kernel() -> Iterator[tuple[str, Nft]]:
    if reason := kernel_skip_reason():
        pytest.skip(reason)
    name = new_netns()
    try:
        with Nft(name) as nft:
            yield name, nft
    finally:
        ns.delete(name)


def kernel_refusal(policy: Policy, netns: str, nft: Nft) -> str | None:
    """What the kernel says to the ruleset `apply` would send (None: it takes it)."""
    compiled = compile_ruleset(lower(policy, resolver=lambda _n: ["203.0.113.99", "2001:db8::99"],
                                     now=NOW))
    cmds = nft_tx.full(compiled)
    if not compiled.needs_text:
        try:
            nft.check_json(nft_tx.document(cmds))
        except KernelError as exc:
            return f"JSON batch: {exc}"
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        f.write(nft_text.script(cmds))
        f.flush()
        proc = subprocess.run(ns.exec_argv(netns, ["nft", "-c", "-f", f.name]),
                              capture_output=True, text=True, check=False, timeout=60)
    return None if proc.returncode == 0 else f"nft -c -f: {proc.stderr.strip()}"


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(doc=policies())
# the classes this test found, each once accepted by the loader and refused by the kernel
@example(doc={"version": 1, "allow": [{"name": "a", "ports": [443, "1-1024"], "proto": "tcp"}]})
@example(doc={"version": 1, "deny": [{"name": "a", "ports": ["1-100", "50-200"]}]})
@example(doc={"version": 1, "allow": [{"name": "a", "ports": ["1-65535", 1]}]})
@example(doc={"version": 1, "dns": {"upstreams": ["fe80::1%eth0"]}})
@example(doc={"version": 1, "dns": {"upstreams": ["192.0.2.53"], "user": -1}})
@example(doc={"version": 1, "dns": {"upstreams": ["192.0.2.53"], "user": 2**32}})
@example(doc={"version": 1, "dns": {"upstreams": ["192.0.2.53"], "user": "no-such-user-xyz"}})
def test_every_policy_check_accepts_the_kernel_accepts(doc: dict[str, Any],
                                                      kernel: tuple[str, Nft]) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    try:
        policy = load_text(text, "fuzz.yaml", base_dir=Path("/nonexistent-outguard-test-dir"))
    except PolicyError:
        event("refused by check")
        return
    event("accepted by check")
    refusal = kernel_refusal(policy, *kernel)
    assert refusal is None, f"check accepted, the kernel refused:\n{text}\n{refusal}"
