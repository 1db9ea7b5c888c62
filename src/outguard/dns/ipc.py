"""The pipe between the agent and its resolver process: framing and the plain-data forms.

Place in the data flow: `dns.supervisor` (the agent, root) ⇄ this ⇄ `dns.process` (the resolver,
unprivileged). One UNIX stream socket pair; each message is a 4-byte big-endian length and a
JSON object with a type `t`:

    agent → resolver   init {settings, names, cache, netns}      the first message, once
                       policy {settings, names}                  a reload (`DnsHandle.reload`)
                       done {id, error} · who {id, client}       answers to its requests
                       stop
    resolver → agent   ready {listen} · failed {error}           after init
                       write {id, items}                         put [set, address, timeout]s
                       attr {id, proto, addr, port}              who is behind this client?
                       event {e} · names {chain, v4, v6, at}     for the log / the monitor
                       stats {s} · save {data}                   counters; the cache to persist

JSON both ways, never pickle: the agent must not trust what the resolver sends (it parses
hostile packets), so every field from it is checked (`events.from_json`, `set_items`,
`stats_from_json`) and frames are bounded (`MAX_FRAME`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import struct
from typing import Any

import orjson

from outguard.dns.answers import Resolved
from outguard.dns.client import Client
from outguard.dns.resolver import Stats
from outguard.ruleset.ir import DnsSettings
from outguard.ruleset.keys import SetName

MAX_FRAME = 64 << 20  # a cache snapshot; any other message is far smaller
MAX_SET_TIMEOUT = 60 * 86400
_LEN = struct.Struct("!I")


class IpcError(Exception):
    """A message that breaks the protocol: the other side is broken or hostile."""


def frame(msg: dict[str, Any]) -> bytes:
    data = orjson.dumps(msg)
    return _LEN.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> dict[str, Any] | None:
    """The next message; None at a clean end of the stream. IpcError for anything else."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise IpcError("stream ends inside a frame header") from None
        return None
    (size,) = _LEN.unpack(head)
    if size > limit:
        raise IpcError(f"frame of {size} bytes")
    try:
        msg = orjson.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        raise IpcError("stream ends inside a frame") from None
    except orjson.JSONDecodeError as exc:
        raise IpcError(f"frame is no JSON: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise IpcError("frame is no message")
    return msg


def settings_to_json(s: DnsSettings) -> dict[str, Any]:
    return dataclasses.asdict(s)


def settings_from_json(data: dict[str, Any]) -> DnsSettings:
    """Trusted data (from the agent) back into settings."""
    return DnsSettings(
        listen=(str(data["listen"][0]), int(data["listen"][1])),
        upstreams=tuple((str(a), int(p)) for a, p in data["upstreams"]),
        min_ttl=int(data["min_ttl"]), grace=int(data["grace"]), unlisted=data["unlisted"],
        uid=data["uid"], timeout=float(data["timeout"]), blocklists=tuple(data["blocklists"]),
        user=str(data["user"]), gid=data["gid"],
        tunnel_names_per_minute=int(data["tunnel_names_per_minute"]))


def set_items(raw: Any) -> list[tuple[str, str, int]]:
    """Checked [set, address, timeout] items: an FQDN set name (f_<hex>_4|6), an address of that
    set's family, a timeout in 1..MAX_SET_TIMEOUT seconds. Whether the set belongs to the
    current policy is for the caller (a reload may race with a write)."""
    if not isinstance(raw, list) or not raw or len(raw) > 4096:
        raise IpcError("write: no items, or too many")
    out = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 3:
            raise IpcError("write: an item is no [set, address, timeout]")
        name, addr, timeout = item
        fqdn = SetName.of(name) if isinstance(name, str) else None
        if fqdn is None or fqdn.kind != "f":
            raise IpcError(f"write: {name!r:.60} is no FQDN set name")
        try:
            ip = ipaddress.ip_address(addr)
        except (ValueError, TypeError):
            raise IpcError(f"write: {addr!r:.60} is no address") from None
        if fqdn.version != ip.version or "%" in str(addr):
            raise IpcError(f"write: {addr} does not belong in {name}")
        if isinstance(timeout, bool) or not isinstance(timeout, int) \
                or not 1 <= timeout <= MAX_SET_TIMEOUT:
            raise IpcError(f"write: timeout {timeout!r:.20}")
        out.append((name, str(ip), timeout))
    return out


def client_to_json(c: Client) -> dict[str, Any]:
    return {"pid": c.pid, "exe": c.exe, "uid": c.uid, "cmdline": list(c.cmdline)}


def client_from_json(data: dict[str, Any]) -> Client:
    """Trusted data (from the agent)."""
    return Client(data.get("pid"), data.get("exe"), data.get("uid"),
                  tuple(data.get("cmdline") or ()))


def stats_to_json(s: Stats) -> dict[str, Any]:
    return dataclasses.asdict(s)


def stats_from_json(data: Any) -> Stats:
    """Counters from the resolver process: integers only, maps with bounded keys."""
    if not isinstance(data, dict):
        raise IpcError("stats: no object")
    out = Stats()
    for f in dataclasses.fields(Stats):
        value = data.get(f.name)
        if value is None:
            continue
        if isinstance(getattr(out, f.name), dict):
            if not isinstance(value, dict):
                raise IpcError(f"stats: bad {f.name}")
            if len(value) > 64 or not all(isinstance(k, str) and len(k) <= 64 and
                                          isinstance(v, int) and not isinstance(v, bool)
                                          for k, v in value.items()):
                raise IpcError(f"stats: bad {f.name}")
            setattr(out, f.name, dict(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            setattr(out, f.name, value)
        else:
            raise IpcError(f"stats: bad {f.name}")
    return out


def resolved_from_json(msg: dict[str, Any]) -> Resolved:
    """A `names` message's answer (name chain, addresses with TTLs), checked."""
    chain, v4, v6 = msg["chain"], msg["v4"], msg["v6"]
    if not (isinstance(chain, list) and 0 < len(chain) <= 17 and isinstance(v4, dict)
            and isinstance(v6, dict) and len(v4) + len(v6) <= 4096):
        raise IpcError("names: bad shape")
    for table in (v4, v6):
        if not all(isinstance(k, str) and len(k) <= 64 and isinstance(t, int)
                   and 0 <= t < 2**31 for k, t in table.items()):
            raise IpcError("names: bad address")
    if not all(isinstance(n, str) and len(n) <= 1024 for n in chain):
        raise IpcError("names: bad name")
    return Resolved(v4, v6, tuple(chain))
