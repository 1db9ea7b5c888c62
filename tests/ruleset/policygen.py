"""Random policies for the one-decision property tests (tests/ruleset/test_index.py).

A hypothesis strategy that writes whole policy documents from a small universe of names,
wildcards, addresses, lists, a threat feed, users and an optional `dns:` section, so that the
same names and addresses meet in many rules and lists and every precedence question comes up:
deny against allow, a name in a rule's own `to` against the same name in a list, a wildcard
against an exact name, the resolver's upstream against a deny rule, loopback and the host's own
address against a rule that covers them. Documentation addresses and `.test` names only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

NAMES = ("api.example.test", "b.example.test", "x.cdn.example.test", "cdn.example.test",
         "y.x.cdn.example.test", "c.other.test", "xn--bcher-kva.example.test",
         "z.cdn.example.test")
WILDCARDS = ("*.cdn.example.test", "*.example.test", "*.other.test")
ADDRESSES = ("203.0.113.10", "203.0.113.20", "198.51.100.7", "2001:db8:1::10", "192.0.2.53")
NETWORKS = ("203.0.113.0/28", "198.51.100.0/24", "2001:db8:1::/48", "192.0.2.0/24")
UPSTREAM = "192.0.2.53"
LOCAL = "192.0.2.2"  # "the host's own address": the kernel sends traffic to it through `lo`
FEED_ADDRESSES = ("198.51.100.66", "203.0.113.12")
# where a name's answer goes (never one of the addresses above): a DNS answer outguard gave
FRESH = {4: "203.0.113.177", 6: "2001:db8:77::1"}
# without `dns:` the names are resolved when the policy is lowered: each to addresses of its own
RESOLVED = {n: [f"203.0.113.{200 + i}", f"2001:db8:5::{i + 1}"] for i, n in enumerate(NAMES)}
USERS = (0, 65534)  # root and nobody (gid = uid; nobody is also the resolver's user)
PORTS = (22, 25, 53, 80, 443, 853, 5353, 8443)
FEED_FILE = "og-feed.txt"
NAME_FEED_FILE = "og-names.txt"  # a `domains` feed: names for the resolver (and decide)
FEED_NAMES = ("c.other.test", "b.example.test", "z.cdn.example.test")
FEEDS = ("@feed:og-bad", "@feed:og-names")
# `expires:` in force at the tests' NOW (2026-06-01), or long past (the rule is left out)
EXPIRES = ("2099-01-01T00:00:00Z", "2001-01-01T00:00:00Z")


def fake_resolver(name: str) -> list[str]:
    return list(RESOLVED.get(name, []))


def write_feed(directory: Path) -> Path:
    path = directory / FEED_FILE
    path.write_text("".join(f"{a}\n" for a in FEED_ADDRESSES))
    (directory / NAME_FEED_FILE).write_text("".join(f"{n}\n" for n in FEED_NAMES))
    return path


_TARGET = st.one_of(st.sampled_from(NAMES), st.sampled_from(WILDCARDS),
                    st.sampled_from(ADDRESSES), st.sampled_from(NETWORKS))
# the loader refuses a deny rule that covers the resolver's upstream (every query would fail)
_DENY_TARGET = st.one_of(st.sampled_from(NAMES), st.sampled_from(WILDCARDS),
                         st.sampled_from(ADDRESSES[:-1]), st.sampled_from(NETWORKS[:-1]))


@st.composite
def _rule(draw: st.DrawFn, name: str, lists: list[str], feed: bool) -> dict[str, Any]:
    refs = [f"@{n}" for n in lists] + (list(FEEDS) if feed else [])
    deny = name.startswith("d")
    target = _DENY_TARGET if deny else _TARGET
    rule: dict[str, Any] = {"name": name}
    # one allow rule in six is for every destination; a deny rule for every destination
    # would cover the upstream: it gets ports that are no DNS port
    if draw(st.integers(0, 5)) > 0:
        to = draw(st.lists(st.one_of(target, st.sampled_from(refs)) if refs else target,
                           min_size=1, max_size=3, unique=True))
        rule["to"] = to
    proto = draw(st.sampled_from(["tcp", "udp", None, None, "icmp"]))
    if proto is not None:
        rule["proto"] = proto
    if proto != "icmp" and (draw(st.booleans()) or (deny and "to" not in rule)):
        ports = [p for p in PORTS if not (deny and "to" not in rule and p == 53)]
        rule["ports"] = draw(st.lists(st.sampled_from(ports), min_size=1, max_size=3,
                                      unique=True))
    owner = draw(st.sampled_from([None, None, None, "user", "group"]))
    if owner is not None:
        rule["for"] = {owner: draw(st.sampled_from(USERS))}
    if draw(st.integers(0, 7)) == 0:
        rule["expires"] = draw(st.sampled_from(EXPIRES))
    return rule


@st.composite
def policies(draw: st.DrawFn) -> str:
    """A policy document (YAML text) that loads: the feed file is FEED_FILE next to it."""
    lists: dict[str, list[str]] = {}
    for i in range(draw(st.integers(0, 3))):
        # a list is shared by deny and allow rules: no upstream in it
        lists[f"l{i}"] = draw(st.lists(_DENY_TARGET, min_size=1, max_size=4, unique=True))
    names = list(lists)
    feed = draw(st.booleans())
    doc: dict[str, Any] = {"version": 1,
                           "mode": draw(st.sampled_from(["enforce", "enforce", "audit"]))}
    deny = [draw(_rule(f"d{i}", names, feed)) for i in range(draw(st.integers(0, 3)))]
    allow = [draw(_rule(f"a{i}", names, False)) for i in range(draw(st.integers(1, 4)))]
    if deny:
        doc["deny"] = deny
    doc["allow"] = allow
    used = {t[1:] for r in deny + allow for t in r.get("to", []) if t.startswith("@")}
    if lists:
        # an unused list is refused by the loader: keep only those a rule names
        kept = {k: v for k, v in lists.items() if k in used}
        if kept:
            doc["lists"] = kept
    used_feeds = {t for r in deny for t in r.get("to", [])}
    feeds = {"og-bad": {"file": FEED_FILE, "format": "plain"},
             "og-names": {"file": NAME_FEED_FILE, "format": "domains"}}
    if feed and used_feeds & set(FEEDS):
        doc["feeds"] = {k: v for k, v in feeds.items() if f"@feed:{k}" in used_feeds}
    if draw(st.integers(0, 9)) < 7:
        doc["dns"] = {"listen": "127.0.0.1:53", "upstreams": [UPSTREAM], "user": "nobody"}
    doc["options"] = {"default_action": draw(st.sampled_from(["drop", "reject"]))}
    return yaml.safe_dump(doc, sort_keys=False)
