"""The alert sinks: stdout, syslog (UDP/TCP), webhook (HTTP POST), email (SMTP).

Place in the data flow: dispatch → **sinks**. Each sink's `send` delivers one alert or raises;
the dispatcher runs each sink in a task of its own, so a slow or failing sink delays only itself.
The webhook retries with exponential backoff within its timeout (httpx); email uses the standard
library's smtplib on a worker thread (one short session per alert; the aggregator keeps alerts
rare); syslog over TCP uses octet-counting framing (RFC 6587) and reconnects when the peer drops.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import sys
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol, TextIO

import httpx

from outguard.alerts.format import json_line, rfc5424, text_line
from outguard.errors import OutguardError
from outguard.policy.alertconf import AlertSpec, EmailSpec, SyslogSpec, WebhookSpec


class AlertError(OutguardError):
    """A sink could not deliver an alert."""


class Sink(Protocol):
    name: str

    async def send(self, alert: dict[str, Any]) -> None: ...
    async def close(self) -> None: ...


class StdoutSink:
    def __init__(self, form: str = "json", stream: TextIO | None = None) -> None:
        self.name = f"stdout:{form}"
        self.form = form
        self.stream = stream

    async def send(self, alert: dict[str, Any]) -> None:
        out = self.stream or sys.stdout
        out.write((json_line(alert) if self.form == "json" else text_line(alert)) + "\n")
        out.flush()

    async def close(self) -> None:
        return None


class _Datagram(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        return None  # an ICMP error from a missing receiver: UDP syslog is fire and forget


class SyslogSink:
    def __init__(self, spec: SyslogSpec) -> None:
        self.spec = spec
        self.name = f"syslog:{spec.url}"
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.StreamWriter | None = None

    def _message(self, alert: dict[str, Any]) -> bytes:
        return rfc5424(alert, facility=self.spec.facility, app_name=self.spec.app_name,
                       hostname=None, procid=os.getpid(), now=datetime.now(UTC))

    async def _connection(self, host: str, port: int) -> asyncio.StreamWriter:
        if self._tcp is not None and not self._tcp.is_closing():
            return self._tcp
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        self._tcp = writer
        return writer

    async def send(self, alert: dict[str, Any]) -> None:
        msg = self._message(alert)
        host, port = self.spec.address
        try:
            if self.spec.transport == "udp":
                if self._udp is None:
                    loop = asyncio.get_running_loop()
                    self._udp, _ = await loop.create_datagram_endpoint(
                        _Datagram, remote_addr=(host, port))
                self._udp.sendto(msg)
                return
            for attempt in (1, 2):  # a dropped connection is noticed on write: reconnect once
                writer = await self._connection(host, port)
                try:
                    writer.write(f"{len(msg)} ".encode() + msg)
                    await asyncio.wait_for(writer.drain(), 5)
                    return
                except (OSError, TimeoutError):
                    writer.close()
                    self._tcp = None
                    if attempt == 2:
                        raise
        except (OSError, TimeoutError) as exc:
            raise AlertError(f"{self.name}: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()


class WebhookSink:
    def __init__(self, spec: WebhookSpec, client: httpx.AsyncClient | None = None) -> None:
        self.spec = spec
        self.name = f"webhook:{spec.url}"
        self._client = client or httpx.AsyncClient(timeout=spec.timeout, trust_env=False)
        self.attempts = 0

    async def send(self, alert: dict[str, Any]) -> None:
        delay = self.spec.backoff
        last = ""
        for attempt in range(self.spec.retries + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
            self.attempts += 1
            try:
                resp = await self._client.post(
                    self.spec.url, content=json_line(alert).encode(),
                    headers={"content-type": "application/json", **self.spec.headers})
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code < 300:
                return
            last = f"HTTP {resp.status_code}"
            if resp.status_code < 500 and resp.status_code not in (408, 429):
                break  # the receiver refuses this alert: trying again will not help
        raise AlertError(f"{self.name}: {last} (after {attempt + 1} attempt(s))")

    async def close(self) -> None:
        await self._client.aclose()


class EmailSink:
    def __init__(self, spec: EmailSpec) -> None:
        self.spec = spec
        self.name = f"email:{spec.host}:{spec.port}"

    def _message(self, alert: dict[str, Any], now: datetime | None = None) -> EmailMessage:
        msg = EmailMessage()
        audit = " (audit: not blocked)" if alert.get("action") == "logged-only" else ""
        msg["Subject"] = (f"{self.spec.subject_prefix} {alert['severity'].upper()}{audit}:"
                          f" {alert['title']}")
        msg["From"] = self.spec.sender
        msg["To"] = ", ".join(self.spec.to)
        # RFC 5322 requires Date; Message-ID lets mail systems thread and deduplicate. The id's
        # domain is the sender's: make_msgid's default asks DNS for this host's FQDN.
        msg["Date"] = format_datetime(now or datetime.now(UTC))
        domain = self.spec.sender.rpartition("@")[2].strip("<> ") or "outguard.invalid"
        msg["Message-ID"] = make_msgid(idstring=str(alert.get("id", ""))[:32] or None,
                                       domain=domain)
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
        msg.set_content(text_line(alert) + "\n\n" + json_line(alert) + "\n")
        return msg

    def _deliver(self, msg: EmailMessage) -> None:
        spec = self.spec
        cls = smtplib.SMTP_SSL if spec.ssl else smtplib.SMTP
        with cls(spec.host, spec.port, timeout=spec.timeout) as smtp:
            if spec.starttls:
                smtp.starttls()
            if spec.username:
                password = os.environ.get(spec.password_env or "", "")
                smtp.login(spec.username, password)
            smtp.send_message(msg)

    async def send(self, alert: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self._deliver, self._message(alert))
        except (OSError, smtplib.SMTPException) as exc:
            raise AlertError(f"{self.name}: {exc}") from exc

    async def close(self) -> None:
        return None


def build_sink(spec: AlertSpec, stdout: TextIO | None = None) -> Sink:
    if spec.webhook is not None:
        return WebhookSink(spec.webhook)
    if spec.syslog is not None:
        return SyslogSink(spec.syslog)
    if spec.email is not None:
        return EmailSink(spec.email)
    assert spec.stdout is not None  # AlertSpec holds exactly one
    return StdoutSink(spec.stdout, stdout)
