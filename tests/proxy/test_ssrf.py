"""The SSRF corpus: every request goes through the proxy's real decision path
(`Proxy.decide`: parse, decide by name, resolve, check every answer), with a table resolver.

The classes covered: Smokescreen's advisories (CVE-2022-24825 and CVE-2022-29188: a deny or
allow list read one way by the guard and another by the resolver or the connect call: address
spellings, IPv6 forms of IPv4 addresses, trailing dots and case), every literal spelling the C
library accepts (decimal, octal, hex, short forms), IPv4-mapped / compatible / NAT64 / 6to4
IPv6, zone ids, IDNA mappings to digits, cloud metadata addresses, DNS answers that point at
loopback or private ranges (rebinding), and per-user rules. Zero bypasses: every case names
the expected outcome.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from outguard.policy.load import load_text
from outguard.policy.proxyconf import ProxyLimits
from outguard.proxy.guard import Who
from outguard.proxy.resolve import table_resolver
from outguard.proxy.server import Client, Proxy, RefusedError
from outguard.proxy.target import BadHostError, split_authority
from outguard.ruleset.lower import lower

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NOBODY = 65534
POLICY = """
version: 1
allow:
  - name: web
    to: [api.example.test, "*.cdn.example.test", 203.0.113.10, "2001:db8::10"]
    ports: [80, 443]
  - name: files-as-nobody
    to: [files.example.test]
    ports: [80, 443]
    for: {user: nobody}
  - name: internal
    to: [10.1.2.3]
    ports: [80]
  - name: nginx-only
    to: [units.example.test]
    for: {unit: nginx.service}
deny:
  - name: evil
    to: [198.51.100.66, evil.example.test]
"""
DNS = {
    "api.example.test": ["203.0.113.10"],
    "other.example.test": ["203.0.113.50"],
    "a.cdn.example.test": ["203.0.113.20", "2001:db8::20"],
    "rebind.cdn.example.test": ["203.0.113.20", "127.0.0.1"],
    "meta.cdn.example.test": ["169.254.169.254"],
    "meta6.cdn.example.test": ["fd00:ec2::254"],
    "mapped.cdn.example.test": ["::ffff:127.0.0.1"],
    "nat64.cdn.example.test": ["64:ff9b::a9fe:a9fe"],
    "sixtofour.cdn.example.test": ["2002:7f00:1::1"],
    "private.cdn.example.test": ["10.0.0.5"],
    "cgnat.cdn.example.test": ["100.64.1.1"],
    "zero.cdn.example.test": ["0.0.0.0"],
    "evilip.cdn.example.test": ["198.51.100.66"],
    "internal.cdn.example.test": ["10.1.2.3"],
    "files.example.test": ["203.0.113.30"],
    "units.example.test": ["203.0.113.40"],
    "evil.example.test": ["203.0.113.66"],
}
RESOLVED_AT_LOWERING = {"api.example.test": ["203.0.113.10"],
                        "units.example.test": ["203.0.113.40"],
                        "files.example.test": ["203.0.113.30"],
                        "evil.example.test": ["203.0.113.66"]}
OK, NEVER, BAD = "ok", "proxy:never-reach", "bad"

# (authority as a client writes it, uid, expected: ok | a decision key | bad (400))
CASES: list[tuple[str, int | None, str]] = [
    # names: allowed, case and trailing dots, the wildcard
    ("api.example.test:443", 0, OK),
    ("API.Example.TEST:443", 0, OK),
    ("api.example.test.:443", 0, OK),
    ("a.cdn.example.test:80", 0, OK),
    ("api.example.test:22", 0, "default"),
    ("other.example.test:443", 0, "default"),
    ("cdn.example.test:443", 0, "default"),
    # the deny list read as the resolver reads it (CVE-2022-29188's class)
    ("evil.example.test:443", 0, "deny:evil"),
    ("evil.example.test.:443", 0, "deny:evil"),
    ("EVIL.EXAMPLE.TEST:443", 0, "deny:evil"),
    ("evil.example.test..:443", 0, BAD),
    # answers that lead somewhere else: every answer is checked
    ("rebind.cdn.example.test:443", 0, NEVER),
    ("meta.cdn.example.test:80", 0, NEVER),
    ("meta6.cdn.example.test:80", 0, NEVER),
    ("mapped.cdn.example.test:80", 0, NEVER),
    ("nat64.cdn.example.test:80", 0, NEVER),
    ("sixtofour.cdn.example.test:80", 0, NEVER),
    ("private.cdn.example.test:80", 0, NEVER),
    ("cgnat.cdn.example.test:80", 0, NEVER),
    ("zero.cdn.example.test:80", 0, NEVER),
    ("evilip.cdn.example.test:443", 0, "deny:evil"),
    ("internal.cdn.example.test:80", 0, OK),  # 10.1.2.3 is named by an allow rule
    ("internal.cdn.example.test:443", 0, NEVER),  # ... for port 80 only
    # loopback in every spelling (CVE-2022-24825's class: IPv6 and numeric forms)
    ("127.0.0.1:80", 0, NEVER),
    ("2130706433:80", 0, NEVER),
    ("0x7f000001:80", 0, NEVER),
    ("017700000001:80", 0, NEVER),
    ("0177.0.0.1:80", 0, NEVER),
    ("0x7f.0.0.1:80", 0, NEVER),
    ("127.1:80", 0, NEVER),
    ("127.0.1:80", 0, NEVER),
    ("127.0.0.1.:80", 0, NEVER),
    ("１２７.０.０.１:80", 0, NEVER),  # full-width digits: IDNA maps them to ASCII
    ("localhost:80", 0, "default"),
    ("[::1]:80", 0, NEVER),
    ("[0:0:0:0:0:0:0:1]:80", 0, NEVER),
    ("[::ffff:127.0.0.1]:80", 0, NEVER),
    ("[::ffff:7f00:1]:80", 0, NEVER),
    ("[::127.0.0.1]:80", 0, NEVER),
    ("[64:ff9b::7f00:1]:80", 0, NEVER),
    ("[2002:7f00:1::]:80", 0, NEVER),
    ("0.0.0.0:80", 0, NEVER),
    ("0:80", 0, NEVER),
    ("[::]:80", 0, NEVER),
    # cloud metadata and link-local
    ("169.254.169.254:80", 0, NEVER),
    ("2852039166:80", 0, NEVER),
    ("0xa9.0xfe.0xa9.0xfe:80", 0, NEVER),
    ("[fd00:ec2::254]:80", 0, NEVER),
    ("[::ffff:169.254.169.254]:80", 0, NEVER),
    ("[fe80::1%25eth0]:80", 0, NEVER),
    ("[fe80::1%eth0]:80", 0, NEVER),
    ("[fe80::1%25eth0%0a]:80", 0, BAD),
    # private ranges, and one a rule names explicitly
    ("10.0.0.1:80", 0, NEVER),
    ("192.168.1.1:80", 0, NEVER),
    ("172.16.0.1:80", 0, NEVER),
    ("[fc00::1]:80", 0, NEVER),
    ("10.1.2.3:80", 0, "allow:internal"),
    ("012.1.2.3:80", 0, "allow:internal"),  # octal 012 = 10
    ("10.1.515:80", 0, "allow:internal"),  # short form: 515 = 2.3
    ("10.1.2.3:443", 0, NEVER),
    # denied addresses in other spellings
    ("198.51.100.66:443", 0, "deny:evil"),
    ("3325256770:443", 0, "deny:evil"),
    ("[::ffff:198.51.100.66]:443", 0, "deny:evil"),
    ("[::ffff:c633:6442]:443", 0, "deny:evil"),
    # allowed literal addresses
    ("203.0.113.10:443", 0, "allow:web"),
    ("0xcb.0.0x71.0xa:443", 0, "allow:web"),
    ("[2001:db8::10]:443", 0, "allow:web"),
    ("[2001:DB8:0::10]:443", 0, "allow:web"),
    ("203.0.113.11:443", 0, "default"),
    # what cannot be read safely is refused, not guessed
    ("api.example.test@127.0.0.1:80", 0, BAD),
    ("127.0.0.1#api.example.test:80", 0, BAD),
    ("example.123:80", 0, BAD),
    ("1.2.3.4.5:80", 0, BAD),
    ("256.0.0.1:80", 0, BAD),
    ("08.0.0.1:80", 0, BAD),
    ("0x.0.0.1:80", 0, BAD),
    ("::1:80", 0, BAD),
    ("api.example.test:0", 0, BAD),
    ("api.example.test:65536", 0, BAD),
    ("api.example.test:+80", 0, BAD),
    ("api .example.test:80", 0, BAD),
    ("api.example.test%00:80", 0, BAD),
    # IDNA: a look-alike is another name, not the allowed one
    ("\u0430pi.example.test:443", 0, "default"),  # a Cyrillic a
    ("bücher.example.test:443", 0, "default"),
    # who asks
    ("files.example.test:443", NOBODY, OK),
    ("files.example.test:443", 0, "default"),
    ("files.example.test:443", None, "proxy:unattributed"),
    ("api.example.test:443", None, OK),  # no rule about users could decide it
    # a unit rule: the cgroup is unknown here (Who has none), so only requests it could
    # match are refused
    ("units.example.test:443", 0, "proxy:unattributed"),
    ("203.0.113.40:443", 0, "proxy:unattributed"),
]


def _proxy() -> Proxy:
    ruleset = lower(load_text(POLICY), resolver=lambda n: RESOLVED_AT_LOWERING[n], now=NOW)

    async def nobody(*_args: object) -> Client:
        raise AssertionError("not used")

    return Proxy(lambda: ruleset, table_resolver(DNS), nobody, ProxyLimits())


def _outcome(proxy: Proxy, authority: str, uid: int | None) -> str:
    try:
        target, port = split_authority(authority, None)
    except BadHostError:
        return BAD
    try:
        _addrs, verdict = asyncio.run(proxy.decide("CONNECT", target, port,
                                                    Client(Who(uid=uid))))
    except RefusedError as exc:
        assert exc.status == 403, exc.reason
        assert exc.rule is not None
        return exc.rule
    return OK if target.name is not None else verdict.rule


def test_the_corpus_is_large_and_spread() -> None:
    assert len(CASES) >= 40
    outcomes = {expected for _a, _u, expected in CASES}
    assert {OK, NEVER, BAD, "deny:evil", "default", "allow:web"} <= outcomes


@pytest.mark.parametrize(("authority", "uid", "expected"), CASES)
def test_ssrf_corpus(authority: str, uid: int | None, expected: str) -> None:
    assert _outcome(_proxy(), authority, uid) == expected


def test_a_refusal_names_the_rule_and_why() -> None:
    with pytest.raises(RefusedError) as caught:
        asyncio.run(_proxy().decide("GET", *split_authority("meta.cdn.example.test:80", None),
                                     Client(Who(uid=0))))
    assert caught.value.rule == "proxy:never-reach"
    assert "169.254.169.254" in caught.value.reason


def test_a_name_that_does_not_resolve_is_a_502() -> None:
    with pytest.raises(RefusedError) as caught:
        asyncio.run(_proxy().decide("GET", *split_authority("gone.cdn.example.test:80", None),
                                     Client(Who(uid=0))))
    assert caught.value.status == 502


def test_audit_mode_lets_policy_refusals_through_marked_but_never_the_never_reach_set() -> None:
    ruleset = lower(load_text(POLICY.replace("version: 1\n", "version: 1\nmode: audit\n")),
                    resolver=lambda n: RESOLVED_AT_LOWERING[n], now=NOW)

    async def nobody(*_args: object) -> Client:
        raise AssertionError("not used")

    proxy = Proxy(lambda: ruleset, table_resolver(DNS), nobody, ProxyLimits())
    _addrs, verdict = asyncio.run(proxy.decide("GET", *split_authority("other.example.test:80",
                                                                         None),
                                                Client(Who(uid=0))))
    assert verdict.allowed and verdict.audit and verdict.rule == "default"
    assert _outcome(proxy, "169.254.169.254:80", 0) == NEVER
    assert _outcome(proxy, "meta.cdn.example.test:80", 0) == NEVER
