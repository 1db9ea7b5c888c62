"""`suggest`: names first, services, ports, evidence, and what is never allowed. Every
suggestion is loaded by the real policy loader (what `outguard check` runs)."""

from __future__ import annotations

import random
from pathlib import Path

from outguard.journey.render import render
from outguard.journey.suggest import ranges, suggest

from .flows import flow
from .helpers import replay, suggested

DNS = flow("192.0.2.53", 53, "udp", exe="/usr/lib/systemd/systemd-resolved",
           user="systemd-resolve", uid=101)


def _to(s: object) -> list[str]:
    return [e.value for r in s.rules for e in r.to]  # type: ignore[attr-defined]


def test_names_first_never_the_address(tmp_path: Path) -> None:
    flows = [flow("203.0.113.10", names=("api.example.com",)),
             flow("203.0.113.10", 8443),  # no name this time: the address still has one
             flow("2001:db8::10", names=("api.example.com",)), DNS]
    s, text, policy = suggested(flows, tmp_path)
    assert "203.0.113.10" not in text and "2001:db8::10" not in text
    assert set(_to(s)) == {"api.example.com"}
    assert policy.doc.dns is not None and policy.doc.dns.upstreams == ["192.0.2.53"]
    assert replay(policy, flows).regressions == 0


def test_a_bare_address_only_without_any_name_and_marked_for_review(tmp_path: Path) -> None:
    _s, text, policy = suggested([flow("203.0.113.30", 123, "udp")], tmp_path)
    assert '- "203.0.113.30"  # review: no DNS name was ever seen for this address' in text
    assert "dns:" not in text  # no names: no resolver needed
    assert policy.doc.allow[0].proto == "udp"


def test_a_rule_per_unit_or_executable_with_for(tmp_path: Path) -> None:
    flows = [flow("203.0.113.1", unit="app.service", user="nobody", uid=65534),
             flow("203.0.113.2", exe="/usr/bin/rsync", user="nobody", uid=65534),
             flow("203.0.113.3", exe="/usr/bin/wget", user="root", uid=0),
             flow("203.0.113.3", exe="/usr/bin/wget", user="nobody", uid=65534)]
    s, _text, policy = suggested(flows, tmp_path)
    owners = {r.name: r.owner for r in s.rules}
    assert owners == {"app": {"unit": "app.service"}, "rsync": {"user": "nobody"}, "wget": None}
    assert replay(policy, flows).regressions == 0


def test_a_unit_whose_flows_ran_elsewhere_gets_no_unit_condition(tmp_path: Path) -> None:
    flows = [flow("203.0.113.1", unit="app.service", cgroup="/user.slice/x", uid=0)]
    s, _t, policy = suggested(flows, tmp_path)
    assert s.rules[0].owner == {"user": "root"}
    assert replay(policy, flows).regressions == 0


def test_per_host_gives_host_wide_rules(tmp_path: Path) -> None:
    flows = [flow("203.0.113.1", unit="app.service"), flow("203.0.113.2", exe="/usr/bin/x")]
    s, _text, _p = suggested(flows, tmp_path, per_host=True)
    assert [(r.name, r.owner) for r in s.rules] == [("host", None)]


def test_an_unknown_user_is_named_by_uid(tmp_path: Path) -> None:
    s, _t, policy = suggested([flow("203.0.113.1", user="no-such-user-here", uid=4321)], tmp_path)
    assert s.rules[0].owner == {"user": 4321}
    assert policy.doc.allow[0].owner is not None


def test_ports_merge_only_when_each_was_seen() -> None:
    assert ranges([8000, 8001, 8002, 8004, 443]) == [(443, 443), (8000, 8002), (8004, 8004)]


def test_ports_and_protocols(tmp_path: Path) -> None:
    flows = [flow("203.0.113.1", p) for p in (8000, 8001, 8002, 8004)]
    flows += [flow("203.0.113.2", 53, "tcp"), flow("203.0.113.2", 53, "udp"),
              flow("203.0.113.3", None, "icmp")]
    s, text, policy = suggested(flows, tmp_path)
    assert 'ports: ["8000-8002", 8004]' in text
    rules = {tuple(e.value for e in r.to): (r.proto, r.ports) for r in s.rules}
    assert rules[("203.0.113.2",)] == ("any", [(53, 53)])  # tcp and udp: one rule
    assert rules[("203.0.113.3",)] == ("icmp", [])
    assert replay(policy, flows).regressions == 0


def test_evidence_in_the_comment(tmp_path: Path) -> None:
    flows = [flow("203.0.113.1", count=7, exe="/usr/bin/curl"),
             flow("203.0.113.1", 80, count=2, exe="/usr/bin/curl", age=60)]
    s, _t, _p = suggested(flows, tmp_path, per_host=True)
    comment = s.rules[0].comment()
    assert comment.startswith("learned: 2 flows, 9 connections, 2026-11-30T12:00Z to"
                              " 2026-11-30T13:05Z; by /usr/bin/curl")
    long = [flow("203.0.113.1", exe=f"/opt/{'x' * 60}/{i}") for i in range(8)]
    assert len(suggest(long, per_host=True).rules[0].comment()) == 200


def test_classified_flows_and_their_destination_are_never_allowed(tmp_path: Path) -> None:
    flows = [flow("198.51.100.7", 1389, exe="/usr/bin/java", names=("evil.example",),
                  signature="jndi-callback", severity="critical"),
             flow("198.51.100.7", 443, names=("evil.example",)),  # curl, same server
             flow("198.51.100.8", 80, signature="scan", severity="low"),  # low: allowed
             flow("203.0.113.5", names=("ok.example",)), DNS]
    s, text, policy = suggested(flows, tmp_path)
    assert "198.51.100.7" not in _to(s) and "evil.example" not in _to(s)
    assert "198.51.100.8" in _to(s)
    assert "# seen, not allowed" in text
    assert ("#   - /usr/bin/java -> evil.example (198.51.100.7) tcp/1389: jndi-callback"
            " (critical); 1 flows") in text
    assert "/usr/bin/curl -> evil.example (198.51.100.7) tcp/443: same destination:" in text
    summary = replay(policy, flows)
    assert summary.classified_blocked == 1


def test_feed_destinations_are_never_allowed(tmp_path: Path) -> None:
    flows = [flow("198.51.100.9", 443, names=("bad.example",)), flow("203.0.113.5"), DNS]
    s, text, _p = suggested(flows, tmp_path,
                            on_feed=lambda d: "spamhaus-drop" if d == "198.51.100.9" else None)
    assert "bad.example" not in _to(s) and "198.51.100.9" not in _to(s)
    assert "tcp/443: on feed spamhaus-drop" in text


def test_dns_goes_through_the_resolver_and_dot_is_refused(tmp_path: Path) -> None:
    flows = [flow("203.0.113.5", names=("api.example",)), DNS,
             flow("192.0.2.54", 53, "udp", exe="/usr/bin/dig"),
             flow("192.0.2.99", 853, exe="/usr/bin/kdig")]
    s, text, policy = suggested(flows, tmp_path)
    assert s.upstreams == ["192.0.2.53", "192.0.2.54"]
    assert "192.0.2.53" not in _to(s) and "192.0.2.99" not in _to(s)
    assert "tcp/853: DNS over TLS would bypass outguard's resolver" in text
    summary = replay(policy, flows)
    assert summary.regressions == 1  # only the DoT flow
    assert list(summary.by_process) == ["/usr/bin/kdig"]


def test_the_hint_gives_upstreams_when_no_dns_flow_was_seen(tmp_path: Path) -> None:
    _s, _t, policy = suggested([flow("203.0.113.5", names=("api.example",))], tmp_path,
                              upstream_hint=["192.0.2.1"])
    assert policy.doc.dns is not None and policy.doc.dns.upstreams == ["192.0.2.1"]


def test_loopback_is_never_a_rule(tmp_path: Path) -> None:
    s, _t, _p = suggested([flow("127.0.0.1", 5432), flow("::1", 5432)], tmp_path)
    assert s.rules == [] and s.loopback == 2


def test_nothing_learned_still_loads(tmp_path: Path) -> None:
    _s, text, policy = suggested([], tmp_path)
    assert "allow: []" in text and policy.doc.allow == []


def test_deterministic_whatever_the_order() -> None:
    flows = [flow(f"203.0.113.{i % 50}", 400 + i % 7, names=(f"h{i % 9}.example.com",),
                  exe=f"/usr/bin/p{i % 4}", age=i) for i in range(300)] + [DNS]
    texts = set()
    for seed in range(5):
        random.Random(seed).shuffle(flows)
        texts.add(render(suggest(flows)))
    assert len(texts) == 1


def test_hostile_strings_cannot_change_the_document(tmp_path: Path) -> None:
    flows = [flow("203.0.113.1", exe='/tmp/x"\n- name: evil\n  to: [0.0.0.0/0]', user=None,
                  uid=None)]
    s, _text, policy = suggested(flows, tmp_path)
    assert [r.name for r in policy.doc.allow] == [s.rules[0].name]
    assert "0.0.0.0/0" not in [str(t) for r in policy.doc.allow for t in r.to or []]


def test_a_unit_name_the_policy_cannot_carry_falls_back_to_the_user(tmp_path: Path) -> None:
    flows = [flow("203.0.113.1", unit="odd unit.service", cgroup="/system.slice/odd unit.service")]
    s, _t, _policy = suggested(flows, tmp_path)  # loads: no error
    assert s.rules[0].owner == {"user": "root"}


def test_the_header_says_to_apply_with_verify_and_a_confirmation() -> None:
    """The suggested file told a newcomer to apply with --confirm-timeout but not --verify."""
    text = render(suggest([flow("203.0.113.7", 443, names=("api.example.com",)), DNS]))
    assert "`outguard apply POLICY --verify --confirm-timeout 120`" in text


def test_dns_to_a_name_server_outside_the_kept_upstreams_is_listed_as_refused() -> None:
    """`--against` a policy whose dns: names other upstreams: a later week's DNS straight to
    another name server is blocked by it, and was neither allowed nor listed."""
    other = flow("203.0.113.2", 53, "tcp")
    s = suggest([flow("203.0.113.7", 443, names=("api.example.com",)), DNS, other],
                use_dns=True, upstreams=["192.0.2.53"])
    assert s.upstreams == ["192.0.2.53"]
    (refused,) = [r for r in s.refused if r.dst == "203.0.113.2"]
    assert (refused.port, refused.proto) == (53, "tcp") and "dns.upstreams" in refused.why
    assert not [r for r in s.refused if r.dst == "192.0.2.53"]
