"""The policy's `web:` section (pydantic): the dashboard the agent serves.

    web:
      listen: "127.0.0.1:8765"        # the default; another address needs TLS
      tls_cert: /etc/outguard/web.crt # PEM; with tls_key: served over HTTPS
      tls_key: /etc/outguard/web.key

Referred to by `policy.model.PolicyDoc.web`; `service.webserve` reads it when the agent starts.
`outguard run --web HOST:PORT` (with `--web-tls-cert/--web-tls-key`) makes the same model and
wins over it. The address rule (loopback, or TLS: the token would cross the network in clear)
is checked here, so `outguard check`, `run --web` and the agent refuse the same.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_LISTEN = "127.0.0.1:8765"


def split_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:8765`, `[::1]:8765`, `localhost:8765` → (host, port); ValueError else."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = Field(default=DEFAULT_LISTEN, description=(
        "HOST:PORT of the dashboard; an address that is not loopback only with TLS."))
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain) for HTTPS.")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @model_validator(mode="after")
    def _tls_for_remote(self) -> WebConfig:
        host, _port = split_listen(self.listen)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.tls_cert is None and not is_loopback(host):
            raise ValueError(f"refusing to serve the dashboard on {host}, which is not a"
                             " loopback address, without TLS: its token would cross the network"
                             " in clear (set web.tls_cert and web.tls_key — on the command line"
                             " --web-tls-cert and --web-tls-key —, or listen on 127.0.0.1 and"
                             " use an SSH tunnel)")
        return self
