"""Transparent mode's pure parts: the original destination as conntrack returns it, and the
target of an origin-form request (tests/kernel/test_proxy_kernel.py sends real redirected
connections)."""

from __future__ import annotations

import ipaddress
import socket
import struct

import h11
import pytest

from outguard.proxy.http import parse_origin
from outguard.proxy.target import BadHostError
from outguard.proxy.transparent import parse_original


def test_parse_original_v4_and_v6() -> None:
    v4 = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 443) + \
        socket.inet_pton(socket.AF_INET, "203.0.113.10") + b"\0" * 8
    assert parse_original(socket.AF_INET, v4) == (ipaddress.ip_address("203.0.113.10"), 443)
    v6 = struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 80) + b"\0" * 4 + \
        socket.inet_pton(socket.AF_INET6, "2001:db8::10") + b"\0" * 4
    assert parse_original(socket.AF_INET6, v6) == (ipaddress.ip_address("2001:db8::10"), 80)


def _request(target: bytes, *hosts: bytes) -> h11.Request:
    return h11.Request(method="GET", target=target, headers=[("Host", h) for h in hosts]
                       or [("X", "y")], http_version="1.0" if not hosts else "1.1")


def test_origin_form_takes_the_host_header_and_the_connected_port() -> None:
    got = parse_origin(_request(b"/a?b", b"API.Example.test"), 80)
    assert (str(got.target), got.port, got.authority, got.path) == (
        "api.example.test", 80, "api.example.test", b"/a?b")
    got = parse_origin(_request(b"/", b"api.example.test:8080"), 443)
    assert (got.port, got.authority) == (443, "api.example.test:443")  # the port connected to


@pytest.mark.parametrize(("request_", "words"), [
    (_request(b"http://api.example.test/", b"api.example.test"), "origin-form"),
    (_request(b"/"), "exactly one Host"),
    (_request(b"/", b"user@api.example.test"), "no host name holds"),
])
def test_what_a_redirected_request_cannot_be(request_: h11.Request, words: str) -> None:
    with pytest.raises(BadHostError, match=words):
        parse_origin(request_, 80)
