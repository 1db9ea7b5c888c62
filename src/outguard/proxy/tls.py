"""The server name of a TLS ClientHello, read without decrypting anything.

Place in the data flow: inside a CONNECT tunnel, `server` reads the client's first bytes
before it forwards any of them, and asks here which name the client will talk to; a name that
differs from the CONNECT host is refused (domain fronting: CONNECT to an allowed name on a
shared CDN address, then TLS to another customer of that CDN). Pure: bytes in, `Hello` out.

Only the first handshake record is read: a ClientHello split over several records is legal
but nobody sends one; it is reported as `incomplete` and the tunnel refused (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HELLO = 16384 + 5  # one TLS record


@dataclass(frozen=True)
class Hello:
    tls: bool  # the bytes start a TLS handshake record
    complete: bool  # the whole ClientHello is in the bytes
    sni: str | None = None  # the host_name of the server_name extension, lowercased


def needed(data: bytes) -> int:
    """How many bytes the first record needs in all (5 while its header is incomplete)."""
    if len(data) < 5:
        return 5
    return 5 + int.from_bytes(data[3:5], "big")


def parse_hello(data: bytes) -> Hello:
    """Hello(tls=False) for bytes that are no TLS handshake; raises ValueError for a
    malformed ClientHello."""
    if not data or data[0] != 0x16:
        return Hello(tls=False, complete=True)
    if len(data) < needed(data):
        return Hello(tls=True, complete=False)
    body = data[5:needed(data)]
    if len(body) < 4 or body[0] != 0x01:
        raise ValueError("the first handshake message is no ClientHello")
    length = int.from_bytes(body[1:4], "big")
    if length > len(body) - 4:
        return Hello(tls=True, complete=False)
    hello = body[4:4 + length]
    pos = 2 + 32  # version, random
    pos = _skip(hello, pos, 1)  # session id
    pos = _skip(hello, pos, 2)  # cipher suites
    pos = _skip(hello, pos, 1)  # compression methods
    if pos == len(hello):
        return Hello(tls=True, complete=True)  # no extensions at all
    end = pos + 2 + _int(hello, pos, 2)
    if end > len(hello):
        raise ValueError("the extensions run past the ClientHello")
    pos += 2
    while pos < end:
        kind, size = _int(hello, pos, 2), _int(hello, pos + 2, 2)
        pos += 4
        if pos + size > end:
            raise ValueError("an extension runs past the extensions")
        if kind == 0:
            return Hello(tls=True, complete=True, sni=_server_name(hello[pos:pos + size]))
        pos += size
    return Hello(tls=True, complete=True)


def _int(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise ValueError("the ClientHello is cut short")
    return int.from_bytes(data[pos:pos + size], "big")


def _skip(data: bytes, pos: int, size: int) -> int:
    return pos + size + _int(data, pos, size)


def _server_name(ext: bytes) -> str:
    total = _int(ext, 0, 2)
    pos, end = 2, 2 + total
    if end > len(ext):
        raise ValueError("the server_name list runs past its extension")
    while pos < end:
        kind, size = ext[pos], _int(ext, pos + 1, 2)
        name = ext[pos + 3:pos + 3 + size]
        if len(name) != size:
            raise ValueError("a server name runs past its extension")
        if kind == 0:
            try:
                return name.decode("ascii").lower().rstrip(".")
            except UnicodeDecodeError:
                raise ValueError("a server name that is not ASCII") from None
        pos += 3 + size
    raise ValueError("a server_name extension without a host_name")
