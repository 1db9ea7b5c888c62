"""What an alert says, in each sink's format: JSON, one text line, an RFC 5424 syslog message.

Place in the data flow: aggregate's `events.Incident` → **format** → sinks. Pure functions.
The RFC 5424 formatter is written here because the standard library's SysLogHandler speaks only
the older BSD format (RFC 3164) and the one PyPI handler for 5424 is unmaintained since 2019;
the format is one line of fixed fields.
"""

from __future__ import annotations

import json
import socket
from datetime import datetime
from typing import Any

from outguard.events import Incident

# RFC 5424 severities: 2 crit, 3 err, 4 warning, 5 notice, 6 info
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
# RFC 5612: the private enterprise number reserved for documentation and examples
SD_ID = "outguard@32473"
NILVALUE = "-"


def alert_json(incident: Incident, *, repeat: bool, host: str | None = None) -> dict[str, Any]:
    return {"type": "outguard.incident", "repeat": repeat,
            "host": host or socket.gethostname(), **incident.to_json()}


# how a text says what the kernel did (the incident's `action`)
ACTION_TEXT = {"dropped": "dropped", "rejected": "rejected", "refused": "refused",
               "logged-only": "logged only: audit mode, NOT blocked"}


def is_incident(alert: dict[str, Any]) -> bool:
    """An incident's alert; the others (a feed refused, a reload failed, the store failing)
    carry only `severity`, `title`, `signature` and details of their own."""
    return alert.get("type", "outguard.incident") == "outguard.incident" and "process" in alert


def text_line(alert: dict[str, Any]) -> str:
    if not is_incident(alert):
        title = alert.get("title", alert.get("signature", "outguard"))
        return f"{str(alert.get('severity', 'info')).upper()} {title}"
    proc = alert["process"]
    who = proc["exe"] + (f" (pid {proc['pid']})" if proc.get("pid") is not None else "")
    port = f":{alert['dport']}" if alert.get("dport") is not None else ""
    again = f" [{alert['count']} packets so far]" if alert.get("repeat") else ""
    action = ACTION_TEXT.get(alert.get("action") or "", "")
    return (f"{alert['severity'].upper()} {alert['title']}: {who} → {alert['dst']}{port}"
            f" {alert['proto']} (rule {alert['rule']}{', ' + action if action else ''}){again}")


def _sd_value(value: object) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' are escaped inside PARAM-VALUE
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _field(value: str | None, limit: int) -> str:
    if not value:
        return NILVALUE
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)  # PRINTUSASCII
    return clean[:limit] or NILVALUE


def rfc5424(alert: dict[str, Any], *, facility: int, app_name: str, hostname: str | None,
            procid: int | None, now: datetime) -> bytes:
    """`<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] BOM MSG`, UTF-8."""
    pri = facility * 8 + SYSLOG_SEVERITY.get(alert.get("severity", "info"), 6)
    if is_incident(alert):
        params = {"id": alert["id"], "signature": alert["signature"], "severity": alert["severity"],
                  "exe": alert["process"]["exe"], "pid": alert["process"].get("pid"),
                  "dst": alert["dst"], "dport": alert.get("dport"), "proto": alert["proto"],
                  "rule": alert["rule"], "action": alert.get("action"), "count": alert["count"]}
        msgid = "incident"
    else:
        params = {"type": alert.get("type"), "signature": alert.get("signature"),
                  "severity": alert.get("severity")}
        msgid = str(alert.get("type", "outguard")).removeprefix("outguard.") or "outguard"
    sd = "[" + SD_ID + "".join(f' {k}="{_sd_value(v)}"' for k, v in params.items()
                               if v is not None) + "]"
    header = (f"<{pri}>1 {now.isoformat(timespec='microseconds')}"
              f" {_field(hostname or socket.gethostname(), 255)} {_field(app_name, 48)}"
              f" {_field(str(procid) if procid is not None else None, 128)} {_field(msgid, 32)}")
    return f"{header} {sd} ".encode() + b"\xef\xbb\xbf" + text_line(alert).encode()


def json_line(alert: dict[str, Any]) -> str:
    return json.dumps(alert, separators=(",", ":"), ensure_ascii=False)
