"""outguard's DNS resolver: the only way out for DNS, and what keeps FQDN sets fresh.

Data flow: a client's query → `wire` (parse) → `names.NamePolicy` (may this name be resolved,
into which kernel sets?) → `cache` or an upstream (`upstream`) → `updater` puts every A/AAAA of the
answer into the rule's sets (`server` batches the writes, `kernel.fqdnsets` makes them) → only
then the answer goes back. Names no rule allows are answered at once without any upstream query
and recorded (`events`; under `outguard run` also as monitor incidents, `incidents`). The answer
cache also tells the monitor which names resolved to an address (`Resolver.names_of`).
"""
