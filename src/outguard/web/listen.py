"""Where the dashboard listens, and the refusals: `--web HOST:PORT` (or the policy's `web:`).

Place in the data flow: the CLI and `service.options` carry `WebOptions` (this module imports
nothing heavy: `outguard --help` stays fast); `web.server` binds what `check` allows.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from outguard.errors import OutguardError

DEFAULT_LISTEN = "127.0.0.1:8765"


@dataclass(frozen=True)
class WebOptions:
    listen: str = DEFAULT_LISTEN  # HOST:PORT, [v6]:PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:8765`, `[::1]:8765`, `localhost:8765` → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise OutguardError(f"web: {text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(opts: WebOptions) -> tuple[str, int]:
    """The address to bind; refuses a non-loopback one without TLS, and half a TLS pair."""
    host, port = parse_listen(opts.listen)
    if (opts.tls_cert is None) != (opts.tls_key is None):
        raise OutguardError("web: give both web.tls_cert and web.tls_key, or neither")
    if not is_loopback(host) and not opts.tls:
        raise OutguardError(f"web: refusing to serve the dashboard on {host}, which is not a"
                            " loopback address, without TLS: its token would cross the network"
                            " in clear (set web.tls_cert and web.tls_key, or listen on"
                            " 127.0.0.1 and use an SSH tunnel)")
    return host, port
