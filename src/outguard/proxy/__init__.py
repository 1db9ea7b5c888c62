"""outguard's egress proxy: HTTP/1.1 forward proxy and CONNECT tunnels, decided by `decide()`.

Place in the data flow: a client's request names a host and port; `target` normalises it,
`guard` decides it (the same `ruleset.decide` as the kernel, plus the SSRF never-reach set),
`resolve` resolves names once, `server` connects to the checked address and relays bytes.
"""
