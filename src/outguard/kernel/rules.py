"""The rules of outguard's chains as the kernel holds them, in short: a digest per chain, read by
raw nf_tables netlink (a GETRULE dump: rules only, never set elements).

Place in the data flow: right after an apply (or restore, or rollback) commits, apply reads
the digests back and records them; `status` reads them again and compares: a rule inserted by
hand into our table (an accept for an attacker) is drift. A digest covers each rule's
expressions and comment in order, not its handle, and of stateful expressions (counters) only
the name, so traffic does not look like a change. Cheap next to a 1M-element set.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Collection

from outguard.errors import KernelError
from outguard.kernel.counters import (
    _NFGENMSG,
    _NLATTR,
    NFNL_SUBSYS_NFTABLES,
    NLA_TYPE_MASK,
    Message,
    _align,
    _cstr,
    _dump,
    _family,
    attr_str,
    parse_attrs,
)
from outguard.ruleset.keys import TABLE

NFT_MSG_NEWRULE = 6
NFT_MSG_GETRULE = 7
NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_EXPRESSIONS = 4
NFTA_RULE_USERDATA = 7
NFTA_EXPR_NAME = 1
NFTA_EXPR_DATA = 2
# expressions whose dump carries state that moves by itself (packet counts, a quota's use, the
# last match's time): only their name is part of a rule's digest
_STATEFUL = frozenset({"counter", "quota", "last"})
_STATEFUL_NAMES = tuple(name.encode() + b"\0" for name in _STATEFUL)


def _attr_list(data: bytes) -> list[tuple[int, bytes]]:
    """Attributes in order (a nested list repeats one type)."""
    out: list[tuple[int, bytes]] = []
    off = 0
    while off + _NLATTR.size <= len(data):
        length, kind = _NLATTR.unpack_from(data, off)
        if length < _NLATTR.size or off + length > len(data):
            raise KernelError(f"malformed netlink attribute (length {length} at offset {off})")
        out.append((kind & NLA_TYPE_MASK, data[off + _NLATTR.size : off + length]))
        off += _align(length)
    return out


def rule_fingerprint(msg: Message) -> tuple[str, bytes]:
    """(chain, what the rule does) of a NEWRULE message: its expressions and comment, without
    its handle, position or counter values."""
    attrs = parse_attrs(msg.payload[_NFGENMSG.size :])
    exprs = attrs.get(NFTA_RULE_EXPRESSIONS, b"")
    chain = _cstr(attrs.get(NFTA_RULE_CHAIN, b""))
    if not any(name in exprs for name in _STATEFUL_NAMES):
        # no expression with moving state: the expressions as the kernel sent them (most
        # rules; taking each apart cost ~60 ms for a 1,000-rule table)
        return chain, attrs.get(NFTA_RULE_USERDATA, b"") + b"\0\0" + exprs
    parts = [attrs.get(NFTA_RULE_USERDATA, b"")]
    for _kind, elem in _attr_list(exprs):
        expr = parse_attrs(elem)
        name = expr.get(NFTA_EXPR_NAME, b"")
        parts.append(name)
        if _cstr(name) not in _STATEFUL:
            parts.append(expr.get(NFTA_EXPR_DATA, b""))
    return chain, b"\0\1" + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def rule_digests(family: str = TABLE.family, table: str = TABLE.name,
                 sock: socket.socket | None = None,
                 chains: Collection[str] | None = None) -> dict[str, str]:
    """Chain → digest of its rules, in order, as the kernel holds them (a GETRULE dump: rules
    only, no set elements, so a 1M-element set costs nothing here); of the `chains` named, or
    all. Chains without rules are not listed. Equal digests at two moments: the chain's rules
    did not change between."""
    hashes: dict[str, hashlib.blake2b] = {}
    request = attr_str(NFTA_RULE_TABLE, table)
    # the kernel filters a dump by chain: a few chains of a big table cost a few rules' reading
    filters = [b""] if chains is None else [attr_str(NFTA_RULE_CHAIN, c) for c in chains]
    messages = [m for f in filters
                for m in _dump(NFT_MSG_GETRULE, _family(family), request + f, sock)]
    for m in messages:
        if m.type != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE:
            continue
        chain, body = rule_fingerprint(m)
        if chain not in hashes:
            hashes[chain] = hashlib.blake2b(digest_size=12)
        hashes[chain].update(len(body).to_bytes(4, "big") + body)
    return {chain: h.hexdigest() for chain, h in hashes.items()}
