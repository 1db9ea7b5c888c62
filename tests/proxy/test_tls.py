"""The ClientHello reader against real ClientHellos (Python's own TLS client, through memory
BIOs) and against broken ones."""

from __future__ import annotations

import ssl

import pytest

from outguard.proxy.target import Target
from outguard.proxy.tls import needed, parse_hello
from outguard.proxy.tunnel import sni_problem


def client_hello(server_hostname: str | None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_real_client_hello_names_its_server() -> None:
    data = client_hello("API.example.test")
    assert needed(data) == len(data)
    hello = parse_hello(data)
    assert hello.tls and hello.complete and hello.sni == "api.example.test"


def test_no_server_name_without_sni() -> None:
    hello = parse_hello(client_hello(None))
    assert hello.tls and hello.complete and hello.sni is None


def test_a_partial_hello_asks_for_more() -> None:
    data = client_hello("api.example.test")
    for cut in (1, 4, 5, 40, len(data) - 1):
        assert not parse_hello(data[:cut]).complete


def test_other_protocols_are_no_tls() -> None:
    assert parse_hello(b"SSH-2.0-OpenSSH_9.2\r\n") == parse_hello(b"GET / HTTP/1.1\r\n")
    assert not parse_hello(b"SSH-2.0-OpenSSH_9.2\r\n").tls


@pytest.mark.parametrize("damage", [
    lambda d: d[:5] + b"\x02" + d[6:],  # not a ClientHello
    # the server_name extension's length running past the extensions
    lambda d: d[:d.index(b"api.example") - 7] + b"\xff\xff" + d[d.index(b"api.example") - 5:],
    # the host name's length running past its extension
    lambda d: d[:d.index(b"api.example") - 2] + b"\x00\xff" + d[d.index(b"api.example"):],
])
def test_a_broken_hello_is_an_error(damage: object) -> None:
    data = client_hello("api.example.test")
    with pytest.raises(ValueError):
        parse_hello(damage(data))  # type: ignore[operator]


@pytest.mark.parametrize(("sni", "target", "problem"), [
    ("api.example.test", Target(name="api.example.test"), False),
    ("API.example.test.", Target(name="api.example.test"), False),
    ("other.example.test", Target(name="api.example.test"), True),
    ("api.example.test", None, True),  # a CONNECT to an address, TLS to a name
    (None, Target(name="api.example.test"), False),
])
def test_sni_must_be_the_connect_host(sni: str | None, target: Target | None,
                                      problem: bool) -> None:
    import ipaddress
    target = target or Target(addr=ipaddress.ip_address("203.0.113.10"))
    hello = parse_hello(client_hello(sni))
    assert (sni_problem(hello, target) is not None) == problem
