"""The policy's `alerts:` section: where incidents are sent, as typed data (pydantic).

Place in the data flow: policy.model embeds `AlertSpec` in `PolicyDoc.alerts`; the agent turns
each spec into a sink (`alerts.sinks.build_sink`). Each list item names exactly one sink:

    alerts:
      - webhook: "http://127.0.0.1:9000/hook"        # or {url: ..., timeout: 5, retries: 3}
      - syslog: "udp://127.0.0.1:514"                # udp:// or tcp:// (RFC 5424)
      - stdout: json                                 # json | text
      - email: {host: 127.0.0.1, port: 25, from: og@example.org, to: [sec@example.org]}
      - {webhook: "http://...", min_severity: high}  # only incidents at least this severe
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from outguard.events import Severity


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class WebhookSpec(_Strict):
    url: str
    timeout: float = Field(default=5.0, gt=0, le=120)
    retries: int = Field(default=3, ge=0, le=20)
    backoff: float = Field(default=0.5, gt=0, le=60)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


class SyslogSpec(_Strict):
    url: str  # udp://host:port or tcp://host:port
    facility: int = Field(default=4, ge=0, le=23)  # 4 = auth: security messages
    app_name: str = Field(default="outguard", max_length=48)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("udp", "tcp") or not parts.hostname:
            raise ValueError(f"{value!r} is not a syslog address such as udp://127.0.0.1:514")
        try:
            parts.port  # noqa: B018 - parsing validates the port
        except ValueError as exc:
            raise ValueError(f"{value!r}: {exc}") from exc
        return value

    @property
    def transport(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        assert parts.hostname is not None  # validated
        return parts.hostname, parts.port or 514


class EmailSpec(_Strict):
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password_env: str | None = None  # the password's environment variable, never the password
    timeout: float = Field(default=10.0, gt=0, le=120)
    subject_prefix: str = "[outguard]"


def _shorthand(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if isinstance(out.get("webhook"), str):
        out["webhook"] = {"url": out["webhook"]}
    if isinstance(out.get("syslog"), str):
        out["syslog"] = {"url": out["syslog"]}
    return out


def _url_form(value: Any) -> Any:
    return {"url": value} if isinstance(value, str) else value


# What a policy file may hold (json_schema_input_type): the URL alone, or the whole mapping.
Webhook = Annotated[WebhookSpec, BeforeValidator(_url_form, json_schema_input_type=str | WebhookSpec)]
Syslog = Annotated[SyslogSpec, BeforeValidator(_url_form, json_schema_input_type=str | SyslogSpec)]


class AlertSpec(_Strict):
    """One sink. Exactly one of webhook, syslog, stdout, email."""

    webhook: Webhook | None = None
    syslog: Syslog | None = None
    stdout: Literal["json", "text"] | None = None
    email: EmailSpec | None = None
    min_severity: Severity = "info"

    @model_validator(mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return _shorthand(value)

    @model_validator(mode="after")
    def _one(self) -> AlertSpec:
        kinds = [k for k in ("webhook", "syslog", "stdout", "email") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("an alert names exactly one of webhook, syslog, stdout, email"
                             + (f" (found {', '.join(kinds)})" if kinds else ""))
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("webhook", "syslog", "stdout", "email") if getattr(self, k) is not None)
