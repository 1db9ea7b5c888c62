"""Properties over any learned table: the suggested policy loads (check finds no error),
replaying the table through it blocks no learned, unclassified flow except those the
suggestion lists as "seen, not allowed" (and says why), every classified flow stays blocked,
and the same flows in any order give the same file."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outguard.events import LearnedFlow
from outguard.journey.psl import wildcard_safe
from outguard.journey.render import render
from outguard.journey.simulate import LearnedNames, Replayer, classified
from outguard.journey.suggest import suggest
from outguard.pipeline import lower_policy

from .flows import flow
from .helpers import replay, suggested

ADDRS = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "198.51.100.7", "192.0.2.53",
         "2001:db8::1", "2001:db8::2", "127.0.0.1"]
NAMES = ["api.example.com", "a.example.com", "b.example.com", "c.example.com", "example.com",
         "x.example.co.uk", "a.co.uk", "b.co.uk", "c.co.uk", "b1.s3.amazonaws.com",
         "b2.s3.amazonaws.com", "b3.s3.amazonaws.com", "ec2.amazonaws.com", "evil.example"]
USERS = [("root", 0), ("nobody", 65534), (None, None), (None, 4242)]
UNITS = [None, "app.service", "backup.service"]
FEED = {"198.51.100.7"}


@st.composite
def flows(draw: st.DrawFn) -> LearnedFlow:
    proto = draw(st.sampled_from(["tcp", "tcp", "udp", "icmp", "other"]))
    port = None if proto in ("icmp", "other") else draw(
        st.sampled_from([22, 53, 80, 123, 443, 853, 8000, 8001, 8003]))
    user, uid = draw(st.sampled_from(USERS))
    unit = draw(st.sampled_from(UNITS))
    cgroup = draw(st.sampled_from([None, f"/system.slice/{unit}", "/user.slice/u"])) \
        if unit else None
    severity = draw(st.sampled_from([None, None, None, "low", "medium", "critical"]))
    return flow(draw(st.sampled_from(ADDRS)), port, proto,
                names=tuple(draw(st.lists(st.sampled_from(NAMES), max_size=2, unique=True))),
                exe=draw(st.sampled_from(["/usr/bin/curl", "/usr/bin/java", None])),
                user=user, uid=uid, unit=unit, cgroup=cgroup,
                decision=draw(st.sampled_from(["", "allow:x", "default"])),
                signature="sig" if severity else None, severity=severity,
                count=draw(st.integers(1, 5)), age=draw(st.integers(0, 100)))


TABLES = st.lists(flows(), max_size=25)
# derandomized: CI sees the same examples every run (a local run with --hypothesis-seed or a
# larger max_examples explores further)
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(TABLES, st.booleans())
def test_suggest_then_simulate_blocks_no_learned_unclassified_flow(
        table: list[LearnedFlow], per_host: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s, _text, policy = suggested(table, Path(tmp), per_host=per_host,
                                     on_feed=lambda d: "feed" if d in FEED else None)
        named = {f.dst for f in table if f.names}
        for entry in (e.value for r in s.rules for e in r.to):
            assert entry not in named, f"the address of a named destination: {entry}"
            if entry.startswith("*."):
                assert wildcard_safe(entry[2:]), entry
        refused = {(r.dst, r.port, r.proto) for r in s.refused}
        banned = {f.dst for f in table if classified(f)} | (FEED & {f.dst for f in table})
        banned_names = {n for f in table if f.dst in banned for n in f.names}
        for r in s.refused:  # refused only for a reason the issue gives
            named = {n for f in table if f.dst == r.dst for n in f.names}
            assert r.dst in banned or r.port == 853 or (named and named <= banned_names), r
        blocked: list[tuple[LearnedFlow, bool]] = []
        summary = replay(policy, table)
        assert summary.flows == len(table)
        names = LearnedNames(table)
        replayer = Replayer(lower_policy(policy, resolver=names.resolver), names=names)
        for f in table:
            blocked.append((f, replayer.replay(f).blocked))
        for f, is_blocked in blocked:
            if classified(f) and f.dst != "127.0.0.1":
                assert is_blocked, f"a classified flow is allowed: {f}"
            elif is_blocked:
                assert (f.dst, f.port, f.proto) in refused, \
                    f"blocked, and not listed as refused: {f}\n{render(s)}"


@SETTINGS
@given(TABLES, st.randoms())
def test_suggest_is_deterministic(table: list[LearnedFlow], rnd: object) -> None:
    first = render(suggest(table))
    shuffled = list(table)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert render(suggest(shuffled)) == first


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(TABLES, TABLES)
def test_against_fills_what_the_user_policy_misses(
        first: list[LearnedFlow], later: list[LearnedFlow]) -> None:
    """A policy suggested from the first week, then `--against` it over both weeks: the merged
    file keeps the user's and blocks no unclassified flow it does not list as refused."""
    from outguard.journey.against import merge
    from outguard.pipeline import load_policy

    table = first + later
    with tempfile.TemporaryDirectory() as tmp:
        _s, text, user = suggested(first, Path(tmp))
        names = LearnedNames(table)
        lowered = lower_policy(user, resolver=names.resolver)
        replayer = Replayer(lowered, names=names)
        s = suggest(table, keep=lambda f: replayer.replay(f).blocked,
                    use_dns=lowered.dns is not None,
                    upstreams=[host for host, _port in lowered.dns.upstreams]
                    if lowered.dns is not None else None,
                    taken=[r.name for r in user.doc.allow])
        merged_text = merge(text, "p.yaml", s)
        rest = iter(merged_text.splitlines())
        assert all(line in rest for line in text.splitlines() if line != "allow: []"), \
            "the user's lines, in order"
        path = Path(tmp) / "merged.yaml"
        path.write_text(merged_text)
        merged = load_policy(path)
        refused = {(r.dst, r.port, r.proto) for r in s.refused} | \
            {(r.dst, r.port, r.proto) for r in _s.refused}
        names = LearnedNames(table)
        replayer = Replayer(lower_policy(merged, resolver=names.resolver), names=names)
        for f in table:
            if not classified(f) and replayer.replay(f).blocked:
                assert (f.dst, f.port, f.proto) in refused, f"{f}\n{merged_text}"


@SETTINGS
@given(TABLES, TABLES)
def test_the_narrowed_ruleset_decides_as_the_whole_one(
        learned: list[LearnedFlow], asked: list[LearnedFlow]) -> None:
    """The replayer drops rules whose `for:` cannot match a flow's uid and cgroup before it asks
    decide(): every decision, rule and reason must be what the whole ruleset gives."""
    with tempfile.TemporaryDirectory() as tmp:
        _s, _text, policy = suggested(learned, Path(tmp))
        names = LearnedNames(learned + asked)
        ruleset = lower_policy(policy, resolver=names.resolver)
        fast, whole = Replayer(ruleset, names=names), Replayer(ruleset, names=names, narrow=False)
        for f in learned + asked:
            assert fast.decision(f) == whole.decision(f), f
