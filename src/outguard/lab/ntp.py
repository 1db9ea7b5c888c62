"""The lab's NTP over UDP: a 48-byte SNTP codec, the server's answer and a one-shot client.

Place in the data flow: `services` answers UDP port 123 on ntp.example.test with `answer()`;
`probe` asks it while the lab comes up; the journey's workload runs this module as the
server's time sync (``python -m outguard.lab.ntp ntp.example.test``), the UDP flow outguard
has to learn, suggest and keep allowing. Only the fields SNTP (RFC 4330) needs are set.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

PORT = 123
PACKET = struct.Struct("!BBbb11I")
"""LI/VN/mode, stratum, poll, precision, then 11 32-bit words (root delay .. transmit)."""
NTP_EPOCH = 2208988800  # 1900-01-01 to 1970-01-01, seconds
MODE_CLIENT, MODE_SERVER, VERSION = 3, 4, 4


def _stamp(unix: float) -> tuple[int, int]:
    secs = unix + NTP_EPOCH
    return int(secs) & 0xFFFFFFFF, int((secs % 1) * 2**32) & 0xFFFFFFFF


def request(now: float | None = None) -> bytes:
    """A client's request: its transmit time, which the server echoes as the origin."""
    sec, frac = _stamp(time.time() if now is None else now)
    return PACKET.pack(VERSION << 3 | MODE_CLIENT, 0, 6, -20, *([0] * 9), sec, frac)


def answer(query: bytes, now: float | None = None) -> bytes | None:
    """The server's reply to a client request, or None for anything else."""
    if len(query) < PACKET.size or query[0] & 0x7 != MODE_CLIENT:
        return None
    words = PACKET.unpack(query[:PACKET.size])[4:]
    sec, frac = _stamp(time.time() if now is None else now)
    return PACKET.pack(VERSION << 3 | MODE_SERVER, 2, 6, -20, 0, 0, 0x4C41424E,  # "LABN"
                       sec, frac, words[9], words[10], sec, frac, sec, frac)


def server_time(reply: bytes, sent: bytes) -> float | None:
    """The server's transmit time (unix) if `reply` answers `sent`, else None."""
    if len(reply) < PACKET.size or reply[0] & 0x7 != MODE_SERVER:
        return None
    got, asked = PACKET.unpack(reply[:PACKET.size]), PACKET.unpack(sent[:PACKET.size])
    if got[4 + 5:4 + 7] != asked[4 + 9:4 + 11]:  # its origin is our transmit time
        return None
    return float(got[4 + 9] - NTP_EPOCH + got[4 + 10] / 2**32)


def main(argv: list[str] | None = None) -> int:
    """`python -m outguard.lab.ntp HOST [TIMEOUT]`: exit 0 with the offset, 3 no answer."""
    args = sys.argv[1:] if argv is None else argv
    host, timeout = args[0], float(args[1]) if len(args) > 1 else 2.0
    try:
        family, kind, proto, _canon, addr = socket.getaddrinfo(host, PORT, type=socket.SOCK_DGRAM)[0]
    except OSError as exc:
        print(f"ERROR cannot resolve {host}: {exc}")
        return 4
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(timeout)
        sent = request()
        try:
            sock.sendto(sent, addr)
            reply = sock.recv(512)
        except OSError as exc:
            print(f"BLOCKED no NTP answer from {addr[0]}: {exc}")
            return 3
    when = server_time(reply, sent)
    if when is None:
        print(f"ERROR not an answer to our request from {addr[0]}")
        return 4
    print(f"REACHED NTP from {addr[0]}, offset {when - time.time():+.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
