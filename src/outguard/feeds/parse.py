"""Feed parsers: bytes of one download → `Parsed` (integers by kind, host names, bad lines).

Place in the data flow: fetch → **parse** → validate → merge → sync. One function per format
(`plain` covers FireHOL netsets/ipsets, Spamhaus DROP text, Emerging Threats and Feodo's plain
lists; `spamhaus-json`, `feodo-csv`, `hosts` (URLhaus), `domains`, `dshield` (block.txt)). A bad
line — also a network with host bits set (`1.0.0.0/7`): which network was meant is a guess, so
it is not blocked — is counted and a few are kept as samples (line number, reason, text); it is
never fatal by itself (`validate` refuses a list of mostly bad lines). Addresses become integers with
`socket.inet_pton` (the `ipaddress` module costs several µs per entry); the plain format's IPv4
lines, the bulk of every big list, are read in numpy by `parse_fast`.
Pure: bytes in, data out.
"""

from __future__ import annotations

import csv
import json
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from outguard.feeds.parse_fast import read_plain_v4
from outguard.feeds.v4arrays import V4Entries
from outguard.policy.targets import parse_target

MAX_SAMPLES = 20
_AF4, _AF6 = socket.AF_INET, socket.AF_INET6


@dataclass
class Parsed:
    """What one feed file holds. Networks are (value, prefix length), host bits zero."""

    a4: list[int] = field(default_factory=list)
    n4: list[tuple[int, int]] = field(default_factory=list)
    a6: list[int] = field(default_factory=list)
    n6: list[tuple[int, int]] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    bad: int = 0
    samples: list[tuple[int, str, str]] = field(default_factory=list)  # (line, text, why)
    # IPv4 entries the vector reader took (plain format), as arrays: not in a4/n4, whose
    # million Python ints would cost more than all the rest; `v4()` gives every IPv4 entry
    fast4: V4Entries | None = None

    @property
    def entries(self) -> int:
        """Good entries (duplicates included), as the file counts them."""
        fast = len(self.fast4.singles) + len(self.fast4.net_values) if self.fast4 else 0
        return fast + len(self.a4) + len(self.n4) + len(self.a6) + len(self.n6) + len(self.domains)

    def v4(self) -> V4Entries:
        """Every IPv4 entry, as arrays: singles, then networks as (value, length) columns."""
        listed = V4Entries.of(self.a4, self.n4)
        if self.fast4 is None:
            return listed
        if not self.a4 and not self.n4:
            return self.fast4
        return V4Entries(np.concatenate((self.fast4.singles, listed.singles)),
                         np.concatenate((self.fast4.net_values, listed.net_values)),
                         np.concatenate((self.fast4.net_lengths, listed.net_lengths)))

    def reject(self, line: int, text: str, why: str) -> None:
        self.bad += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append((line, text[:120], why))


def add_ip(out: Parsed, text: str) -> str | None:
    """Add an address or CIDR network; None when done, else why it is not one."""
    try:
        out.a4.append(int.from_bytes(socket.inet_pton(_AF4, text), "big"))
        return None
    except (OSError, ValueError):
        pass
    addr, slash, length_text = text.partition("/")
    try:
        packed = socket.inet_pton(_AF4, addr)
        version, bits = 4, 32
    except (OSError, ValueError):
        try:
            packed = socket.inet_pton(_AF6, addr)
            version, bits = 6, 128
        except (OSError, ValueError):
            return "not an IP address or network"
    value = int.from_bytes(packed, "big")
    if not slash:
        (out.a4 if version == 4 else out.a6).append(value)
        return None
    if not length_text.isdigit() or int(length_text) > bits:
        return f"bad prefix length /{length_text}"
    length = int(length_text)
    if length == bits:
        (out.a4 if version == 4 else out.a6).append(value)
        return None
    network = value & (((1 << bits) - 1) ^ ((1 << (bits - length)) - 1))
    if network != value:
        # never guess: 1.0.0.0/7 cleared is 0.0.0.0/7 (blocks 0/8 too), and the author may
        # have meant 1.0.0.0/8; the line is refused like any other bad line, by number
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        start = socket.inet_ntop(family, network.to_bytes(bits // 8, "big"))
        return f"host bits set: the /{length} network containing it is {start}/{length}"
    (out.n4 if version == 4 else out.n6).append((value, length))
    return None


def _data_lines(text: str, comments: str = "#;") -> Iterable[tuple[int, str]]:
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and line[0] not in comments and not line.startswith("//"):
            yield number, line


def parse_plain(text: str) -> Parsed:
    """One address or network per line; `#` / `;` comments, also after the entry."""
    return parse_plain_bytes(text.encode())


def parse_plain_bytes(data: bytes) -> Parsed:
    """`parse_plain` on the raw body: IPv4 lines go through the vector reader (`parse_fast`),
    every other line through the line-by-line one, in line order."""
    out = Parsed()
    if b"\r" in data:
        data = data.replace(b"\r", b"")
    fast = read_plain_v4(data)
    for number, raw in fast.others:
        _plain_line(out, raw.decode("utf-8", errors="replace"), number)
    out.fast4 = V4Entries(fast.singles, fast.net_values, fast.net_lengths)
    return out


def _plain_line(out: Parsed, raw: str, number: int) -> None:
    line = raw.strip()
    if not line or line[0] in "#;" or line.startswith("//"):
        return
    token = line.split(";", 1)[0].split("#", 1)[0].split(None, 1)
    if not token:
        return
    why = add_ip(out, token[0])
    if why is not None:
        out.reject(number, line, why)


def parse_spamhaus_json(text: str) -> Parsed:
    """Spamhaus DROP JSON lines: `{"cidr": ..., "sblid": ...}`, then a metadata object."""
    out = Parsed()
    for number, line in _data_lines(text):
        try:
            obj = json.loads(line)
        except ValueError:
            out.reject(number, line, "not a JSON object")
            continue
        if not isinstance(obj, dict):
            out.reject(number, line, "not a JSON object")
        elif obj.get("type") == "metadata":
            continue
        elif not isinstance(obj.get("cidr"), str):
            out.reject(number, line, "no 'cidr' field")
        elif (why := add_ip(out, obj["cidr"])) is not None:
            out.reject(number, line, why)
    return out


def parse_feodo_csv(text: str) -> Parsed:
    """Feodo Tracker CSV: `#` banner, a quoted header row naming `dst_ip`, quoted rows."""
    out = Parsed()
    column: int | None = None
    lines = list(_data_lines(text, "#"))
    for (number, line), row in zip(lines, csv.reader(line for _n, line in lines), strict=True):
        cells = [c.strip() for c in row]
        if column is None and "dst_ip" in cells:
            column = cells.index("dst_ip")
            continue
        index = 1 if column is None else column
        if len(cells) <= index:
            out.reject(number, line, "too few columns")
        elif (why := add_ip(out, cells[index])) is not None:
            out.reject(number, line, why)
    return out


def _host(text: str) -> str | None:
    try:
        target = parse_target(text)
    except ValueError:
        return None
    return target.value if target.kind == "host" else None


def parse_hosts(text: str) -> Parsed:
    """A hosts file (URLhaus): `127.0.0.1<TAB>name`; the names are the entries."""
    out = Parsed()
    for number, line in _data_lines(text, "#"):
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            out.reject(number, line, "expected 'ADDRESS NAME'")
            continue
        for name in fields[1:]:
            if name in ("localhost", "localhost.localdomain", "broadcasthost"):
                continue
            host = _host(name)
            if host is None:
                out.reject(number, line, f"{name!r} is not a host name")
            else:
                out.domains.append(host)
    return out


def parse_domains(text: str) -> Parsed:
    """One host name per line."""
    out = Parsed()
    for number, line in _data_lines(text):
        host = _host(line.split("#", 1)[0].strip())
        if host is None:
            out.reject(number, line, "not a host name")
        else:
            out.domains.append(host)
    return out


def parse_dshield(text: str) -> Parsed:
    """DShield block.txt: tab-separated `start end prefixlen attacks ...` rows."""
    out = Parsed()
    for number, line in _data_lines(text):
        fields = line.split("\t") if "\t" in line else line.split()
        if fields[0].lower() == "start":  # the optional column-title row
            continue
        if len(fields) < 3 or not fields[2].strip().isdigit():
            out.reject(number, line, "expected 'START END PREFIXLEN ...'")
        elif (why := add_ip(out, f"{fields[0].strip()}/{fields[2].strip()}")) is not None:
            out.reject(number, line, why)
    return out


PARSERS: dict[str, Callable[[str], Parsed]] = {
    "plain": parse_plain,
    "spamhaus-json": parse_spamhaus_json,
    "feodo-csv": parse_feodo_csv,
    "hosts": parse_hosts,
    "domains": parse_domains,
    "dshield": parse_dshield,
}


def parse(data: bytes, fmt: str) -> Parsed:
    if fmt == "plain":
        return parse_plain_bytes(data)
    return PARSERS[fmt](data.decode("utf-8", errors="replace"))
