"""The proxy's HTTP pieces that need no socket: request targets, header filtering, the
responses the proxy writes itself.

Place in the data flow: `server` parses requests with h11 (a strict, size-limited HTTP/1.1
parser: its `max_incomplete_event_size` bounds the request head) and asks here what a request
targets and what to forward. Pure.

Absolute-form targets (`GET http://host[:port]/path`) from clients that know the proxy;
origin-form (`GET /path`, the Host header names the target) only on a redirected connection
(transparent mode: `parse_origin`, the port is the one the client connected to), and
`GET https://…` would make the proxy originate TLS itself; both get 400. Credentials in a URL
(`http://user@host/`) are refused: `allowed.example@evil.example` is the classic confusion of
two URL parsers. The Host header is replaced with the URL's authority (RFC 9112 §3.2.2), so the
upstream sees the host that was decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from outguard.proxy.target import BadHostError, Target, split_authority

# RFC 9110 §7.6.1, plus the non-standard ones proxies meet
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"expect",
})
PHRASES = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed",
           408: "Request Timeout", 431: "Request Header Fields Too Large",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass(frozen=True)
class HttpTarget:
    target: Target
    port: int
    authority: str  # host[:port] as it goes into the Host header
    path: bytes  # origin-form: /path?query


def parse_absolute(raw: bytes) -> HttpTarget:
    """`http://host[:port]/path` → HttpTarget. BadHostError with the reason otherwise."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BadHostError("a request target that is not ASCII") from None
    lower = text[:8].lower()
    if text.startswith("/"):
        raise BadHostError("an origin-form target: configure the client to use this as an HTTP proxy")
    if lower.startswith("https://"):
        raise BadHostError("https:// through a plain request: use CONNECT (HTTPS_PROXY) instead")
    if not lower.startswith("http://"):
        raise BadHostError(f"{text[:60]!r} is no http:// URL")
    rest = text[7:]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0),
              default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:
        raise BadHostError("credentials in the URL are refused")
    path = path.partition("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    target, port = split_authority(authority, 80)
    host = str(target)
    return HttpTarget(target, port, host if port == 80 else f"{host}:{port}", path.encode())


def parse_origin(request: Any, port: int) -> HttpTarget:
    """A redirected connection's request (transparent mode): origin-form `/path`, the target
    named by its Host header (one, as RFC 9112 §3.2 demands), the port the client connected
    to. BadHostError otherwise."""
    target = bytes(request.target)
    if not target.startswith(b"/"):
        raise BadHostError("a redirected connection sends origin-form requests (/path)")
    hosts = [v for n, v in request.headers if n == b"host"]
    if len(hosts) != 1:
        raise BadHostError("a request needs exactly one Host header here")
    try:
        host, _port = split_authority(hosts[0].decode("ascii"), port)
    except UnicodeDecodeError:
        raise BadHostError("a Host header that is not ASCII") from None
    name = str(host)
    return HttpTarget(host, port, name if port == 80 else f"{name}:{port}", target)


def forward_headers(headers: list[tuple[bytes, bytes]], authority: str,
                    keep: bool = False) -> list[tuple[bytes, bytes]]:
    """The request's end-to-end headers, with Host set to `authority`, and Connection: close
    unless the upstream connection is to be `keep`t for the client's next request."""
    named = {v.strip().lower() for n, v in headers if n == b"connection" for v in v.split(b",")}
    out = [(b"host", authority.encode())]
    out += [(n, v) for n, v in headers
            if n not in HOP_BY_HOP and n != b"host" and n not in named]
    if any(n == b"transfer-encoding" for n, _v in headers):
        # the body's framing is hop-by-hop, but a chunked body stays chunked upstream (h11
        # accepts only chunked; without a framing header the body would be refused)
        out.append((b"transfer-encoding", b"chunked"))
    if not keep:
        out.append((b"connection", b"close"))
    return out


def client_keeps(request: Any) -> bool:
    """Whether the client's connection stays open after this request (HTTP/1.1 without
    Connection: close): only then is an upstream connection worth keeping for it (else the
    proxy would close it first, and its closes would fill the proxy's ports with TIME_WAIT)."""
    if bytes(request.http_version) != b"1.1":
        return False
    return not any(n == b"connection" and b"close" in v.lower() for n, v in request.headers)


def response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream response's end-to-end headers (h11 frames the body for the client)."""
    named = {v.strip().lower() for n, v in headers if n == b"connection" for v in v.split(b",")}
    return [(n, v) for n, v in headers if n not in HOP_BY_HOP and n not in named]


def _header_safe(text: str, limit: int = 400) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:limit]


def error_response(status: int, reason: str, rule: str | None = None) -> bytes:
    """A complete response the proxy writes itself; the connection closes after it."""
    body = f"outguard proxy: {PHRASES.get(status, 'Error')}: {reason}\n".encode()
    lines = [f"HTTP/1.1 {status} {PHRASES.get(status, 'Error')}",
             "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}",
             "Connection: close", f"X-Outguard-Reason: {_header_safe(reason)}"]
    if rule is not None:
        lines.append(f"X-Outguard-Rule: {_header_safe(rule, 100)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
