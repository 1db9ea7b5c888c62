"""DNS tunnelling through an allowed wildcard: detected, reported as one incident, bounded."""

from __future__ import annotations

import base64
import secrets

from outguard.dns.tunnel import TunnelDetector, tunneling_hint, zone_of
from outguard.monitor.dns_incidents import event_of
from tests.dns.helpers import query
from tests.dns.test_resolver import World


def _chunk(i: int) -> str:
    """What a tunnel client sends: a new encoded chunk of data per query."""
    return base64.b32encode(i.to_bytes(4, "big") + secrets.token_bytes(6)).decode().lower().rstrip("=")


def test_many_distinct_names_under_an_allowed_wildcard_are_one_incident() -> None:
    w = World()
    for i in range(150):
        w.run(query(f"{_chunk(i)[:12]}.cdn.example.test"))
        w.now += 0.2  # 150 queries in 30 s
    suspicious = [e for e in w.events.events if e.action == "suspicious"]
    assert 1 <= len(suspicious) <= 3  # rate-limited reports, not one per query
    first = suspicious[0]
    assert first.zone == "cdn.example.test" and first.rule == "allow:api"
    assert first.classifications[0].startswith("dns-tunneling: more than 100 distinct names")
    assert len(w.asked) == 150  # still answered: the name is allowed
    assert w.resolver.stats.tunnel_suspects == 50
    found = event_of(first)
    assert found is not None
    assert (found.packet.dst, found.packet.rule) == ("*.cdn.example.test", "dns:allow:api")
    assert [(c.signature, c.severity) for c in found.classifications] == [("dns-tunneling", "high")]
    assert "answered" in found.classifications[0].title


def test_a_long_random_label_is_reported_at_once_an_exact_name_never() -> None:
    w = World()
    w.run(query("api.example.test"))
    w.run(query("x.cdn.example.test"))
    assert [e.action for e in w.events.events] == ["resolved", "resolved"]
    w.run(query("mzxw6ytboi4dmnzzgq3tqojqgeztknbv.cdn.example.test"))
    (event,) = [e for e in w.events.events if e.action == "suspicious"]
    assert "random-looking label" in event.classifications[0]


def test_a_busy_cdn_below_the_threshold_is_quiet_and_windows_restart() -> None:
    d = TunnelDetector(per_minute=100)
    for minute in range(3):
        for i in range(100):
            assert d.check(f"img{i}.cdn.example.test", "cdn.example.test", minute * 60.0 + i / 2) is None
    assert d.suspects == 0


def test_memory_is_bounded_per_zone_and_in_zones() -> None:
    d = TunnelDetector(per_minute=100, max_zones=50)
    for i in range(20_000):
        d.check(f"{_chunk(i)}.t.example.test", "t.example.test", 1.0)
    assert len(d.zones["t.example.test"].names) == 101
    for i in range(1000):
        d.check(f"a.z{i}.example.test", f"z{i}.example.test", 2.0)
    assert len(d.zones) <= 50


def test_zone_of_a_name_allowed_by_every_destination() -> None:
    assert zone_of("a.b.example.test") == "example.test"
    assert zone_of("example.test") == "example.test"


def test_tunneling_hint() -> None:
    assert tunneling_hint("api.example.test") is None
    assert tunneling_hint("www.some-quite-normal-name.example.test") is None
    assert tunneling_hint("mzxw6ytboi4dmnzzgq3tqojqgeztknbv.t.example.test") is not None
    long = ".".join(["aGVsbG8gd29ybGQgaGVsbG8"] * 5) + ".x.example.test"
    assert tunneling_hint(long) is not None
