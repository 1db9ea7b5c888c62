"""Each sink against a real peer on loopback, and the dispatcher's isolation of sinks."""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import time
from datetime import UTC, datetime
from email import message_from_bytes
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from outguard.alerts.dispatch import Dispatcher
from outguard.alerts.format import alert_json
from outguard.alerts.sinks import AlertError, EmailSink, StdoutSink, SyslogSink, WebhookSink
from outguard.monitor.aggregate import Aggregator
from outguard.monitor.classify import load_classifier
from outguard.policy.alertconf import AlertSpec, EmailSpec, SyslogSpec, WebhookSpec
from tests.alerts.peers import SyslogTcp, SyslogUdp, receiver

JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
CLASSIFIER = load_classifier()


def make_alert(severity_exe: str = JAVA, dport: int = 1389) -> dict[str, Any]:
    from tests.monitor.events import event

    ev = event("203.0.113.9", dport, exe=severity_exe)
    ev.classifications = CLASSIFIER.classify(ev)
    return alert_json(Aggregator().add(ev).incident, repeat=False, host="web1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_webhook_posts_the_alert_json() -> None:
    alert = make_alert()
    with receiver() as r:
        asyncio.run(WebhookSink(WebhookSpec(url=r.url)).send(alert))
        assert [json.loads(b) for b in r.bodies] == [alert]
        assert alert["severity"] == "critical" and alert["signature"] == "jndi-callback"


def test_webhook_retries_5xx_with_backoff() -> None:
    with receiver("fail", failures=2) as r:
        sink = WebhookSink(WebhookSpec(url=r.url, retries=3, backoff=0.05))
        t0 = time.monotonic()
        asyncio.run(sink.send(make_alert()))
        assert r.posts == 3 and len(r.bodies) == 1 and sink.attempts == 3
        assert time.monotonic() - t0 >= 0.05 + 0.1  # backoff doubled between tries


def test_webhook_gives_up_after_retries() -> None:
    with receiver("fail", failures=100) as r:
        sink = WebhookSink(WebhookSpec(url=r.url, retries=2, backoff=0.01))
        with pytest.raises(AlertError, match=r"HTTP 500 \(after 3 attempt"):
            asyncio.run(sink.send(make_alert()))
        assert r.posts == 3


def test_webhook_does_not_retry_a_refusal() -> None:
    with receiver("reject") as r:
        with pytest.raises(AlertError, match="HTTP 400"):
            asyncio.run(WebhookSink(WebhookSpec(url=r.url, retries=3, backoff=0.01)).send(
                make_alert()))
        assert r.posts == 1


def test_webhook_hang_times_out() -> None:
    with receiver("hang", hang=3.0) as r:
        sink = WebhookSink(WebhookSpec(url=r.url, timeout=0.3, retries=1, backoff=0.05))
        t0 = time.monotonic()
        with pytest.raises(AlertError, match="ReadTimeout"):
            asyncio.run(sink.send(make_alert()))
        assert time.monotonic() - t0 < 1.5
        assert r.posts == 2


def test_hanging_and_failing_sinks_do_not_block_the_others() -> None:
    out = io.StringIO()
    udp = SyslogUdp()

    async def main(hook: str) -> tuple[float, Dispatcher]:
        d = Dispatcher([
            (WebhookSink(WebhookSpec(url=hook, timeout=2.0, retries=0)), "info"),
            (WebhookSink(WebhookSpec(url=f"http://127.0.0.1:{free_port()}/x", retries=0)), "info"),
            (SyslogSink(SyslogSpec(url=udp.url)), "info"),
            (StdoutSink("json", out), "info"),
        ])
        d.start()
        alerts = [make_alert() for _ in range(3)]
        t0 = time.monotonic()
        for alert in alerts:
            d.publish(alert)
        publish_time = time.monotonic() - t0
        # the quick sinks deliver while the hanging webhook is still stuck on the first post
        for _ in range(100):
            if out.getvalue().count("\n") == 3:
                break
            await asyncio.sleep(0.01)
        assert out.getvalue().count("\n") == 3
        assert d.stats[f"webhook:{hook}"].sent == 0
        await d.close(timeout=0.2)
        return publish_time, d

    with receiver("hang", hang=3.0) as r:
        publish_time, d = asyncio.run(main(r.url))
    assert publish_time < 0.01  # three publishes; the hanging webhook holds none
    assert [udp.recv() for _ in range(3)]
    stats = {name.split(":")[0] + (":dead" if "/x" in name else ""): s
             for name, s in d.stats.items()}
    assert stats["webhook:dead"].failed == 3
    assert stats["stdout"].sent == 3 and stats["syslog"].sent == 3


def test_dispatcher_drops_oldest_when_a_sink_falls_behind() -> None:
    got: list[str] = []

    class Slow:
        name = "slow"

        async def send(self, alert: dict[str, Any]) -> None:
            await asyncio.sleep(0.05)
            got.append(alert["id"])

        async def close(self) -> None:
            return None

    async def main() -> Dispatcher:
        d = Dispatcher([(Slow(), "info")], queue_size=2)
        d.start()
        for i in range(5):
            d.publish({"id": str(i), "severity": "high"})
        await d.close(timeout=2)
        return d

    d = asyncio.run(main())
    assert d.stats["slow"].dropped >= 2
    assert got[-1] == "4"  # the newest is never the one dropped


def test_a_full_queue_drops_low_alerts_before_a_critical_one() -> None:
    """Hostile tester: a flood of low alerts must not push a critical one out of a slow sink's
    queue; dropped alerts are counted."""
    got: list[str] = []
    seen: list[tuple[str, str]] = []

    class Slow:
        name = "slow"

        async def send(self, alert: dict[str, Any]) -> None:
            await asyncio.sleep(0.02)
            got.append(alert["id"])

        async def close(self) -> None:
            return None

    class Internal(Slow):
        name = "memory"
        internal = True

    async def main() -> Dispatcher:
        d = Dispatcher([(Slow(), "info"), (Internal(), "info")], queue_size=3,
                       observe=lambda sink, outcome: seen.append((sink, outcome)))
        d.start()
        d.publish({"id": "first-low", "severity": "low"})
        await asyncio.sleep(0)  # the sink takes it: the queue is empty again
        d.publish({"id": "crit", "severity": "critical"})
        for i in range(10):
            d.publish({"id": f"low{i}", "severity": "low"})
        d.publish({"id": "info", "severity": "info"})  # less than all queued: dropped itself
        await d.close(timeout=2)
        return d

    d = asyncio.run(main())
    assert "crit" in got and "info" not in got
    assert got.count("crit") == 2  # both sinks
    assert d.stats["slow"].dropped == 9
    assert {sink for sink, _outcome in seen} == {"slow"}  # the internal sink is not counted
    assert ("slow", "dropped") in seen


def test_min_severity_filters_per_sink() -> None:
    low, high = io.StringIO(), io.StringIO()

    async def main() -> None:
        d = Dispatcher([(StdoutSink("json", low), "info"), (StdoutSink("text", high), "high")])
        d.start()
        d.publish(make_alert("/usr/bin/curl", 443))  # low
        d.publish(make_alert())  # critical
        await d.close()

    asyncio.run(main())
    assert low.getvalue().count("\n") == 2
    assert high.getvalue().count("\n") == 1
    assert high.getvalue().startswith("CRITICAL possible JNDI callback (Log4Shell): ")


RFC5424 = re.compile(rb"^<(\d+)>1 (\S+) (\S+) outguard (\d+) incident \[outguard@32473 ([^\]]*)\]"
                     rb" \xef\xbb\xbf(.*)$", re.S)


def test_syslog_udp_is_rfc5424() -> None:
    udp = SyslogUdp()
    alert = make_alert()
    asyncio.run(SyslogSink(SyslogSpec(url=udp.url, facility=4)).send(alert))
    m = RFC5424.match(udp.recv())
    assert m is not None
    assert int(m.group(1)) == 4 * 8 + 2  # auth.crit
    assert b'signature="jndi-callback"' in m.group(5) and b'dport="1389"' in m.group(5)
    assert m.group(6).decode().startswith("CRITICAL possible JNDI callback")


def test_syslog_tcp_frames_and_reconnects() -> None:
    tcp = SyslogTcp()
    sink = SyslogSink(SyslogSpec(url=tcp.url))

    async def main() -> None:
        await sink.send(make_alert())
        await sink.send(make_alert("/usr/bin/curl", 443))
        assert len(tcp.wait(2)) == 2
        assert sink._tcp is not None
        sink._tcp.close()  # the connection drops: the next send opens a new one
        await asyncio.sleep(0.05)
        await sink.send(make_alert())
        await sink.close()

    asyncio.run(main())
    frames = tcp.wait(3)
    assert len(frames) == 3 and all(RFC5424.match(f) for f in frames)
    assert int(RFC5424.match(frames[1]).group(1)) == 4 * 8 + 5  # type: ignore[union-attr]
    assert tcp.connections == 2
    tcp.close()


def test_syslog_tcp_without_receiver_fails_cleanly() -> None:
    sink = SyslogSink(SyslogSpec(url=f"tcp://127.0.0.1:{free_port()}"))
    with pytest.raises(AlertError, match="syslog:tcp://"):
        asyncio.run(sink.send(make_alert()))


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def test_email_is_delivered_over_smtp() -> None:
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    try:
        spec = EmailSpec.model_validate({"host": "127.0.0.1", "port": ctl.port,
                                         "from": "og@example.org", "to": ["sec@example.org"]})
        asyncio.run(EmailSink(spec).send(make_alert()))
    finally:
        ctl.stop()
    ((sender, rcpts, raw),) = inbox.messages
    assert (sender, rcpts) == ("og@example.org", ["sec@example.org"])
    msg = message_from_bytes(raw)
    assert msg["Subject"] == "[outguard] CRITICAL: possible JNDI callback (Log4Shell)"
    body = msg.get_payload(decode=True).decode()
    assert '"signature":"jndi-callback"' in body
    # RFC 5322 headers mail systems rely on (they were missing)
    sent = parsedate_to_datetime(msg["Date"])
    assert sent.tzinfo is not None and abs(time.time() - sent.timestamp()) < 60
    assert re.fullmatch(r"<[^<>@\s]+@example\.org>", msg["Message-ID"])
    assert msg["Auto-Submitted"] == "auto-generated"


def test_email_of_an_audit_incident_says_it_was_not_blocked() -> None:
    spec = EmailSpec.model_validate({"host": "127.0.0.1", "from": "og@example.org",
                                     "to": ["sec@example.org"]})
    alert = {**make_alert(), "action": "logged-only"}
    msg = EmailSink(spec)._message(alert)
    assert msg["Subject"] == ("[outguard] CRITICAL (audit: not blocked): possible JNDI callback"
                              " (Log4Shell)")
    ids = {EmailSink(spec)._message(alert)["Message-ID"] for _ in range(3)}
    assert len(ids) == 3  # unique per message


def test_email_without_server_fails_cleanly() -> None:
    spec = EmailSpec.model_validate({"host": "127.0.0.1", "port": free_port(), "timeout": 2,
                                     "from": "og@example.org", "to": ["sec@example.org"]})
    with pytest.raises(AlertError, match=r"email:127\.0\.0\.1"):
        asyncio.run(EmailSink(spec).send(make_alert()))


def test_stdout_json_lines() -> None:
    out = io.StringIO()
    alert = make_alert()
    asyncio.run(StdoutSink("json", out).send(alert))
    assert json.loads(out.getvalue()) == alert and out.getvalue().count("\n") == 1


@pytest.mark.parametrize(("item", "error"), [
    ({"webhook": "ftp://x"}, "not an http"),
    ({"syslog": "udp://"}, "not a syslog address"),
    ({"stdout": "json", "syslog": "udp://127.0.0.1:514"}, "exactly one"),
    ({}, "exactly one"),
    ({"email": {"host": "h", "from": "a@b", "to": []}}, "at least 1"),
    ({"stdout": "json", "min_severity": "urgent"}, "min_severity"),
])
def test_bad_alert_specs(item: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        AlertSpec.model_validate(item)


@pytest.mark.parametrize("alert", [
    {"type": "outguard.feed", "host": None, "severity": "medium", "signature": "feed-refused",
     "title": "feed corp-bad: refused: it shrank by 90 %", "feed": "corp-bad", "kind": "refused",
     "details": {}},
    {"type": "outguard.agent", "host": "h", "severity": "high",
     "signature": "policy-reload-failed", "title": "policy reload failed: p.yaml:3:5: ...",
     "reason": "load", "serving": "abc"},
    {"type": "outguard.store", "severity": "high", "signature": "store-failed",
     "title": "incidents are not being stored: disk full", "details": {"lost": 3}},
])
def test_alerts_that_are_no_incident_reach_text_and_syslog(alert: dict[str, Any]) -> None:
    """Feed, reload and store alerts have no process or destination: the text and syslog
    formats raised KeyError('process') on them, so they never reached those sinks."""
    from outguard.alerts.format import rfc5424, text_line

    line = text_line(alert)
    assert line == f"{alert['severity'].upper()} {alert['title']}"
    raw = rfc5424(alert, facility=4, app_name="outguard", hostname="h", procid=1,
                  now=datetime(2026, 12, 3, tzinfo=UTC))
    assert raw.startswith(b"<3" if alert["severity"] == "high" else b"<36>")
    assert f'signature="{alert["signature"]}"'.encode() in raw and line.encode() in raw
