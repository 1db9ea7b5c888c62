"""targets: parse_target and parse_list_lines, by table, against `ipaddress`, and fuzzed."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from outguard.policy.targets import (
    LineError,
    Target,
    int_to_text,
    parse_list_lines,
    parse_target,
    text_to_int,
)

FUZZ = settings(max_examples=300, deadline=None)


@pytest.mark.parametrize(("text", "expected"), [
    ("203.0.113.10", Target("addr", "203.0.113.10", 4)),
    ("  203.0.113.10  ", Target("addr", "203.0.113.10", 4)),
    ("2001:db8::10", Target("addr", "2001:db8::10", 6)),
    ("2001:DB8:0:0::10", Target("addr", "2001:db8::10", 6)),
    # IPv4-mapped: the IPv4 address (a connect to it leaves as an IPv4 packet)
    ("::ffff:192.0.2.1", Target("addr", "192.0.2.1", 4)),
    ("::FFFF:c000:201", Target("addr", "192.0.2.1", 4)),
    ("0:0:0:0:0:ffff:192.0.2.1", Target("addr", "192.0.2.1", 4)),
    ("::ffff:192.0.2.0/120", Target("net", "192.0.2.0/24", 4)),
    ("::ffff:192.0.2.1/128", Target("addr", "192.0.2.1", 4)),
    ("::ffff:0:0/96", Target("net", "0.0.0.0/0", 4)),
    ("::fffe:0:0/95", Target("net", "::fffe:0:0/95", 6)),  # wider than the mapped range
    ("198.51.100.0/24", Target("net", "198.51.100.0/24", 4)),
    ("198.51.100.7/32", Target("addr", "198.51.100.7", 4)),
    ("0.0.0.0/0", Target("net", "0.0.0.0/0", 4)),
    ("2001:db8:bad::/48", Target("net", "2001:db8:bad::/48", 6)),
    ("2001:db8::1/128", Target("addr", "2001:db8::1", 6)),
    ("::/0", Target("net", "::/0", 6)),
    ("mirror.example.test", Target("host", "mirror.example.test")),
    ("Mirror.Example.TEST.", Target("host", "mirror.example.test")),
    ("localhost", Target("host", "localhost")),
    ("xn--bcher-kva.example", Target("host", "xn--bcher-kva.example")),
    ("bücher.example", Target("host", "xn--bcher-kva.example")),
    ("a-b.c-d.example", Target("host", "a-b.c-d.example")),
    ("*.cdn.example.test", Target("wildcard", "*.cdn.example.test")),
    ("*.Example.COM", Target("wildcard", "*.example.com")),
    ("@blocklist", Target("list", "blocklist")),
    ("@feed_v2.a:b-c", Target("list", "feed_v2.a:b-c")),
])
def test_parse_target(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("10.0.0.300", "'10.0.0.300' is not an IP address, network or host name"),
    ("010.0.0.1", "'010.0.0.1' is not an IP address, network or host name"),
    ("10.0.0", "'10.0.0' is not an IP address, network or host name"),
    ("1.2.3.4.5", "'1.2.3.4.5' is not an IP address, network or host name"),
    ("2001:db8:::1", "'2001:db8:::1' is not an IP address, network or host name"),
    ("fe80::1%eth0", "'fe80::1%eth0' is not an IP address, network or host name"),
    ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
    ("10.0.0.0/33", "'10.0.0.0/33': prefix length /33 is longer than /32"),
    ("2001:db8::/129", "'2001:db8::/129': prefix length /129 is longer than /128"),
    ("10.0.0.0/", "'10.0.0.0/' is not an IP address, network or host name"),
    ("10.0.0.0/-1", "'10.0.0.0/-1' is not an IP address, network or host name"),
    ("10.0.0.0/8/8", "'10.0.0.0/8/8' is not an IP address, network or host name"),
    ("example.test/24", "'example.test/24' is not an IP address, network or host name"),
    ("", "'' is not an IP address, network or host name"),
    ("-bad.example", "'-bad.example' is not an IP address, network or host name"),
    ("bad-.example", "'bad-.example' is not an IP address, network or host name"),
    ("a..b", "'a..b' is not an IP address, network or host name"),
    ("under_score.example", "'under_score.example' is not an IP address, network or host name"),
    ("example.123", "'example.123' is not an IP address, network or host name"),
    ("x" * 64 + ".example", f"'{'x' * 64}.example' is not an IP address, network or host name"),
    ("http://example.test", "'http://example.test' is not an IP address, network or host name"),
    ("*.com", "'*.com' is not a valid wildcard name (*.domain.tld)"),
    ("*", "'*' is not an IP address, network or host name"),
    ("*.*.example", "'*.*.example' is not a valid wildcard name (*.domain.tld)"),
    ("@", "'@' is not a valid list reference (@name)"),
    ("@bad list", "'@bad list' is not a valid list reference (@name)"),
    ("@-x", "'@-x' is not a valid list reference (@name)"),
])
def test_parse_target_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_target(text)
    assert str(err.value) == message


def test_a_name_of_253_characters_is_the_limit() -> None:
    label = "a" * 63
    name = ".".join([label, label, label, "a" * 61])
    assert len(name) == 253
    assert parse_target(name) == Target("host", name)
    with pytest.raises(ValueError):
        parse_target(name + "a")


@FUZZ
@given(st.text(max_size=80))
@example("\x00")
@example("1.2.3.4/٢٤")
@example("1.2.3.4/²")
@example("*." + "\udcff")
@example("xn--")
@example("\u3002example")
def test_parse_target_never_crashes(text: str) -> None:
    """Any text: a Target whose value parses to itself, or a ValueError with a message."""
    try:
        target = parse_target(text)
    except ValueError as err:
        assert str(err)
        return
    assert isinstance(target, Target)
    assert target.kind in ("addr", "net", "host", "wildcard", "list")
    again = parse_target("@" + target.value if target.kind == "list" else target.value)
    assert again == target, "the canonical value parses to the same target"


@FUZZ
@given(st.ip_addresses())
def test_addresses_agree_with_ipaddress(address: ipaddress.IPv4Address | ipaddress.IPv6Address
                                        ) -> None:
    """Same address (the text may differ: inet_ntop writes ::ffff:0.0.0.0 where Python writes
    ::ffff:0:0; both are the same address to nft)."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    for text in {str(address), address.exploded}:
        target = parse_target(text)
        assert (target.kind, target.version) == ("addr", 4 if mapped else address.version)
        assert ipaddress.ip_address(target.value) == (mapped or address)
        assert parse_target(target.value) == target
    value = text_to_int(str(address), address.version)
    assert value == int(address)
    assert ipaddress.ip_address(int_to_text(value, address.version)) == address


@FUZZ
@given(st.one_of(st.ip_addresses(v=4).flatmap(lambda a: st.tuples(st.just(a), st.integers(0, 32))),
                 st.ip_addresses(v=6).flatmap(lambda a: st.tuples(st.just(a), st.integers(0, 128)))))
def test_networks_agree_with_ipaddress(
        pair: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]) -> None:
    address, length = pair
    text = f"{address}/{length}"
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        with pytest.raises(ValueError, match="has host bits set; did you mean"):
            parse_target(text)
        base = ipaddress.ip_network(text, strict=False)
        with pytest.raises(ValueError) as err:
            parse_target(text)
        suggested = str(err.value).rsplit("did you mean ", 1)[1].rstrip("?")
        if isinstance(base, ipaddress.IPv6Network) and base.prefixlen >= 96 \
                and base.network_address.ipv4_mapped is not None:  # suggested as IPv4
            base = ipaddress.ip_network(f"{base.network_address.ipv4_mapped}/{base.prefixlen - 96}")
        assert ipaddress.ip_network(suggested) == base
        return
    target = parse_target(text)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 \
            and net.network_address.ipv4_mapped is not None:
        v4 = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
        assert ipaddress.ip_network(target.value) == v4 and target.version == 4
        return
    assert target.version == net.version
    if net.prefixlen == net.max_prefixlen:
        assert target.kind == "addr"
        assert ipaddress.ip_address(target.value) == net.network_address
    else:
        assert target.kind == "net"
        assert ipaddress.ip_network(target.value) == net


# --- list files -------------------------------------------------------------------------------

def test_parse_list_lines() -> None:
    lines = [
        "# header",
        "203.0.113.1",
        "",
        "   203.0.113.0/24   ",
        "2001:db8::1 # why",
        "mirror.example.test",
        "*.cdn.example.test",
        "  10.0.0.300",
        "@other",
        "\t# indented comment",
        "10.0.0.1/8",
    ]
    assert list(parse_list_lines(lines)) == [
        (2, Target("addr", "203.0.113.1", 4)),
        (4, Target("net", "203.0.113.0/24", 4)),
        (5, Target("addr", "2001:db8::1", 6)),
        (6, Target("host", "mirror.example.test")),
        (7, Target("wildcard", "*.cdn.example.test")),
        # a list file's lines are never quoted: the file may be one that is no list at all
        (8, LineError(8, 3, "not an IP address, network or host name")),
        (9, LineError(9, 1, "a list file cannot refer to another list")),
        (11, LineError(11, 1, "host bits set; did you mean 10.0.0.0/8?")),
    ]


def test_parse_list_lines_is_lazy() -> None:
    def lines() -> object:
        yield "203.0.113.1"
        raise AssertionError("read too far")

    first = next(parse_list_lines(lines()))  # type: ignore[arg-type]
    assert first == (1, Target("addr", "203.0.113.1", 4))


def test_parse_list_lines_with_a_nul_byte() -> None:
    ((number, item),) = list(parse_list_lines(["1.2.3.4\x00"]))
    assert number == 1 and isinstance(item, LineError)


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=20))
@example(["#", " # x", "a#b", "1.2.3.4#", " \t ", "@x # y", "\u3000", "1.2.3.4 5", "\x00"])
def test_parse_list_lines_never_crashes(lines: list[str]) -> None:
    numbers = []
    for number, item in parse_list_lines(lines):
        numbers.append(number)
        assert 1 <= number <= len(lines)
        if isinstance(item, LineError):
            assert item.line == number and item.col >= 1 and item.message
            assert item.col <= max(len(lines[number - 1]), 1)
        else:
            assert isinstance(item, Target) and item.kind != "list"
    assert numbers == sorted(set(numbers))
