"""The daemon's composition (`outguard run`): the only place that constructs the agent's kernel
objects (NFLOG source, sock_diag, the counters reader) and owns its asyncio tasks. `runner`
wires the parts, `live` holds what a policy decides, `reload` follows the applied policy."""
