"""A minimal HTTP/1.1 request parser, response builder and the lab's web sites (pure).

Place in the data flow: `services` reads a request head from a socket, `parse_request_head`
turns it into a `HttpRequest`, `site_response` decides what the lab host answers (with the
mirror's files handed in as data) and `build_response` gives the bytes to write. One request per
connection (`Connection: close`): curl, Java and the probes need nothing more, and it keeps the
services process free of any third-party web framework.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

MAX_HEAD = 16 * 1024
PROBE_LINE = b"OUTGUARD-LAB-PROBE"
"""Sent by `lab up`'s readiness probes, so logs can leave them out."""
PROBE_REPLY = b"OUTGUARD-LAB-OK\n"

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class HttpFormatError(ValueError):
    """A request head that is not HTTP/1.x."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str
    version: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


def parse_request_head(head: bytes) -> HttpRequest:
    """Parse the request line and headers (everything before the blank line)."""
    try:
        text = head.decode("iso-8859-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise HttpFormatError(str(exc)) from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpFormatError(f"bad request line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpFormatError(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return HttpRequest(parts[0], parts[1], parts[2], headers)


def build_response(
    status: int, body: bytes, content_type: str = "application/json", *, head_only: bool = False
) -> bytes:
    reason = REASONS.get(status, "Unknown")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Server: outguard-lab\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + body


def json_body(obj: object) -> bytes:
    return (json.dumps(obj, sort_keys=True) + "\n").encode("utf-8")


def mirror_listing(names: list[str]) -> bytes:
    lines = ["<html><body><h1>Index of /</h1><ul>"]
    lines += [f'<li><a href="{n}">{n}</a></li>' for n in sorted(names)]
    lines.append("</ul></body></html>\n")
    return "\n".join(lines).encode("utf-8")


def mirror_name(path: str) -> str | None:
    """The file a mirror URL path names, or None for anything outside the flat directory."""
    norm = posixpath.normpath("/" + path.lstrip("/"))
    name = norm.lstrip("/")
    return name if name and "/" not in name and not name.startswith(".") else None


def site_response(
    host: str, port: int, request: HttpRequest, mirror_files: dict[str, bytes]
) -> tuple[int, bytes, str]:
    """(status, body, content type) that lab host `host` answers on `port`."""
    if request.method not in ("GET", "HEAD"):
        return 405, json_body({"error": "method not allowed"}), "application/json"
    if host == "mirror":
        if request.path in ("/", ""):
            return 200, mirror_listing(list(mirror_files)), "text/html; charset=utf-8"
        name = mirror_name(request.path)
        if name is not None and name in mirror_files:
            return 200, mirror_files[name], "application/octet-stream"
        return 404, json_body({"error": "not found", "path": request.path}), "application/json"
    if request.path not in ("/", "/health"):
        return 404, json_body({"error": "not found", "path": request.path}), "application/json"
    return 200, json_body({"ok": True, "service": host, "port": port}), "application/json"
