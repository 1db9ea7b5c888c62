"""sock_diag: the request/answer codecs (pure), and exact lookups of real sockets in a namespace."""

from __future__ import annotations

import errno
import os
import socket
import struct

import pytest

from outguard.errors import KernelError
from outguard.kernel.netns import NetnsThread
from outguard.kernel.sockdiag import SockDiag, decode_answer, encode_request


def test_request_layout() -> None:
    raw = encode_request(socket.AF_INET, socket.IPPROTO_TCP, "192.0.2.2", 40000,
                         "198.51.100.7", 80, seq=9)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", raw)
    assert (length, kind, flags, seq) == (len(raw), 20, 1, 9) and len(raw) == 16 + 56
    assert raw[16:18] == bytes([socket.AF_INET, socket.IPPROTO_TCP])
    assert raw[24:28] == struct.pack(">HH", 40000, 80)
    assert raw[28:32] == socket.inet_aton("192.0.2.2") and raw[44:48] == socket.inet_aton(
        "198.51.100.7")
    assert raw[-8:] == b"\xff" * 8  # INET_DIAG_NOCOOKIE


def test_answers() -> None:
    body = struct.pack("=BBBB48sIIIII", 2, 2, 0, 0, bytes(48), 0, 0, 0, 65534, 4242)
    msg = struct.pack("=IHHII", 16 + len(body), 20, 0, 9, 0) + body
    got = decode_answer(msg, 9)
    assert not isinstance(got, int) and (got.inode, got.uid, got.state) == (4242, 65534,
                                                                            "SYN_SENT")
    err = struct.pack("=IHHII", 36, 2, 0, 9, 0) + struct.pack("=i", -errno.ENOENT) + bytes(16)
    assert decode_answer(err, 9) == errno.ENOENT
    assert decode_answer(msg, 8) == errno.ENOMSG  # someone else's answer
    with pytest.raises(KernelError, match="malformed"):
        decode_answer(struct.pack("=IHHII", 400, 20, 0, 9, 0), 9)


@pytest.mark.kernel
def test_lookup_real_sockets(netns: str) -> None:
    """TCP (listening-side connect on lo) and connected UDP, v4 and v6, found by their 4-tuple."""
    def make() -> list[tuple[str, socket.socket, tuple[str, int, str, int]]]:
        out = []
        for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            srv = socket.socket(fam, socket.SOCK_STREAM)
            srv.bind((host, 0))
            srv.listen()
            cli = socket.create_connection(srv.getsockname()[:2])
            out.append(("tcp", cli, (*cli.getsockname()[:2], *cli.getpeername()[:2])))
            out.append(("-", srv, ("", 0, "", 0)))
            u = socket.socket(fam, socket.SOCK_DGRAM)
            u.bind((host, 0))
            u.connect((host, 9))
            out.append(("udp", u, (*u.getsockname()[:2], *u.getpeername()[:2])))
        return out

    with NetnsThread(netns) as thread:
        socks = thread.call(make)
    try:
        with SockDiag(netns) as diag:
            for proto, sock, (src, sport, dst, dport) in socks:
                if proto == "-":
                    continue
                found = diag.lookup(proto, src, sport, dst, dport)
                assert found is not None, (proto, src, sport)
                assert found.inode == os.fstat(sock.fileno()).st_ino and found.uid == 0
            assert diag.lookup("tcp", "127.0.0.1", 1, "127.0.0.1", 2) is None
            with pytest.raises(KernelError, match="only tcp, udp"):
                diag.lookup("icmp", "127.0.0.1", 0, "127.0.0.1", 0)
    finally:
        for _p, sock, _t in socks:
            sock.close()
