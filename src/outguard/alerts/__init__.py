"""Alert sinks: stdout JSON lines, syslog (RFC 5424), webhook, email; each isolated."""
