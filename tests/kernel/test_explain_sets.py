"""explain and the kernel agree on an address the resolver put into a name rule's set (journey
trial defect 4): the real resolver answers api.example.test (dnsmasq upstream in the peer),
fills `allow:curl`'s set and saves its state in the state directory when it stops; then nobody
reaches the address while root does not (`for: {user: nobody}`), and `outguard explain --to
ADDRESS --netns --state-dir` says ALLOW by allow:curl for nobody, DENY for root — where it used
to say DENY (default) for both.

Namespaces og-fxj-<hex> (created and deleted here), documentation addresses only.
"""

from __future__ import annotations

import secrets

import pytest

from outguard.dns import cache as dcache
from outguard.kernel import netns as ns
from tests.kernel.conftest import kernel_skip_reason
from tests.kernel.dnsenv import UPSTREAM, ResolverThread, addresses, dns_world
from tests.kernel.topology import Probe, build

pytestmark = pytest.mark.kernel

API = "203.0.113.10"
NOBODY = 65534
POLICY = f"""
version: 1
dns:
  listen: "127.0.0.1:53"
  upstreams: ["{UPSTREAM}"]
allow:
  - name: curl
    to: [api.example.test]
    ports: [443]
    proto: tcp
    for: {{user: nobody}}
"""


def _netns() -> str:
    name = f"og-fxj-{secrets.token_hex(3)}"
    ns.add(name)
    try:
        ns.run(name, ["ip", "link", "set", "lo", "up"])
    except BaseException:
        ns.delete(name)
        raise
    return name


def test_explain_says_what_the_kernel_does_with_an_address_in_a_name_set() -> None:
    if reason := kernel_skip_reason():
        pytest.skip(reason)
    with build(_netns) as topo, dns_world(topo) as w:
        w.set_hosts({"api.example.test": [API]}, reload=False)
        w.start_dnsmasq(ttl=60)
        ruleset = w.apply(POLICY)
        assert ruleset.dns is not None and w.policy is not None
        w.resolver = ResolverThread(ruleset.dns, ruleset, state_dir=topo.state_dir,
                                    netns=topo.server)
        assert addresses(w.ask("api.example.test")) == [API]
        w.stop_resolver()  # the agent saves what it put into the sets when it stops
        assert (topo.state_dir / dcache.FILE).exists()

        # the kernel: nobody gets out through the name's set, root does not
        assert topo.passes(Probe(API, 443, "tcp", uid=NOBODY), Probe(API, 443, "tcp")) == \
            [True, False]

        def first_line(*extra: str) -> str:
            proc = topo.cli("explain", str(w.policy), "--to", API, "--port", "443",
                            "--proto", "tcp", *extra)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout.splitlines()[0]

        assert first_line("--user", "nobody") == \
            f"ALLOW  api.example.test ({API}) port 443/tcp: accepted by allow:curl"
        assert first_line("--user", "root") == \
            f"DENY   api.example.test ({API}) port 443/tcp: dropped by default"
