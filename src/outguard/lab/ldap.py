"""Just enough LDAP (BER) for the attacker's listener to answer a JNDI lookup (pure).

Place in the data flow: `services` feeds the bytes read from a connection to `split_message`
and `parse_request`, and writes what `response_for` returns. A real Java client
(`InitialContext.lookup("ldap://...")`) binds anonymously, then searches for the name; answering
"success" to the bind and "noSuchObject" to the search ends its lookup at once with a
`NameNotFoundException`, so the demo never waits for a timeout when LDAP is reachable. Nothing
here hands out Java objects: the lab records that the callback happened, it does not exploit it.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_MESSAGE = 64 * 1024

SEQUENCE = 0x30
INTEGER = 0x02
OCTET_STRING = 0x04
ENUMERATED = 0x0A

BIND_REQUEST = 0x60
BIND_RESPONSE = 0x61
UNBIND_REQUEST = 0x42
SEARCH_REQUEST = 0x63
SEARCH_RESULT_DONE = 0x65
ABANDON_REQUEST = 0x50
EXTENDED_REQUEST = 0x77
EXTENDED_RESPONSE = 0x78

SUCCESS = 0
PROTOCOL_ERROR = 2
NO_SUCH_OBJECT = 32

OP_NAMES = {
    BIND_REQUEST: "bind",
    UNBIND_REQUEST: "unbind",
    SEARCH_REQUEST: "search",
    ABANDON_REQUEST: "abandon",
    EXTENDED_REQUEST: "extended",
}


class LdapFormatError(ValueError):
    """Bytes that are not a well-formed LDAPMessage."""


@dataclass(frozen=True)
class Request:
    message_id: int
    op: int
    dn: str
    """The bind name or the search base; empty for other operations."""

    @property
    def op_name(self) -> str:
        return OP_NAMES.get(self.op, f"op-0x{self.op:02x}")


def _read_length(data: bytes, pos: int) -> tuple[int, int] | None:
    """(length, position after the length octets), or None if more bytes are needed."""
    if pos >= len(data):
        return None
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0 or count > 4:
        raise LdapFormatError(f"unsupported BER length form 0x{first:02x}")
    if pos + 1 + count > len(data):
        return None
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def split_message(buffer: bytes) -> tuple[bytes, bytes] | None:
    """(one whole LDAPMessage, the rest), or None until the buffer holds a whole message."""
    if not buffer:
        return None
    if buffer[0] != SEQUENCE:
        raise LdapFormatError(f"LDAPMessage must start with SEQUENCE, got 0x{buffer[0]:02x}")
    head = _read_length(buffer, 1)
    if head is None:
        return None
    length, start = head
    if length > MAX_MESSAGE:
        raise LdapFormatError(f"message of {length} bytes is over the {MAX_MESSAGE} limit")
    end = start + length
    if end > len(buffer):
        return None
    return buffer[:end], buffer[end:]


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, position after) of the element at `pos`; the element must be complete."""
    if pos >= len(data):
        raise LdapFormatError("element missing")
    tag = data[pos]
    head = _read_length(data, pos + 1)
    if head is None:
        raise LdapFormatError("element length runs past the end")
    length, start = head
    if start + length > len(data):
        raise LdapFormatError("element value runs past the end")
    return tag, data[start : start + length], start + length


def parse_request(message: bytes) -> Request:
    """The message id, operation and DN of one whole LDAPMessage."""
    tag, body, _ = _tlv(message, 0)
    if tag != SEQUENCE:
        raise LdapFormatError("not a SEQUENCE")
    tag, msgid_bytes, pos = _tlv(body, 0)
    if tag != INTEGER or not msgid_bytes:
        raise LdapFormatError("messageID is not an INTEGER")
    message_id = int.from_bytes(msgid_bytes, "big", signed=True)
    op, op_body, _ = _tlv(body, pos)
    dn = ""
    if op == BIND_REQUEST:  # version INTEGER, name LDAPDN, authentication
        _, _, p = _tlv(op_body, 0)
        _, name, _ = _tlv(op_body, p)
        dn = name.decode("utf-8", "replace")
    elif op == SEARCH_REQUEST:  # baseObject LDAPDN first
        _, base, _ = _tlv(op_body, 0)
        dn = base.decode("utf-8", "replace")
    return Request(message_id, op, dn)


def _encode(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + value


def _encode_int(tag: int, value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)  # room for the sign bit
    return _encode(tag, value.to_bytes(size, "big", signed=True))


def encode_result(message_id: int, op: int, code: int, diagnostic: str = "") -> bytes:
    """An LDAPResult-shaped response (BindResponse, SearchResultDone, ...)."""
    result = (
        _encode_int(ENUMERATED, code)
        + _encode(OCTET_STRING, b"")
        + _encode(OCTET_STRING, diagnostic.encode("utf-8"))
    )
    return _encode(SEQUENCE, _encode_int(INTEGER, message_id) + _encode(op, result))


def response_for(request: Request) -> bytes | None:
    """What the lab's attacker answers; None means send nothing (unbind, abandon)."""
    if request.op == BIND_REQUEST:
        return encode_result(request.message_id, BIND_RESPONSE, SUCCESS)
    if request.op == SEARCH_REQUEST:
        return encode_result(
            request.message_id, SEARCH_RESULT_DONE, NO_SUCH_OBJECT, "outguard lab: no payload"
        )
    if request.op == EXTENDED_REQUEST:  # e.g. StartTLS: refuse, the client carries on or stops
        return encode_result(request.message_id, EXTENDED_RESPONSE, PROTOCOL_ERROR)
    return None
