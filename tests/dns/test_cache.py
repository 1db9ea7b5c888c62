"""`RecentNames`: which names resolved to an address lately (the monitor's `names_of`)."""

from __future__ import annotations

from outguard.dns.answers import Resolved
from outguard.dns.cache import RecentNames
from outguard.dns.resolver import Resolver
from tests.dns.helpers import query
from tests.dns.test_resolver import World


def test_names_count_for_the_window_or_the_ttl_if_longer() -> None:
    r = RecentNames(window=100)
    r.record(Resolved({"198.51.100.7": 30}, {}, ("www.example.test", "cdn.example.test")), 0)
    r.record(Resolved({}, {"2001:db8::7": 500}, ("v6.example.test",)), 0)
    assert r.names_of("198.51.100.7", 99) == ("www.example.test", "cdn.example.test")
    assert r.names_of("198.51.100.7", 100) == ()
    assert r.names_of("2001:db8::7", 499) == ("v6.example.test",)
    assert r.names_of("203.0.113.1", 0) == ()
    r.prune(200)
    assert list(r.by_addr) == ["2001:db8::7"]


def test_bounded_oldest_addresses_go_first() -> None:
    r = RecentNames(window=100, max_addresses=2)
    for i in range(3):
        r.record(Resolved({f"198.51.100.{i}": 10}, {}, (f"n{i}.example.test",)), i)
    assert r.names_of("198.51.100.0", 5) == ()
    assert r.names_of("198.51.100.2", 5) == ("n2.example.test",)


def test_resolver_names_of_follows_its_answers_and_a_restart() -> None:
    w = World(records={"api.example.test": [
        ("api.example.test.", 60, "CNAME", "edge.cdn.example.test."),
        ("edge.cdn.example.test.", 60, "A", "198.51.100.7")]})
    assert w.resolver.names_of("198.51.100.7") == ()
    w.run(query("api.example.test"))
    assert w.resolver.names_of("198.51.100.7") == ("api.example.test", "edge.cdn.example.test")
    assert w.resolver.names_of("203.0.113.9") == ()
    w.run(query("evil.example.test"))  # refused: nothing recorded
    assert sum(len(v) for v in w.resolver.recent.by_addr.values()) == 2
    # a restart with the persisted cache knows the names again
    assert w.rs.dns is not None
    again = Resolver(w.rs.dns, w.resolver.names, ask=w.ask, write=w.write, events=w.events,
                     cache=w.resolver.cache, clock=lambda: w.now + 30)
    assert again.names_of("198.51.100.7") == ("api.example.test", "edge.cdn.example.test")
