"""`outguard schema`: the policy's JSON Schema, for editors (validation and help on hover).

Made from the pydantic models (`PolicyDoc` and what it holds). The policy's own models describe
their fields with `Field(description=...)`; the sections other packages own (`dns:`, `feeds:`,
`alerts:`) are described here, so that every property of the schema carries help text
(tests/policy/test_schema.py checks that none is missing, and that the README's examples
validate against it).
"""

from __future__ import annotations

from typing import Any

from outguard.policy.model import PolicyDoc

SECTIONS: dict[str, dict[str, str]] = {
    "DnsConfig": {
        "listen": "Where clients ask (UDP and TCP), address[:port]; one address, not every one.",
        "upstreams": "DNS servers the resolver forwards allowed names to, address[:port], tried"
                     " in order with failover. Only the resolver may reach them.",
        "min_ttl": "Floor, in seconds, of how long an answer's addresses stay in the kernel set.",
        "grace": "Seconds added to every kernel set entry's lifetime after its TTL runs out.",
        "unlisted": "The answer to names no rule allows: refused or nxdomain (no upstream query).",
        "user": "The user (name or uid) the resolver runs as: the only one allowed to reach the"
                " upstreams on ports 53 and 853.",
        "timeout": "Seconds to wait for one upstream before trying the next.",
        "blocklists": "Files of host names (hosts-file or one name per line) answered NXDOMAIN.",
    },
    "FeedDef": {
        "url": "Where the feed is downloaded from (http:// or https://); not with file.",
        "file": "A local file to read the feed from; not with url.",
        "format": "plain, spamhaus-json, feodo-csv, hosts, domains or dshield.",
        "category": "A label for what the feed lists; incidents name it.",
        "outbound": "Whether the feed matters for outbound traffic.",
        "min_interval": "Seconds at least between two downloads (60 to 604800).",
        "may_be_empty": "An empty update is accepted (otherwise refused as a broken download).",
        "max_shrink": "Refuse an update that loses more than this fraction of the entries"
                      " (default 0.5).",
        "max_growth": "Refuse an update that grows more than this factor (default 3).",
        "max_bytes": "Refuse a download larger than this many bytes.",
    },
    "AlertSpec": {
        "webhook": "POST each incident as JSON: a URL, or {url, timeout, retries, backoff,"
                   " headers}.",
        "syslog": "Send RFC 5424 messages: udp://host:port or tcp://host:port, or {url, facility,"
                  " app_name}.",
        "stdout": "Print incidents on standard output: json or text.",
        "email": "Mail incidents: {host, port, from, to, starttls, ssl, username, password_env}.",
        "min_severity": "Only incidents at least this severe: info, low, medium, high, critical.",
    },
    "WebhookSpec": {
        "url": "The http:// or https:// URL incidents are POSTed to.",
        "timeout": "Seconds to wait for the server.",
        "retries": "Attempts after the first one fails.",
        "backoff": "Seconds before the first retry; doubled for each next one.",
        "headers": "Extra HTTP headers (e.g. Authorization).",
    },
    "SyslogSpec": {
        "url": "udp://host:port or tcp://host:port (port 514 when left out).",
        "facility": "Syslog facility number (4 = auth, the default: security messages).",
        "app_name": "The APP-NAME field of each message.",
    },
    "EmailSpec": {
        "host": "The SMTP server.",
        "port": "The SMTP port (25; 465 with ssl, 587 with starttls).",
        "from": "The sender address.",
        "to": "The recipients.",
        "starttls": "Upgrade the connection with STARTTLS.",
        "ssl": "Connect with TLS from the start (SMTPS).",
        "username": "Log in as this user.",
        "password_env": "The environment variable that holds the password (never the password).",
        "timeout": "Seconds to wait for the server.",
        "subject_prefix": "Put before every subject line.",
    },
}


def policy_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy file."""
    doc = PolicyDoc.model_json_schema(by_alias=True)
    for name, fields in SECTIONS.items():
        props = doc["$defs"].get(name, {}).get("properties", {})
        for prop, text in fields.items():
            if prop in props:
                props[prop].setdefault("description", text)
    _decimals_as_written(doc)
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "outguard policy"
    return doc


_DECIMAL = {"type": "string", "pattern": r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$"}


def _decimals_as_written(node: Any) -> None:
    """The policy's YAML reads `1.0` as the text "1.0" (no YAML 1.1 number surprises; the model
    converts it): every `number` of the schema also takes such a text."""
    if isinstance(node, dict):
        if node.get("type") == "number":
            number = {k: node.pop(k) for k in list(node) if k not in ("description", "default",
                                                                       "title")}
            node["anyOf"] = [number, _DECIMAL]
            return
        for value in node.values():
            _decimals_as_written(value)
    elif isinstance(node, list):
        for value in node:
            _decimals_as_written(value)
