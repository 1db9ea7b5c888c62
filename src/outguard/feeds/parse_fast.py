"""The plain-format fast path: lines of `A.B.C.D` and `A.B.C.D/LEN` read in numpy, no per-line work.

Place in the data flow: fetch → **parse** (`parse.parse_plain_bytes` calls this first) → validate.
Threat lists reach millions of lines and almost all of them are bare IPv4 addresses and prefixes;
`inet_pton` mapped in C still costs ~0.7 s a million once the lines are Python strings. Here the
body stays one byte array, read in blocks of lines on up to four threads (numpy's loops let go
of the GIL; memory stays small): the digit runs ("tokens") are found with one pass over the
bytes, and everything else — their values, the separators between them, the shape `D.D.D.D` or
`D.D.D.D/D` of each line — is checked on the token arrays. A line that is anything else (a
comment, spaces, IPv6, a leading zero, an octet over 255, host bits set, an empty line) goes
back, with its line number, to the line-by-line reader, so the result is exactly what that
reader would give.
Pure: bytes in, arrays out.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

if TYPE_CHECKING:  # numpy.typing costs ~60 ms of start-up
    from numpy.typing import NDArray

_BLOCK = 1 << 19  # bytes per vector pass: ~10 MB of temporaries each, whatever the body's size
_WORKERS = min(4, os.cpu_count() or 1)
_MAX_ODD = 256  # odd spots per block beyond which the whole block is read line by line
_NL, _DOT, _SLASH = 10, 46, 47

U32: TypeAlias = "NDArray[np.uint32]"
Idx: TypeAlias = "NDArray[np.intp]"


@dataclass
class FastLines:
    """What the fast path read, and the lines it leaves to the line-by-line reader."""

    singles: U32  # addresses (A.B.C.D, and A.B.C.D/32)
    net_values: U32  # networks (a line with host bits set is left to the slow reader)
    net_lengths: NDArray[np.uint8]
    others: list[tuple[int, bytes]]  # (line number from 1, raw line) for the slow reader


@dataclass
class _Part:
    singles: list[U32]
    values: list[U32]
    lengths: list[NDArray[np.uint8]]
    others: list[tuple[int, bytes]]


def read_plain_v4(data: bytes) -> FastLines:
    """Split `data` (no CR characters) into fast-read IPv4 entries and the other lines."""
    if data and not data.endswith(b"\n"):
        data += b"\n"
    blocks: list[tuple[bytes, int]] = []
    pos, line0 = 0, 1
    while pos < len(data):
        end = data.find(b"\n", pos + _BLOCK)
        end = len(data) if end < 0 else end + 1
        block = data[pos:end]
        blocks.append((block, line0))
        line0 += block.count(b"\n")
        pos = end
    # numpy lets go of the GIL in its loops: blocks are read on every core
    workers = min(_WORKERS, len(blocks))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(_read_one, blocks))
    else:
        parts = [_read_one(b) for b in blocks]
    part = _Part([], [], [], [])
    for p in parts:
        part.singles += p.singles
        part.values += p.values
        part.lengths += p.lengths
        part.others += p.others
    if not part.singles:
        return FastLines(np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, np.uint8),
                         part.others)
    part.others.sort()
    return FastLines(np.concatenate(part.singles), np.concatenate(part.values),
                     np.concatenate(part.lengths), part.others)


def _read_one(item: tuple[bytes, int]) -> _Part:
    part = _Part([], [], [], [])
    _read_block(item[0], item[1], part)
    return part


def _tokens(buf: NDArray[np.uint8]) -> tuple[Idx, Idx, NDArray[np.uint8]]:
    """(first, end) of every digit run, end exclusive, and the bytes' digit values."""
    digit = buf - np.uint8(48)  # wraps below '0': every non-digit byte is >= 10
    is_digit = digit < 10
    edges = np.flatnonzero(is_digit[1:] != is_digit[:-1]) + 1
    if len(buf) and is_digit[0]:
        edges = np.concatenate(([0], edges))
    return edges[0::2], edges[1::2], digit


def _slow_lines(block: bytes, start: int, stop: int, line0: int, part: _Part) -> None:
    """Lines of block[start:stop] (whole lines) for the line-by-line reader."""
    line = line0 + block.count(b"\n", 0, start)
    for raw in block[start:stop].split(b"\n")[:-1]:
        if raw:
            part.others.append((line, raw))
        line += 1


def _read_block(block: bytes, line0: int, part: _Part) -> None:
    buf = np.frombuffer(block, dtype=np.uint8)
    first, end, digit = _tokens(buf)
    if not len(first):
        _slow_lines(block, 0, len(block), line0, part)
        return
    # a gap between two digit runs is regular when it is one '.', '/' or newline byte
    gap = first[1:] - end[:-1]
    sep = buf[end]
    regular_sep = (sep == _DOT) | (sep == _SLASH) | (sep == _NL)
    odd = np.flatnonzero((gap != 1) | ~regular_sep[:-1])
    lead, tail = int(first[0]) > 0, int(end[-1]) != len(block) - 1 or not regular_sep[-1]
    if not len(odd) and not lead and not tail:
        _regular(buf, first, end, digit, block, line0, part)
        return
    if len(odd) > _MAX_ODD:
        _slow_lines(block, 0, len(block), line0, part)
        return
    # odd spots (comments, spaces, empty lines, ...): the lines around them go line by line,
    # the stretches of whole lines between them take the vector path
    spots = [(int(end[k]), int(first[k + 1])) for k in odd.tolist()]
    if lead:
        spots.insert(0, (0, int(first[0])))
    if tail:
        spots.append((int(end[-1]), len(block) - 1))
    cut = 0
    for lo, hi in spots:
        start = block.rfind(b"\n", 0, lo) + 1
        stop = block.find(b"\n", hi) + 1 or len(block)
        start = max(start, cut)
        if start > cut:
            _stretch(block, cut, start, line0, part)
        if stop > start:
            _slow_lines(block, start, stop, line0, part)
        cut = max(cut, stop)
    if cut < len(block):
        _stretch(block, cut, len(block), line0, part)


def _stretch(block: bytes, start: int, stop: int, line0: int, part: _Part) -> None:
    """Whole lines with regular gaps only: the vector path on their bytes."""
    piece = block[start:stop]
    buf = np.frombuffer(piece, dtype=np.uint8)
    first, end, digit = _tokens(buf)
    _regular(buf, first, end, digit, piece, line0 + block.count(b"\n", 0, start), part)


def _regular(buf: NDArray[np.uint8], first: Idx, end: Idx, digit: NDArray[np.uint8],
             block: bytes, line0: int, part: _Part) -> None:
    """Lines made of digit runs and single separators, starting with a digit and ending in a
    newline: the ones shaped D.D.D.D[/D] with valid numbers are read, the others go slow."""
    length = end - first
    sep = buf[end]
    new_line = np.empty(len(first), dtype=bool)
    new_line[0] = True
    np.equal(sep[:-1], _NL, out=new_line[1:])
    line_first = np.flatnonzero(new_line)
    n_tok = np.diff(np.append(line_first, len(first)))
    line_of = np.cumsum(new_line, dtype=np.intp) - 1
    rank = np.arange(len(first)) - line_first[line_of]
    five = (n_tok == 5)[line_of]
    expected = np.where(rank < 3, _DOT, np.where((rank == 3) & five, _SLASH, _NL))
    value = digit[end - 1].astype(np.uint16)
    value += np.where(length >= 2, digit[end - 2], 0).astype(np.uint16) * 10
    value += np.where(length >= 3, digit[end - 3], 0).astype(np.uint16) * 100
    good = (sep == expected) & (length <= 3) & ((length == 1) | (digit[first] != 0))
    good &= value <= np.where(rank == 4, 32, 255)
    line_ok = (n_tok == 4) | (n_tok == 5)
    line_ok[line_of[~good]] = False
    starts = line_first[line_ok]
    v = value.astype(np.uint32)
    addr = (v[starts] << 24) | (v[starts + 1] << 16) | (v[starts + 2] << 8) | v[starts + 3]
    prefix = np.where(n_tok[line_ok] == 5, v[np.minimum(starts + 4, len(v) - 1)], 32)
    host = (np.uint64(1) << (np.uint64(32) - prefix.astype(np.uint64))) - np.uint64(1)
    stray = (addr.astype(np.uint64) & host) != 0
    if stray.any():  # host bits set: the line-by-line reader refuses them, by line number
        line_ok[np.flatnonzero(line_ok)[stray]] = False
        addr, prefix = addr[~stray], prefix[~stray]
    single = prefix == 32
    part.singles.append(addr[single])
    part.values.append(addr[~single])
    part.lengths.append(prefix[~single].astype(np.uint8))
    bad = np.flatnonzero(~line_ok)
    if len(bad):
        line_last = np.append(line_first[1:], len(first)) - 1
        for i in bad.tolist():
            part.others.append((line0 + i, block[first[line_first[i]]:end[line_last[i]]]))
