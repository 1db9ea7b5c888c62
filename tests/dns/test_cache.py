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


def test_prefill_puts_cached_answers_into_the_new_sets_the_new_policy_maps_them_to() -> None:
    """A rule that gains a name gets a new FQDN set: it starts with the saved answers of the
    names the new policy puts there, for the time their old entries had left."""
    from outguard.dns import cache as dcache
    from outguard.policy.load import load_text
    from outguard.ruleset.lower import lower
    from outguard.ruleset.names import NamePolicy
    from tests.dns.helpers import answer

    def policy(names: str) -> str:
        return ("version: 1\ndns: {listen: '127.0.0.1:53', upstreams: ['192.0.2.53'],"
                f" min_ttl: 300, grace: 60}}\nallow:\n  - name: api\n    to: [{names}]\n"
                "  - name: other\n    to: [z.example.test]\n")

    cache = dcache.AnswerCache()
    for name, rtype, addr, ttl in (("a.example.test", "A", "198.51.100.7", 600),
                                   ("a.example.test", "AAAA", "2001:db8::7", 30),
                                   ("z.example.test", "A", "198.51.100.9", 600),
                                   ("gone.example.test", "A", "198.51.100.8", 600)):
        q = query(name, rtype)
        wire = answer(q, [(name + ".", ttl, rtype, addr)])
        cache.put((name, 1 if rtype == "A" else 28, 1, False), dcache.entry_of(wire, name, 1000.0))
    data = dcache.snapshot(cache, dcache.SetTracker(), 1010.0)
    rs = lower(load_text(policy("a.example.test, b.example.test")))
    assert rs.dns is not None
    base, other = rs.allow[0].fqdn_set, rs.allow[1].fqdn_set
    new = [f"{base}_4", f"{base}_6"]  # `other` keeps its sets: the resolver already fills them
    got = sorted(dcache.prefill(data, NamePolicy.of(rs), rs.dns, new, now=1020.0))
    assert got == sorted([(f"{base}_4", "198.51.100.7", 600 + 60 - 20),
                          (f"{base}_6", "2001:db8::7", 300 + 60 - 20)])
    assert other is not None and all(not n.startswith(other) for n, _a, _t in got)
    # a name the new policy no longer allows is not put back; a blocklisted one neither
    assert dcache.prefill(data, NamePolicy.of(rs, {"a.example.test": "bl.txt"}), rs.dns, new,
                          now=1020.0) == []
    # an entry whose old lifetime is over is not put back
    assert dcache.prefill(data, NamePolicy.of(rs), rs.dns, new, now=1000.0 + 661) == []
