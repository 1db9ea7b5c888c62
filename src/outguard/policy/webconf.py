"""The policy's `web:` section (pydantic): the dashboard the agent serves.

    web:
      listen: "127.0.0.1:8765"        # the default; another address needs TLS
      tls_cert: /etc/outguard/web.crt # PEM; with tls_key: served over HTTPS
      tls_key: /etc/outguard/web.key

Referred to by `policy.model.PolicyDoc.web`; `service.webserve` reads it when the agent starts
(`outguard run --web HOST:PORT` wins over it). The address rule (loopback, or TLS) is checked
here, so `outguard check` refuses what the agent would refuse.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_LISTEN = "127.0.0.1:8765"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = Field(default=DEFAULT_LISTEN, pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):\d{1,5}$",
                        description="HOST:PORT of the dashboard; not loopback only with TLS.")
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain) for HTTPS.")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")

    @model_validator(mode="after")
    def _tls_for_remote(self) -> WebConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        host = self.listen.rpartition(":")[0].strip("[]")
        if self.tls_cert is None and not _loopback(host):
            raise ValueError(f"the dashboard on {host} (not a loopback address) needs TLS:"
                             " set tls_cert and tls_key, or listen on 127.0.0.1")
        return self
