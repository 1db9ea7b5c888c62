"""The proxy child's JSON lines in the monitor: which become incidents, how they are counted,
and what `outguard status` prints of them (the kernel test tests/kernel/test_proxy_run.py
runs the whole path with a real proxy)."""

from __future__ import annotations

import time
from typing import Any

from outguard.agentstate import status_lines
from outguard.events import Event
from outguard.monitor.classify import load_classifier
from outguard.monitor.proxy_incidents import ProxyRecords, event_of, incident_rule

REFUSED = {"decision": "refused", "method": "CONNECT", "host": "evil.example", "port": 1389,
           "status": 403, "rule": "default", "reason": "no allow rule", "audit": False,
           "uid": 1000, "user": "app", "pid": 4242, "exe": "/usr/bin/java", "unit": "app.service",
           "client": "127.0.0.1"}


def test_a_refusal_is_an_event_with_the_client() -> None:
    event = event_of(REFUSED)
    assert event is not None
    pkt, att = event.packet, event.attribution
    assert (pkt.rule, pkt.action, pkt.dst, pkt.dport, pkt.proto) == (
        "proxy:default", "refused", "evil.example", 1389, "tcp")
    assert (att.pid, att.exe, att.uid, att.user, att.unit) == (
        4242, "/usr/bin/java", 1000, "app", "app.service")
    assert event.names == ("evil.example",)


def test_what_is_no_incident() -> None:
    assert event_of({**REFUSED, "decision": "allowed", "rule": "allow:web"}) is None
    assert event_of({"connections": 3}) is None
    audit = event_of({**REFUSED, "decision": "allowed", "audit": True})
    assert audit is not None and audit.packet.action == "logged-only"
    literal = event_of({**REFUSED, "host": "2001:db8::7", "rule": "proxy:never-reach"})
    assert literal is not None and literal.names == ()
    assert literal.packet.rule == "proxy:never-reach" == incident_rule("proxy:never-reach")


def test_records_count_classify_and_report() -> None:
    got: list[Event] = []
    classifier = load_classifier(())
    records = ProxyRecords(got.append, lambda: classifier)
    records.handle({"listening": ["127.0.0.1:3128"], "transparent": [443]})
    records.handle({**REFUSED})
    records.handle({**REFUSED, "decision": "allowed", "rule": "allow:web"})
    records.handle({"connections": 7})
    assert len(got) == 1 and got[0].classifications  # the signatures had their say
    assert any(c.signature == "jndi-callback" for c in got[0].classifications), \
        got[0].classifications  # java to 1389: the Log4Shell callback, through the proxy too
    report: dict[str, Any] = records.report()
    assert report["requests"] == {"refused": 1, "allowed": 1}
    assert report["connections"] == 7 and report["running"]
    lines = status_lines({}, {"pid": 1, "updated": time.time(), "proxy": report})
    assert ("  proxy: listening on 127.0.0.1:3128, ports 443 redirected into it;"
            " 7 connections open; requests allowed 1, refused 1") in lines, lines
    records.stopped()
    assert "NOT RUNNING" in "\n".join(status_lines({}, {"pid": 1, "updated": time.time(),
                                                        "proxy": records.report()}))
