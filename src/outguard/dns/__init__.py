"""outguard's DNS resolver: the only way out for DNS, and what keeps FQDN sets fresh.

Data flow: a client's query → `wire` (parse) → `ruleset.names.NamePolicy` (may this name be resolved,
into which kernel sets?) → `cache` or an upstream (`upstream`) → the answer's A/AAAA records go
into the rule's sets → only then the answer goes back. Names no rule allows are answered at once
without any upstream query and recorded (`events`; under `outguard run` also as monitor
incidents, `monitor.dns_incidents`); forwarded names that look like tunnelling are recorded too (`tunnel`).

Two processes: the resolver (`process`: `resolver`, `server`, `upstream`) runs as its own
unprivileged user (`user`, `kernel.privsep`), the only uid the kernel lets reach the upstreams;
the agent (`supervisor`) starts it, writes the kernel sets for it (`setwriter`), finds who asked,
stores its events and cache, and keeps the names it resolved for the monitor
(`DnsHandle.names_of`). They talk over a socket pair (`ipc`).
"""
