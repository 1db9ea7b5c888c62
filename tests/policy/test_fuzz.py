"""Property tests for the loader: any input gives a Policy or a PolicyError, never a crash.

Two generators: arbitrary text, and YAML documents built from dicts, lists and scalars whose keys
are the policy's real key names, so that the fuzzer gets past the first `unknown key` and into
every validator. Inputs that once crashed the loader are pinned in `test_load.py` (CRASHERS).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from outguard.errors import PolicyError
from outguard.nftables import nft_text, nft_tx
from outguard.nftables.nft import compile_ruleset
from outguard.policy.load import load_text
from outguard.policy.loaded import Policy
from outguard.ruleset.lower import lower

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

KEYS = ["version", "mode", "allow", "deny", "lists", "options", "name", "to", "ports", "proto",
        "for", "user", "group", "unit", "cgroup", "comment", "expires", "default_action",
        "nflog_group", "log_rate", "forward", "file", "items", "dns", "upstreams", "listen",
        "feeds", "url", "format", "alerts", "syslog", "webhook", "blocklists"]

WEIRD_STRINGS = [
    "", " ", "1", "0", "-1", "65535", "65536", "80-443", "443-80", "1-65535", " 22 ",
    "tcp", "udp", "icmp", "any", "sctp", "enforce", "audit", "drop", "reject", "accept",
    "203.0.113.10", "10.0.0.300", "198.51.100.0/24", "10.0.0.1/8", "0.0.0.0/0", "::/0",
    "2001:db8::10", "2001:db8::/129", "2001:db8:::1", "fe80::1%eth0", "example.test",
    "*.example.test", "*.com", "@blocklist", "@", "@nope", "@x y", "bücher.example",
    "nobody", "root", "no-such-user-xyz", "nginx.service", "/system.slice/x.service",
    "/a/../b", "a b", "10/second", "0/second", "1000000000/day", "fast",
    "2026-06-01T12:00:00Z", "2001-01-01", "2099-12-31T23:59:59+14:00", "tomorrow",
    "web-api", "x" * 49, "x" * 201, 'say "hi"', "tab\there", "line\nbreak", "\u2028",
    "feed.txt", "/", ".", "-", "~", "null", "true", "no", "yes", "22:22", "0x1F",
    "😀", "\ufeff", "\\", "{", "[", "&a", "*a", "!!int", "%", "`",
]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 53, 443, 65535, 65536, 2**32, 2**63]),
    st.sampled_from(WEIRD_STRINGS),
    st.text(max_size=30),
    st.floats(allow_nan=True, allow_infinity=True),
)

documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=6),
    ),
    max_leaves=15,
)

values = st.one_of(scalars, st.lists(scalars, max_size=4))  # cheaper than documents


def mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` about four times in five."""
    return st.one_of(valid, valid, valid, valid, other)


GOOD_TO = ["203.0.113.10", "2001:db8::10", "198.51.100.0/24", "2001:db8:bad::/48", "0.0.0.0/0",
           "example.test", "*.cdn.example.test", "@x", "@blocklist"]
to_values = st.lists(mostly(st.sampled_from(GOOD_TO), scalars), min_size=1, max_size=4)
port_values = st.lists(mostly(st.sampled_from([1, 53, 443, 65535, "8000-8100", "1-65535"]),
                              scalars), min_size=1, max_size=4)
owner_values = st.dictionaries(
    st.sampled_from(["user", "group", "unit", "cgroup", "uid"]),
    mostly(st.sampled_from([0, 65534, "nobody", "root", "nginx.service",
                            "/system.slice/a.service"]), scalars), min_size=1, max_size=2)


def rule() -> st.SearchStrategy[dict[str, Any]]:
    """A rule-shaped mapping: mostly valid keys, values valid about half of the time."""
    return st.fixed_dictionaries(
        {"name": mostly(st.text(alphabet="abcdefxyz-.", min_size=1, max_size=8), scalars)},
        optional={
            "to": mostly(to_values, values),
            "ports": mostly(port_values, values),
            "proto": mostly(st.sampled_from(["tcp", "udp", "any"]), scalars),
            "for": mostly(owner_values, values),
            "comment": mostly(st.sampled_from(["why", "é" * 150]), scalars),
            "expires": mostly(st.sampled_from(["2001-01-01T00:00:00Z", "2099-01-01T00:00:00Z",
                                               "2030-01-01"]), scalars),
        },
    )


policies = st.fixed_dictionaries(
    {"version": mostly(st.just(1), scalars)},
    optional={
        "mode": mostly(st.sampled_from(["enforce", "audit"]), scalars),
        "allow": mostly(st.lists(rule(), max_size=3), values),
        "deny": mostly(st.lists(rule(), max_size=3), values),
        "lists": st.dictionaries(st.sampled_from(["blocklist", "x", "feed", "a b"]),
                                 st.one_of(to_values, values,
                                           st.fixed_dictionaries({}, optional={
                                               "file": scalars, "items": to_values})),
                                 max_size=3),
        "options": mostly(st.fixed_dictionaries({}, optional={
            "default_action": mostly(st.sampled_from(["drop", "reject"]), scalars),
            "nflog_group": mostly(st.integers(0, 65535), scalars),
            "log_rate": mostly(st.sampled_from(["10/second", "1/day"]), scalars),
            "forward": mostly(st.booleans(), scalars)}), values),
        "dns": mostly(st.fixed_dictionaries(
            {"upstreams": st.lists(mostly(st.sampled_from(
                ["192.0.2.53", "[2001:db8::53]:53", "fe80::1%eth0", "::ffff:192.0.2.53", "0.0.0.0",
                 "203.0.113.10"]), scalars), max_size=3)},
            optional={"user": mostly(st.sampled_from([0, "root", -1, "nobdy"]), scalars),
                      "blocklists": st.lists(scalars, max_size=2),
                      "listen": mostly(st.sampled_from(["127.0.0.1:53", "[::ffff:0.0.0.0]:53"]),
                                       scalars)}), values),
    },
)


def _safe_file_names(data: Any) -> Any:
    """Keep `file:` values away from real files (/dev/zero would hang the loader)."""
    if isinstance(data, dict):
        return {k: (f"fuzz-{v!s}"[:50]
                    if k == "file" and isinstance(v, str) else _safe_file_names(v))
                for k, v in data.items()}
    if isinstance(data, list):
        return [_safe_file_names(v) for v in data]
    return data


def check_load(text: str, base_dir: Path) -> Policy | None:
    """The property: a Policy, or a PolicyError whose every problem is located and explained."""
    try:
        return load_text(text, "fuzz.yaml", base_dir=base_dir)
    except PolicyError as err:
        assert err.problems, "a PolicyError with no problem"
        for p in err.problems:
            assert p.line >= 1 and p.col >= 1, p
            assert p.message.strip(), p
            assert isinstance(p.path, str)
            assert str(p).startswith(f"{p.file}:{p.line}:{p.col}: ")
        return None


@FUZZ
@given(text=st.text(max_size=300))
@example(text="")
@example(text="version: 1\n")
@example(text="- 1\n- 2\n")
@example(text="version: 1\nallow: [")
@example(text="{version: 1, allow: [{name: a, to: [203.0.113.1]}]}")
@example(text="version: 1\n---\nversion: 1\n")
@example(text="version: 1\nallow:\n  - name: a\n    to: ['@x']\nlists:\n  x: {file: /}\n")
@example(text="version: 1\n? [a]\n: b\n")
@example(text="version: !!binary aGVsbG8=\n")
@example(text="version: 1\nallow: &a [{name: a}]\ndeny: *a\n")
def test_any_text(text: str, tmp_path_factory: Any) -> None:
    check_load(text, tmp_path_factory.getbasetemp())


@FUZZ
@given(doc=documents)
def test_any_yaml_structure(doc: Any, tmp_path_factory: Any) -> None:
    text = yaml.safe_dump(_safe_file_names(doc), allow_unicode=True)
    check_load(text, tmp_path_factory.getbasetemp())


@FUZZ
@given(doc=policies, flow_style=st.booleans())
def test_any_policy_shaped_structure(doc: dict[str, Any], flow_style: bool,
                                     tmp_path_factory: Any) -> None:
    text = yaml.safe_dump(_safe_file_names(doc), allow_unicode=True,
                          default_flow_style=flow_style, sort_keys=False)
    policy = check_load(text, tmp_path_factory.getbasetemp())
    event("loaded" if policy is not None else "refused")
    if policy is not None:
        # a policy that loads is one the rest of the pipeline can take
        assert policy.doc.version == 1
        names = [r.name for _s, _i, r in policy.rules()]
        assert len(names) == len(set(names))
        for w in policy.warnings:
            assert w.line >= 1 and w.col >= 1 and w.message
        # ... and compiles, to text and JSON
        ruleset = lower(policy, resolver=lambda _name: ["203.0.113.99"], now=NOW)
        cmds = nft_tx.full(compile_ruleset(ruleset))
        assert nft_text.script(cmds).startswith("add table inet outguard\n")
        json.dumps(nft_tx.document(cmds))


def test_lone_surrogate_text() -> None:
    check_load("version: 1\n# \ud800\n", Path("/nonexistent-outguard-test-dir"))
