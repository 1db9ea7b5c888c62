"""Pure: the lab's tiny DNS, LDAP and HTTP codecs."""

from __future__ import annotations

import struct

import pytest

from outguard.lab import dns, httpmini, ldap

# --- DNS -------------------------------------------------------------------------------------


def _answer(query: bytes, rrs: list[tuple[int, bytes]], *, aa: bool = True, rcode: int = 0) -> bytes:
    txid = struct.unpack("!H", query[:2])[0]
    flags = 0x8000 | (0x0400 if aa else 0) | 0x0100 | rcode
    head = struct.pack("!HHHHHH", txid, flags, 1, len(rrs), 0, 0)
    body = query[12:]
    for rtype, rdata in rrs:
        body += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata
    return head + body


def test_dns_query_layout() -> None:
    q = dns.build_query("dns.example.test", dns.TYPE_A, 0x1234)
    assert q[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x03dns\x07example\x04test\x00" + struct.pack("!HH", 1, 1)


def test_dns_parse_a_and_aaaa() -> None:
    q = dns.build_query("api.example.test", dns.TYPE_AAAA, 7)
    v6 = bytes.fromhex("20010db8000000000000000000000010")
    resp = dns.parse_response(_answer(q, [(dns.TYPE_AAAA, v6), (dns.TYPE_A, bytes([203, 0, 113, 10]))]))
    assert resp == dns.Response(7, 0, True, ("2001:db8::10", "203.0.113.10"))


def test_dns_parse_nxdomain_and_errors() -> None:
    q = dns.build_query("nope.example.test", dns.TYPE_A, 9)
    assert dns.parse_response(_answer(q, [], rcode=3)).rcode == 3
    with pytest.raises(dns.DnsFormatError):
        dns.parse_response(b"\x00" * 5)
    with pytest.raises(dns.DnsFormatError, match="QR"):
        dns.parse_response(q)
    with pytest.raises(dns.DnsFormatError):
        dns.parse_response(_answer(q, [(dns.TYPE_A, b"\x01\x02\x03\x04")])[:-2])


# --- LDAP ------------------------------------------------------------------------------------

# What OpenJDK 17 sends for new InitialContext(env).lookup("ldap://198.51.100.66:1389/x"):
# an anonymous LDAPv3 bind, then a base-object search for "x", then an unbind.
JAVA_BIND = bytes.fromhex("300c020101600702010304008000")
# (captured from a real `java JndiLookup` run; both carry the ManageDsaIT control)
JAVA_SEARCH = bytes.fromhex(
    "304302010263210401780a01000a0103020100020100010100870b6f626a656374436c6173733000"
    "a01b30190417322e31362e3834302e312e3131333733302e332e342e32"
)
JAVA_UNBIND = bytes.fromhex(
    "30220201034200a01b30190417322e31362e3834302e312e3131333733302e332e342e32"
)
UNBIND = bytes.fromhex("30050201034200")


def test_ldap_split_waits_for_whole_messages() -> None:
    assert ldap.split_message(b"") is None
    assert ldap.split_message(JAVA_BIND[:5]) is None
    msg, rest = ldap.split_message(JAVA_BIND + JAVA_SEARCH[:3]) or (b"", b"")
    assert msg == JAVA_BIND and rest == JAVA_SEARCH[:3]
    with pytest.raises(ldap.LdapFormatError):
        ldap.split_message(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ldap.LdapFormatError, match="limit"):
        ldap.split_message(b"\x30\x84\x7f\xff\xff\xff")


def test_ldap_long_form_length() -> None:
    value = b"\x04\x81\x90" + b"a" * 0x90  # an OCTET STRING with a one-byte long-form length
    msg = b"\x30\x81" + bytes([3 + len(value)]) + b"\x02\x01\x05" + value
    assert ldap.split_message(msg + b"tail") == (msg, b"tail")


def test_ldap_parse_java_messages() -> None:
    assert ldap.parse_request(JAVA_BIND) == ldap.Request(1, ldap.BIND_REQUEST, "")
    search = ldap.parse_request(JAVA_SEARCH)
    assert (search.message_id, search.op_name, search.dn) == (2, "search", "x")
    assert ldap.parse_request(JAVA_UNBIND).op_name == "unbind"
    assert ldap.parse_request(UNBIND).op_name == "unbind"
    with pytest.raises(ldap.LdapFormatError):
        ldap.parse_request(b"\x30\x03\x04\x01x")


def test_ldap_responses() -> None:
    bind = ldap.response_for(ldap.Request(1, ldap.BIND_REQUEST, ""))
    assert bind == bytes.fromhex("300c02010161070a010004000400")
    done = ldap.response_for(ldap.Request(2, ldap.SEARCH_REQUEST, "x"))
    assert done is not None and done[5] == ldap.SEARCH_RESULT_DONE
    assert b"\x0a\x01\x20" in done  # resultCode 32, noSuchObject
    assert ldap.response_for(ldap.Request(3, ldap.UNBIND_REQUEST, "")) is None
    # Message ids above 127 need a leading zero byte to stay positive.
    assert ldap.encode_result(200, ldap.BIND_RESPONSE, 0)[2:6] == b"\x02\x02\x00\xc8"


# --- HTTP ------------------------------------------------------------------------------------


def test_http_parse_and_build() -> None:
    req = httpmini.parse_request_head(
        b"GET /health?x=1 HTTP/1.1\r\nHost: api.example.test\r\nUser-Agent: curl/7.88\r\n")
    assert (req.method, req.path, req.host, req.version) == (
        "GET", "/health", "api.example.test", "HTTP/1.1")
    with pytest.raises(httpmini.HttpFormatError):
        httpmini.parse_request_head(b"\x16\x03\x01garbage")
    with pytest.raises(httpmini.HttpFormatError):
        httpmini.parse_request_head(b"GET / HTTP/1.1\r\nno colon here")
    resp = httpmini.build_response(200, b'{"ok": true}\n')
    head, body = resp.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 13" in head
    assert body == b'{"ok": true}\n'
    assert httpmini.build_response(200, b"abc", head_only=True).endswith(b"\r\n\r\n")


def _get(path: str) -> httpmini.HttpRequest:
    return httpmini.HttpRequest("GET", path, "HTTP/1.1", {})


def test_sites() -> None:
    status, body, _ = httpmini.site_response("api", 80, _get("/"), {})
    assert status == 200 and b'"ok": true' in body
    assert httpmini.site_response("api", 80, _get("/nope"), {})[0] == 404
    post = httpmini.HttpRequest("POST", "/", "HTTP/1.1", {})
    assert httpmini.site_response("api", 80, post, {})[0] == 405
    files = {"Release": b"Suite: stable\n"}
    status, body, ctype = httpmini.site_response("mirror", 80, _get("/"), files)
    assert status == 200 and b'href="Release"' in body and ctype.startswith("text/html")
    assert httpmini.site_response("mirror", 80, _get("/Release"), files)[1] == b"Suite: stable\n"
    assert httpmini.site_response("mirror", 80, _get("/../Release"), files)[0] == 200
    assert httpmini.site_response("mirror", 80, _get("/../../etc/passwd"), files)[0] == 404


@pytest.mark.parametrize(("path", "name"), [
    ("/Release", "Release"), ("/a/../Release", "Release"), ("/", None), ("/.hidden", None),
    ("/dir/file", None), ("/../../etc/shadow", None),
])
def test_mirror_name(path: str, name: str | None) -> None:
    assert httpmini.mirror_name(path) == name


def test_ntp_answer_echoes_the_request() -> None:
    from outguard.lab import ntp

    sent = ntp.request(now=1_700_000_000.25)
    reply = ntp.answer(sent, now=1_700_000_001.5)
    assert reply is not None and len(reply) == 48 and reply[0] & 0x7 == ntp.MODE_SERVER
    assert ntp.server_time(reply, sent) == pytest.approx(1_700_000_001.5, abs=1e-6)
    assert ntp.server_time(reply, ntp.request(now=1.0)) is None  # not ours
    assert ntp.answer(reply) is None  # a server's packet gets no answer
    assert ntp.answer(b"\x1b") is None
