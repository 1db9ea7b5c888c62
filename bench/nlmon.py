#!/usr/bin/env python3
"""Count nf_tables change notifications per set, straight from netlink (run inside a netns).

    ip netns exec NS python3 bench/nlmon.py [MAX_SECONDS]

`nft monitor` cannot be used next to a 1,000,000-element set: it loads (and on events reloads)
nft's whole cache, which takes minutes. This helper only joins the NFNLGRP_NFTABLES multicast
group and counts, per set name, the elements added or deleted and the sets created or deleted.

Commands on stdin, one per line: `ready` (answers `{"ready": true}` once subscribed),
`reset`, `report` (one JSON line: {"sets": {name: {"add": n, "del": n, "new": n,
"delset": n, "flush": n}}, "messages": n, "overruns": n}), `quit`. It exits on EOF or after
MAX_SECONDS (default 900).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time
from collections import defaultdict

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTABLES = 7
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWSET, NFT_MSG_DELSET = 9, 11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFTA_SET_NAME = 2  # in NEWSET / DELSET
NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 2, 3
NLA_TYPE_MASK = 0x3FFF
SO_RCVBUFFORCE = 33


def attrs(buf: bytes, offset: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", buf, offset)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = buf[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return out


def count_nested(payload: bytes) -> int:
    n, offset = 0, 0
    while offset + 4 <= len(payload):
        length = struct.unpack_from("=H", payload, offset)[0]
        if length < 4:
            break
        n += 1
        offset += (length + 3) & ~3
    return n


class Counter:
    def __init__(self) -> None:
        self.sets: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.messages = 0
        self.overruns = 0

    def feed(self, buf: bytes) -> None:
        offset = 0
        while offset + 16 <= len(buf):
            length, kind = struct.unpack_from("=IH", buf, offset)
            if length < 16:
                break
            self.messages += 1
            subsys, msg = kind >> 8, kind & 0xFF
            if subsys == NFNL_SUBSYS_NFTABLES:
                a = attrs(buf, offset + 20, offset + length)  # nlmsghdr 16 + nfgenmsg 4
                if msg in (NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM):
                    name = a.get(NFTA_SET_ELEM_LIST_SET, b"?").rstrip(b"\0").decode()
                    n = count_nested(a.get(NFTA_SET_ELEM_LIST_ELEMENTS, b""))
                    if msg == NFT_MSG_NEWSETELEM:
                        self.sets[name]["add"] += n
                    elif n:
                        self.sets[name]["del"] += n
                    else:
                        self.sets[name]["flush"] += 1
                elif msg in (NFT_MSG_NEWSET, NFT_MSG_DELSET):
                    name = a.get(NFTA_SET_NAME, b"?").rstrip(b"\0").decode()
                    self.sets[name]["new" if msg == NFT_MSG_NEWSET else "delset"] += 1
            offset += (length + 3) & ~3

    def drain(self, sock: socket.socket) -> None:
        for _ in range(1_000_000):  # bounded; a re-apply sends far fewer messages
            try:
                buf = sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:  # ENOBUFS: notifications were lost
                self.overruns += 1
                continue
            self.feed(buf)


def main() -> int:
    max_s = float(sys.argv[1]) if len(sys.argv) > 1 else 900.0
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.bind((0, 0))
    sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
    sock.setblocking(False)
    counter = Counter()
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock, sys.stdin], [], [], 0.5)
        if sock in ready:
            counter.drain(sock)
        if sys.stdin in ready:
            line = sys.stdin.readline()
            cmd = line.strip()
            if not line or cmd == "quit":
                return 0
            counter.drain(sock)
            if cmd == "ready":
                print(json.dumps({"ready": True}), flush=True)
            elif cmd == "reset":
                counter = Counter()
            elif cmd == "report":
                report = {"sets": counter.sets, "messages": counter.messages, "overruns": counter.overruns}
                print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
