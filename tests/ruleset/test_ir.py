"""ruleset.ir: a source's elements and kinds, the IR's DNS settings, and lists that make their
own source (feeds)."""

from __future__ import annotations

from outguard.policy.dnsconf import DnsConfig
from outguard.policy.targets import Target
from outguard.ruleset.ir import DnsSettings, Elements, OwnSource, Source


def test_elements_dedupe_by_kind_and_name_their_digest() -> None:
    targets = [Target("addr", "203.0.113.1", 4), Target("net", "2001:db8::/48", 6),
               Target("addr", "203.0.113.1", 4), Target("host", "api.example.test")]
    el = Elements.of(targets, {"api.example.test": [Target("addr", "2001:db8::1", 6)]})
    assert (el.v4, el.v6, el.v6_nets) == (("203.0.113.1",), ("2001:db8::1",), ("2001:db8::/48",))
    assert el.digest() != Elements.of(targets[:2], {}).digest()  # the resolved address counts
    source = Source("list:x", el.digest(), lambda: el)
    assert source.is_list and source.kinds == frozenset({"4a", "6a", "6n"})
    assert not Elements() and source.addrset.contains(0xCB007101, 4)


def test_only_a_list_with_a_source_of_its_own_is_an_own_source() -> None:
    class Feed:
        def source(self, key: str) -> Source:
            return Source(key, "d", Elements)

    assert isinstance(Feed(), OwnSource) and not isinstance(object(), OwnSource)


def test_dns_settings_of_the_section() -> None:
    config = DnsConfig(upstreams=["192.0.2.53", "[2001:db8::53]:5353"], blocklists=["b.txt"])
    got = DnsSettings.of(config, 4242, "/etc/outguard")
    assert got.listen == ("127.0.0.1", 53)
    assert got.upstreams == (("192.0.2.53", 53), ("2001:db8::53", 5353))
    assert (got.uid, got.gid, got.blocklists) == (4242, 4242, ("/etc/outguard/b.txt",))
    assert got.set_timeout(10) == 300 + 60 and got.set_timeout(1000) == 1060
