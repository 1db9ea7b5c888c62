"""nft_text: JSON commands → `nft -f` text; names that are not nft identifiers are refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outguard.nftables import nft_text, nft_tx
from outguard.nftables.nft_tx import document, remove
from tests.nftables.helpers import compiled_of

T = {"family": "inet", "table": "outguard"}


def _counter(name: str) -> dict[str, Any]:
    return {"add": {"counter": {**T, "name": name}}}


def _rule(chain: str, *expr: dict[str, Any], comment: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {**T, "chain": chain, "expr": list(expr)}
    if comment is not None:
        body["comment"] = comment
    return {"add": {"rule": body}}


# nft 1.0.6's scanner: identifiers are ({letter}|[_.])({letter}|{digit}|[/\-_.])*, ASCII letters
@pytest.mark.parametrize("name", [
    "default", "allow.web-api", "deny.attacker-net", "v_deny_x", "_private", ".dot",
    "g_a_0123456789ab", "l_feed_0123456789ab_4n", "a/b", "A9",
])
def test_accepts_nft_identifiers(name: str) -> None:
    assert nft_text.command_text(_counter(name)) == f"add counter inet outguard {name}"
    assert nft_text.command_text(_rule(name, {"accept": None})) == \
        f"add rule inet outguard {name} accept"


@pytest.mark.parametrize("name", [
    "1abc",          # starts with a digit
    "-x",            # starts with a dash
    "a b",           # space
    'a"b',           # quote
    "a;b",           # statement separator
    "a{b}",
    "a\nb",          # newline
    "a\tb",
    "a:b",           # ':' is no identifier character (hence "allow.web", not "allow:web")
    "a@b",
    "a$b",
    "@set",
])
def test_refuses_names_that_are_not_nft_identifiers(name: str) -> None:
    with pytest.raises(ValueError, match="is not an nft identifier"):
        nft_text.command_text(_counter(name))
    with pytest.raises(ValueError, match="is not an nft identifier"):
        nft_text.command_text(_rule(name, {"accept": None}))
    with pytest.raises(ValueError, match="is not an nft identifier"):
        nft_text.command_text({"add": {"set": {**T, "name": name, "type": "ipv4_addr"}}})


@pytest.mark.parametrize("name", ["", "é", "caf\u00e9", "a\u00b2", "x\u0661"])
def test_refuses_non_ascii_and_empty_names(name: str) -> None:
    with pytest.raises(ValueError, match="is not an nft identifier"):
        nft_text.command_text(_counter(name))


@pytest.mark.parametrize("text", ['say "hi"', "two\nlines"])
def test_refuses_strings_it_cannot_quote(text: str) -> None:
    with pytest.raises(ValueError, match="cannot quote"):
        nft_text.command_text(_rule("allow", {"accept": None}, comment=text))
    with pytest.raises(ValueError, match="cannot quote"):
        nft_text.expr_text({"log": {"prefix": text, "group": 0}})
    with pytest.raises(ValueError, match="cannot quote"):
        nft_text.expr_text({"counter": text})


def _m(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


@pytest.mark.parametrize(("expr", "text"), [
    (_m({"meta": {"key": "oif"}}, "lo"), 'oif "lo"'),
    (_m({"ct": {"key": "state"}}, ["established", "related"], "in"),
     "ct state established,related"),
    (_m({"payload": {"protocol": "icmpv6", "field": "type"}},
        {"set": ["nd-router-solicit", "nd-neighbor-solicit"]}),
     "icmpv6 type { nd-router-solicit, nd-neighbor-solicit }"),
    (_m({"payload": {"protocol": "ip", "field": "daddr"}}, "@l_x_4a"), "ip daddr @l_x_4a"),
    (_m({"payload": {"protocol": "tcp", "field": "dport"}}, 443), "tcp dport 443"),
    (_m({"payload": {"protocol": "udp", "field": "dport"}}, {"set": [53, {"range": [8000, 8100]}]}),
     "udp dport { 53, 8000-8100 }"),
    (_m({"payload": {"protocol": "th", "field": "dport"}}, {"set": [{"range": [1, 2]}]}),
     "th dport { 1-2 }"),
    (_m({"meta": {"key": "l4proto"}}, {"set": ["tcp", "udp"]}), "meta l4proto { tcp, udp }"),
    (_m({"meta": {"key": "l4proto"}}, "tcp"), "meta l4proto tcp"),
    (_m({"meta": {"key": "skuid"}}, 65534), "skuid 65534"),
    (_m({"meta": {"key": "skgid"}}, 0), "skgid 0"),
    (_m({"meta": {"key": "time"}}, 1782864000000000000, "<"), "meta time < 1782864000000000000"),
    (_m({"socket": {"key": "cgroupv2", "level": 2}}, "system.slice/nginx.service"),
     'socket cgroupv2 level 2 "system.slice/nginx.service"'),
    ({"vmap": {"key": {"payload": {"protocol": "ip6", "field": "daddr"}}, "data": "@m_a_6a_x"}},
     "ip6 daddr vmap @m_a_6a_x"),
    ({"counter": "allow.web"}, 'counter name "allow.web"'),
    ({"counter": None}, "counter"),
    ({"limit": {"rate": 10, "per": "second", "burst": 10}}, "limit rate 10/second burst 10 packets"),
    ({"log": {"prefix": "og:deny:x", "group": 3}}, 'log prefix "og:deny:x" group 3'),
    ({"accept": None}, "accept"),
    ({"drop": None}, "drop"),
    ({"goto": {"target": "v_default"}}, "goto v_default"),
    ({"jump": {"target": "deny"}}, "jump deny"),
    ({"reject": {"type": "tcp reset"}}, "reject with tcp reset"),
    ({"reject": {"type": "icmpx", "expr": "admin-prohibited"}},
     "reject with icmpx admin-prohibited"),
])
def test_expr_text(expr: dict[str, Any], text: str) -> None:
    assert nft_text.expr_text(expr) == text


@pytest.mark.parametrize("expr", [
    {"masquerade": None},
    {"match": {"op": "==", "left": {"rt": {"key": "nexthop"}}, "right": 1}},
])
def test_unknown_vocabulary_is_an_error(expr: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unknown"):
        nft_text.expr_text(expr)


def test_unknown_command_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown command"):
        nft_text.command_text({"add": {"flowtable": {**T, "name": "f"}}})


@pytest.mark.parametrize(("cmd", "text"), [
    ({"add": {"table": {"family": "inet", "name": "outguard"}}}, "add table inet outguard"),
    ({"delete": {"table": {"family": "inet", "name": "outguard"}}}, "delete table inet outguard"),
    ({"add": {"set": {**T, "name": "s", "type": "ipv4_addr"}}},
     "add set inet outguard s { type ipv4_addr; }"),
    ({"add": {"set": {**T, "name": "s", "type": "ipv6_addr", "flags": ["interval"]}}},
     "add set inet outguard s { type ipv6_addr; flags interval; }"),
    ({"add": {"map": {**T, "name": "m", "type": "ipv4_addr", "map": "verdict"}}},
     "add map inet outguard m { type ipv4_addr : verdict; }"),
    ({"delete": {"map": {**T, "name": "m"}}}, "delete map inet outguard m"),
    ({"delete": {"set": {**T, "name": "s"}}}, "delete set inet outguard s"),
    ({"add": {"element": {**T, "name": "s", "elem": [
        "192.0.2.1", {"prefix": {"addr": "203.0.113.0", "len": 24}},
        {"range": ["198.51.100.64", "198.51.100.191"]}]}}},
     "add element inet outguard s { 192.0.2.1, 203.0.113.0/24, 198.51.100.64-198.51.100.191 }"),
    ({"add": {"element": {**T, "name": "m", "elem": [
        ["192.0.2.1", {"goto": {"target": "g_a_x"}}]]}}},
     "add element inet outguard m { 192.0.2.1 : goto g_a_x }"),
    ({"add": {"chain": {**T, "name": "allow"}}}, "add chain inet outguard allow"),
    ({"add": {"chain": {**T, "name": "output", "type": "filter", "hook": "output", "prio": 0,
                        "policy": "accept"}}},
     "add chain inet outguard output { type filter hook output priority 0; policy accept; }"),
    ({"flush": {"chain": {**T, "name": "allow"}}}, "flush chain inet outguard allow"),
    ({"delete": {"chain": {**T, "name": "g_a_x"}}}, "delete chain inet outguard g_a_x"),
    ({"delete": {"counter": {**T, "name": "allow.x"}}}, "delete counter inet outguard allow.x"),
    (_rule("allow", {"accept": None}, comment="a comment"),
     'add rule inet outguard allow accept comment "a comment"'),
    ({"metainfo": {"json_schema_version": 1}}, ""),
])
def test_command_text(cmd: dict[str, Any], text: str) -> None:
    assert nft_text.command_text(cmd) == text


def test_script_skips_metainfo_and_ends_with_a_newline() -> None:
    doc = document(remove())
    assert nft_text.script(doc["nftables"]) == \
        "add table inet outguard\ndelete table inet outguard\n"


@pytest.mark.parametrize("policy", [
    "version: 1\nallow:\n  - {name: ws, to: [203.0.113.1], comment: websocket gateway}\n",
    "version: 1\nallow:\n  - {name: socket, to: [203.0.113.1]}\n",
    "version: 1\nallow:\n  - {name: a, for: {user: 0}}\n",
    "version: 1\nallow:\n  - {name: a, for: {unit: socket.service}}\n",
    "version: 1\nallow:\n  - {name: a, for: {cgroup: /a/b}, comment: no socket here}\n",
])
def test_needs_text_reads_the_rules_not_their_words(policy: str) -> None:
    """Rollback and restore read a stored full form back: a rule whose comment or name says
    "socket" is no `socket cgroupv2` match (the stored text was searched for the word once)."""
    compiled = compiled_of(policy)
    stored = json.loads(json.dumps(nft_tx.full(compiled)))  # as the state directory keeps it
    assert nft_text.needs_text(stored) == compiled.needs_text
