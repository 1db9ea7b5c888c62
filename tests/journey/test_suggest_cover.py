"""`suggest` writes no rule another of its rules allows: a "uid:N" flow (a socket gone before
the learner found its process) folds into its user's process rule, and a rule that another
wholly covers is left out, its evidence counted in the one that stays (journey trial defect 1)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outguard.events import LearnedFlow
from outguard.journey.cover import Shape, covers, entry_covers, redundant
from outguard.journey.simulate import LearnedNames, Outcome, simulate
from outguard.journey.suggest import suggest
from outguard.pipeline import lower_policy

from .flows import flow
from .helpers import replay, suggested

NAMES = ("api.example.test",)
DNS = flow("192.0.2.53", 53, "udp", exe="/usr/lib/systemd/systemd-resolved",
           user="systemd-resolve", uid=101)


def known(name: str) -> bool:
    return name in ("root", "nobody")


def trial() -> list[LearnedFlow]:
    """The newcomer's table: curl as nobody and python as root, each beside the same flows
    recorded under the uid only."""
    out = [DNS]
    for port in (80, 443):
        out.append(flow("203.0.113.10", port, names=NAMES, exe="/usr/bin/curl",
                        user="nobody", uid=65534, count=3))
        out.append(flow("203.0.113.10", port, names=NAMES, exe="uid:65534", user="nobody",
                        uid=65534))
    out.append(flow("203.0.113.40", 123, "udp", exe="/usr/bin/python3.11", user="root", uid=0))
    out.append(flow("203.0.113.40", 123, "udp", exe="uid:0", user=None, uid=0, count=2))
    return out


def test_uid_only_flows_fold_into_their_users_process_rule(tmp_path: Path) -> None:
    flows = trial()
    s, text, policy = suggested(flows, tmp_path, user_known=known)
    rules = {r.name: r for r in s.rules}
    assert sorted(rules) == ["curl", "python3.11"], text
    curl, ntp = rules["curl"], rules["python3.11"]
    assert curl.owner == {"user": "nobody"} and ntp.owner == {"user": "root"}
    # counted where they went: 2 curl flows + 2 uid flows, 6 + 2 connections
    assert (curl.evidence.flows, curl.evidence.connections) == (4, 8)
    assert "uid:65534" in curl.comment() and "/usr/bin/curl" in curl.comment()
    assert (ntp.evidence.flows, ntp.evidence.connections) == (2, 3)
    assert replay(policy, flows).regressions == 0


def test_what_no_process_rule_allows_stays_the_uids(tmp_path: Path) -> None:
    flows = [*trial(),
             flow("203.0.113.10", 8080, names=NAMES, exe="uid:65534", user="nobody", uid=65534),
             flow("203.0.113.10", 443, names=NAMES, exe="uid:0", user="root", uid=0)]
    s, text, policy = suggested(flows, tmp_path, user_known=known)
    rules = {r.name: r for r in s.rules}
    # nobody's 8080 is no process rule's: a rule of its own with only that port
    assert rules["uid-65534"].ports == [(8080, 8080)], text
    assert rules["uid-65534"].owner == {"user": "nobody"}
    # root's 443 is not nobody's curl rule's: another user
    assert rules["uid-0"].owner == {"user": "root"} and rules["uid-0"].ports == [(443, 443)]
    assert replay(policy, flows).regressions == 0


def test_a_rule_without_for_takes_the_uids_flows(tmp_path: Path) -> None:
    flows = [flow("203.0.113.10", 443, names=NAMES, exe="/usr/bin/curl", user="root", uid=0),
             flow("203.0.113.10", 443, names=NAMES, exe="/usr/bin/curl", user="nobody",
                  uid=65534),
             flow("203.0.113.10", 443, names=NAMES, exe="uid:65534", user=None, uid=65534),
             DNS]
    s, _text, _policy = suggested(flows, tmp_path, user_known=known)
    assert [(r.name, r.owner) for r in s.rules] == [("curl", None)]
    assert s.rules[0].evidence.flows == 3


def test_two_processes_of_one_user_with_the_same_needs_make_one_rule() -> None:
    flows = [flow("203.0.113.10", 443, names=NAMES, exe="/usr/bin/curl"),
             flow("203.0.113.10", 443, names=NAMES, exe="/usr/bin/wget"), DNS]
    s = suggest(flows, user_known=known)
    assert [r.name for r in s.rules] == ["curl"]
    assert s.rules[0].evidence.exes == {"/usr/bin/curl", "/usr/bin/wget"}


def test_cover_semantics() -> None:
    root = {"user": "root"}
    web = Shape(root, ("*.example.test",), "any", ((80, 80), (443, 443)))
    assert covers(web, Shape(root, ("api.example.test",), "tcp", ((443, 443),)))
    assert not covers(web, Shape(None, ("api.example.test",), "tcp", ((443, 443),)))
    assert not covers(web, Shape(root, ("example.test",), "tcp", ((443, 443),)))
    assert not covers(web, Shape(root, ("api.example.test",), "tcp", ((80, 443),)))
    assert not covers(web, Shape(root, ("api.example.test",), "icmp", ()))
    assert not covers(web, Shape(root, ("api.example.test",), "tcp", ()))
    assert covers(Shape(None, ("a.test",), "any", ()), Shape(root, ("a.test",), "icmp", ()))
    assert not covers(Shape({"unit": "x.service"}, ("a.test",), "any", ()),
                      Shape(root, ("a.test",), "tcp", ()))
    assert covers(Shape(None, ("a.test",), "tcp", ((80, 81), (82, 90))),
                  Shape(None, ("a.test",), "tcp", ((80, 85),)))
    assert entry_covers("*.test", "*.a.test") and not entry_covers("*.a.test", "*.test")
    same = Shape(root, ("a.test",), "tcp", ((443, 443),))
    assert redundant([same, same, web]) == {1: 0}


def test_a_chain_of_covers_lands_on_the_rule_that_stays() -> None:
    small = Shape(None, ("a.test",), "tcp", ((443, 443),))
    mid = Shape(None, ("a.test",), "tcp", ((80, 443),))
    big = Shape(None, ("a.test", "b.test"), "any", ())
    assert redundant([small, mid, big]) == {0: 2, 1: 2}


ADDRS = ["203.0.113.1", "203.0.113.2", "192.0.2.53"]
HOSTS = ["api.example.test", "a.example.test", "b.example.test", "c.example.test"]


@st.composite
def flows(draw: st.DrawFn) -> LearnedFlow:
    proto = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    port = None if proto == "icmp" else draw(st.sampled_from([53, 80, 123, 443, 444]))
    user, uid = draw(st.sampled_from([("root", 0), ("nobody", 65534), (None, 65534)]))
    exe = draw(st.sampled_from(["/usr/bin/curl", "/usr/bin/wget", f"uid:{uid}"]))
    return flow(draw(st.sampled_from(ADDRS)), port, proto, exe=exe, user=user, uid=uid,
                names=tuple(draw(st.lists(st.sampled_from(HOSTS), max_size=2, unique=True))),
                count=draw(st.integers(1, 3)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(flows(), min_size=1, max_size=12))
def test_no_suggested_rule_is_covered_by_another_and_nothing_breaks(table: list[LearnedFlow]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s, text, policy = suggested(table, Path(tmp), user_known=known)
        shapes = [Shape(r.owner, tuple(e.value for e in r.to), r.proto, tuple(r.ports))
                  for r in s.rules]
        for i, inner in enumerate(shapes):
            for j, outer in enumerate(shapes):
                assert i == j or not covers(outer, inner), text
        # folding and leaving out never lose an allowance: only DNS the resolver takes over
        # (to a server that is not an upstream, refused and listed) would be blocked
        names = LearnedNames(table)
        broken: list[Outcome] = []
        simulate(lower_policy(policy, resolver=names.resolver), table, names=names,
                 each=lambda o: broken.append(o) if o.regression else None)
        assert all(o.flow.port == 53 for o in broken), text


def test_the_indexed_lookup_is_entry_covers() -> None:
    entries = ["a.test", "*.test", "b.a.test", "*.a.test", "test", "203.0.113.1", "x.b.test"]
    for outer in entries:
        shape = Shape(None, (outer,), "any", ())
        for inner in entries:
            assert shape.takes(inner) == entry_covers(outer, inner), (outer, inner)
