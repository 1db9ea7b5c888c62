"""The shared decision table: one policy and what `decide` must say for each flow.

Used by the pure tests (`tests/ruleset/test_decide.py`, `tests/nftables/test_semantics.py`) and imported
by the kernel tests, which check that nftables gives the same verdict for the same flow. So the
table is written for that kernel topology and keeps to what it can send:

- destinations only from the documentation ranges, and never the tester's own addresses
  (192.0.2.2, 2001:db8::2: traffic to them leaves through `lo`; `LOCAL_CASES` are about
  them); the only on-link addresses used
  are the peer's, 192.0.2.1 and 2001:db8::1, everything else is routed to the peer;
- protocols tcp and udp only (no ICMP);
- uid 0 (root) or 65534 (nobody), and the gid equals the uid (root runs as 0:0, nobody as
  65534:65534, the Debian `nogroup`);
- `options.log_rate: 1000/second`, so a test that counts NFLOG messages is not rate-limited.

Expiry dates are far from today (2001 and 2099), so the kernel (which checks `meta time`
against the real clock) and `decide` at `CASE_NOW` agree. `CASE_NOW` is only for the pure tests.

Every entry of `CASES` is a `Case`; `rule` is the decision key (`deny:<name>`, `allow:<name>`,
`default`), the counter the kernel increments is `rule` with the first ':' replaced by '.'
(`outguard.ruleset.keys.RuleKey.counter`). `verdict` is for the policy as written (enforce, drop);
`expected_verdict` gives it for the `variant` policies (audit mode, reject default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

CASE_NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

CASE_POLICY = """\
# The decision-table policy (tests/cases.py). Documentation addresses only.
version: 1
mode: enforce

deny:
  - name: attacker-net
    comment: known-bad networks, both families
    to: [198.51.100.0/24, "2001:db8:bad::/48"]
  - name: no-smtp
    comment: any destination, tcp only
    ports: [25, 465, 587]
    proto: tcp
  - name: chargen
    comment: any destination, udp only
    ports: [19]
    proto: udp
  - name: nobody-no-ldap
    comment: JNDI callbacks from the service account (tcp and udp)
    ports: [389, 636, 1389]
    for: {user: nobody}
  - name: old-block
    comment: expired long ago, so it is left out
    to: [203.0.113.40]
    expires: 2001-01-01T00:00:00Z
  - name: temp-block
    comment: expires in 2099, so it is in force
    to: [203.0.113.66]
    expires: 2099-01-01T00:00:00Z
  - name: bad-list
    to: ["@bad"]

allow:
  - name: trusted-in-attacker-net
    comment: shadowed by deny attacker-net, never decides
    to: [198.51.100.7]
    ports: [443]
    proto: tcp
  - name: web-api
    to: [203.0.113.10, "2001:db8:1::10"]
    ports: [80, 443]
    proto: tcp
  - name: range-svc
    to: [203.0.113.32/27]
    ports: ["8000-8100"]
    proto: tcp
  - name: net-https
    comment: overlaps web-api and range-svc; the earlier rule decides
    to: [203.0.113.0/25, "2001:db8:1::/48"]
    ports: [443]
    proto: tcp
  - name: host-any
    comment: every port and protocol to one host inside the /25
    to: [203.0.113.40, "2001:db8:1::40"]
  - name: ntp
    to: [203.0.113.0/24]
    ports: [123]
    proto: udp
  - name: backup-as-nobody
    to: [203.0.113.12]
    ports: [80]
    proto: tcp
    for: {user: nobody}
  - name: ssh-as-root
    to: [203.0.113.0/24]
    ports: [22]
    proto: tcp
    for: {user: 0}
  - name: mirrors
    to: ["@mirrors"]
    ports: [80, 443]
    proto: tcp
  - name: temp-allow
    to: [203.0.113.99]
    ports: [8443]
    proto: tcp
    expires: 2099-01-01T00:00:00Z
  - name: expired-allow
    to: [203.0.113.98]
    ports: [8443]
    proto: tcp
    expires: 2001-01-01T00:00:00Z
  - name: nogroup-only
    to: [203.0.113.150, "2001:db8:1::150"]
    ports: [7000]
    for: {group: 65534}
  - name: traceroute
    comment: any destination, udp high ports
    ports: ["33434-33534"]
    proto: udp
  - name: dns
    to: [192.0.2.1, "2001:db8::1"]
    ports: [53]
  - name: ping
    comment: icmp only; never matches tcp or udp
    to: [203.0.113.0/24]
    proto: icmp

lists:
  bad: [203.0.113.250, "2001:db8:dead::/48"]
  mirrors:
    - 203.0.113.248/29
    - 203.0.113.200
    - "2001:db8:2::/48"

options:
  default_action: drop
  nflog_group: 0
  log_rate: 1000/second
"""

Proto = Literal["tcp", "udp"]
Verdict = Literal["accept", "drop", "reject"]


@dataclass(frozen=True)
class Case:
    dst: str
    port: int
    proto: Proto
    uid: int
    rule: str  # decision key: "deny:<name>", "allow:<name>", "default"
    verdict: Verdict  # for CASE_POLICY as written (enforce, default_action drop)
    note: str = ""

    @property
    def gid(self) -> int:
        return self.uid

    @property
    def action(self) -> Literal["allow", "deny"]:
        return "allow" if self.rule.startswith("allow:") else "deny"

    @property
    def id(self) -> str:
        return f"{self.proto}-{self.dst}-{self.port}-uid{self.uid}"


def _allow(dst: str, port: int, proto: Proto, uid: int, rule: str, note: str = "") -> Case:
    return Case(dst, port, proto, uid, f"allow:{rule}", "accept", note)


def _deny(dst: str, port: int, proto: Proto, uid: int, rule: str, note: str = "") -> Case:
    return Case(dst, port, proto, uid, f"deny:{rule}", "drop", note)


def _default(dst: str, port: int, proto: Proto, uid: int, note: str = "") -> Case:
    return Case(dst, port, proto, uid, "default", "drop", note)


ROOT, NOBODY = 0, 65534

CASES: list[Case] = [
    # --- deny attacker-net: both families, every port and protocol, beats the later allow
    _deny("198.51.100.1", 80, "tcp", ROOT, "attacker-net"),
    _deny("198.51.100.254", 53, "udp", ROOT, "attacker-net"),
    _deny("198.51.100.7", 443, "tcp", ROOT, "attacker-net", "allow trusted-in-attacker-net is shadowed"),
    _deny("198.51.100.7", 443, "tcp", NOBODY, "attacker-net"),
    _deny("198.51.100.9", 33434, "udp", ROOT, "attacker-net", "deny beats allow traceroute"),
    _deny("198.51.100.20", 25, "tcp", ROOT, "attacker-net", "first deny rule wins over no-smtp"),
    _deny("2001:db8:bad::1", 443, "tcp", ROOT, "attacker-net"),
    _deny("2001:db8:bad:ffff::99", 123, "udp", NOBODY, "attacker-net"),
    # --- deny rules for every destination, by port and protocol
    _deny("203.0.113.10", 25, "tcp", ROOT, "no-smtp"),
    _deny("203.0.113.40", 587, "tcp", ROOT, "no-smtp", "deny beats allow host-any"),
    _deny("2001:db8:1::40", 465, "tcp", NOBODY, "no-smtp"),
    _allow("203.0.113.40", 25, "udp", ROOT, "host-any", "no-smtp is tcp only"),
    _deny("203.0.113.40", 19, "udp", ROOT, "chargen"),
    _allow("203.0.113.40", 19, "tcp", ROOT, "host-any", "chargen is udp only"),
    _deny("2001:db8:1::10", 19, "udp", ROOT, "chargen"),
    # --- deny by uid: nobody may not reach LDAP ports, root may
    _deny("203.0.113.40", 389, "tcp", NOBODY, "nobody-no-ldap"),
    _deny("203.0.113.40", 1389, "udp", NOBODY, "nobody-no-ldap"),
    _allow("203.0.113.40", 1389, "tcp", ROOT, "host-any", "nobody-no-ldap is for uid 65534"),
    _deny("2001:db8:1::40", 636, "tcp", NOBODY, "nobody-no-ldap"),
    _default("203.0.113.77", 389, "tcp", ROOT, "no allow rule for this host"),
    # --- expiry: old-block (2001) is gone, temp-block (2099) is in force
    _allow("203.0.113.40", 9090, "tcp", ROOT, "host-any", "deny old-block expired in 2001"),
    _deny("203.0.113.66", 443, "tcp", ROOT, "temp-block", "net-https would allow it"),
    _deny("203.0.113.66", 123, "udp", ROOT, "temp-block"),
    _allow("203.0.113.99", 8443, "tcp", ROOT, "temp-allow"),
    _default("203.0.113.98", 8443, "tcp", ROOT, "allow expired-allow expired in 2001"),
    # --- deny through a list, beating an allow through another list
    _deny("203.0.113.250", 443, "tcp", ROOT, "bad-list", "also in @mirrors 203.0.113.248/29"),
    _deny("2001:db8:dead::5", 80, "tcp", ROOT, "bad-list"),
    _allow("203.0.113.251", 443, "tcp", ROOT, "mirrors"),
    _allow("203.0.113.255", 80, "tcp", ROOT, "mirrors", "last address of 203.0.113.248/29"),
    _allow("203.0.113.200", 80, "tcp", NOBODY, "mirrors"),
    _allow("2001:db8:2::abcd", 443, "tcp", ROOT, "mirrors"),
    _default("203.0.113.201", 80, "tcp", ROOT, "next to a list entry"),
    _default("203.0.113.251", 8080, "tcp", ROOT, "list address, wrong port"),
    _default("203.0.113.251", 443, "udp", ROOT, "list address, wrong protocol"),
    # --- web-api: two single addresses, two ports, tcp only
    _allow("203.0.113.10", 80, "tcp", ROOT, "web-api"),
    _allow("203.0.113.10", 443, "tcp", NOBODY, "web-api", "earlier than net-https"),
    _allow("2001:db8:1::10", 80, "tcp", ROOT, "web-api"),
    _allow("2001:db8:1::10", 443, "tcp", ROOT, "web-api", "earlier than net-https (IPv6)"),
    _default("203.0.113.10", 8080, "tcp", ROOT),
    _default("203.0.113.10", 443, "udp", ROOT, "web-api is tcp only"),
    _default("2001:db8:1::10", 80, "udp", ROOT),
    # --- overlapping prefixes: range-svc (/27) before net-https (/25) before host-any (one host)
    _allow("203.0.113.33", 8000, "tcp", ROOT, "range-svc", "first port of the range"),
    _allow("203.0.113.62", 8100, "tcp", ROOT, "range-svc", "last port of the range"),
    _allow("203.0.113.40", 8050, "tcp", ROOT, "range-svc", "range-svc is earlier than host-any"),
    _allow("203.0.113.40", 443, "tcp", ROOT, "net-https", "net-https is earlier than host-any"),
    _allow("203.0.113.40", 9999, "udp", NOBODY, "host-any"),
    _allow("203.0.113.40", 65535, "tcp", ROOT, "host-any"),
    _default("203.0.113.33", 8101, "tcp", ROOT, "one past the range"),
    _default("203.0.113.64", 8000, "tcp", ROOT, "one past the /27"),
    _allow("203.0.113.64", 443, "tcp", ROOT, "net-https"),
    _allow("203.0.113.127", 443, "tcp", ROOT, "net-https", "last address of the /25"),
    _default("203.0.113.128", 443, "tcp", ROOT, "first address after the /25"),
    _allow("2001:db8:1::40", 443, "tcp", ROOT, "net-https"),
    _allow("2001:db8:1::40", 5000, "udp", ROOT, "host-any"),
    _allow("2001:db8:1:ffff::1", 443, "tcp", ROOT, "net-https"),
    _default("2001:db8:1:ffff::1", 80, "tcp", ROOT),
    # --- ntp: a /24 for udp 123 only
    _allow("203.0.113.200", 123, "udp", ROOT, "ntp"),
    _allow("203.0.113.10", 123, "udp", NOBODY, "ntp"),
    _default("203.0.113.200", 123, "tcp", ROOT, "ntp is udp only"),
    # --- by uid and gid
    _allow("203.0.113.12", 80, "tcp", NOBODY, "backup-as-nobody"),
    _default("203.0.113.12", 80, "tcp", ROOT, "backup-as-nobody is for uid 65534"),
    _allow("203.0.113.130", 22, "tcp", ROOT, "ssh-as-root"),
    _default("203.0.113.130", 22, "tcp", NOBODY, "ssh-as-root is for uid 0"),
    _allow("203.0.113.150", 7000, "tcp", NOBODY, "nogroup-only"),
    _allow("203.0.113.150", 7000, "udp", NOBODY, "nogroup-only"),
    _allow("2001:db8:1::150", 7000, "tcp", NOBODY, "nogroup-only"),
    _default("203.0.113.150", 7000, "tcp", ROOT, "nogroup-only is for gid 65534"),
    # --- any destination, udp high ports
    _allow("203.0.113.222", 33434, "udp", ROOT, "traceroute"),
    _allow("2001:db8:3::1", 33534, "udp", NOBODY, "traceroute"),
    _default("203.0.113.222", 33535, "udp", ROOT, "one past the range"),
    _default("203.0.113.222", 33434, "tcp", ROOT, "traceroute is udp only"),
    # --- dns to the peer, tcp and udp
    _allow("192.0.2.1", 53, "udp", ROOT, "dns"),
    _allow("192.0.2.1", 53, "tcp", NOBODY, "dns"),
    _allow("2001:db8::1", 53, "udp", ROOT, "dns"),
    _default("192.0.2.1", 80, "tcp", ROOT),
    _default("2001:db8::1", 5353, "udp", ROOT),
    # --- the icmp rule covers the /24 but never tcp or udp
    _default("203.0.113.222", 80, "tcp", ROOT, "ping is icmp only"),
    _default("203.0.113.222", 80, "udp", ROOT, "ping is icmp only"),
    # --- nothing matches
    _default("2001:db8:4::1", 443, "tcp", ROOT),
    _default("203.0.113.128", 1, "udp", NOBODY),
]

Mode = Literal["enforce", "audit"]
DefaultAction = Literal["drop", "reject"]


def variant_policy(mode: Mode = "enforce", default_action: DefaultAction = "drop") -> str:
    """CASE_POLICY in audit mode and/or with `default_action: reject`."""
    text = CASE_POLICY.replace("mode: enforce", f"mode: {mode}", 1)
    return text.replace("default_action: drop", f"default_action: {default_action}", 1)


def expected_verdict(case: Case, mode: Mode = "enforce",
                     default_action: DefaultAction = "drop") -> Verdict:
    """The verdict of `case` under `variant_policy(mode, default_action)`; the rule is the same."""
    if case.action == "allow":
        return "accept"
    if mode == "audit":
        return "accept"
    return default_action


# --- names with a `dns:` section ------------------------------------------------------------
# With `dns:` a host name is decided by name: outguard's resolver answers it (or not), and the
# kernel lets its addresses out through the rule's resolver-filled set. `decide(Flow(name=…))`
# and the resolver's `NamePolicy.lookup` must agree on every row (issue 14, issue 15 §1): names
# in a rule's own `to`, in the entries of the lists it uses, and wildcards in both.

NAME_CASE_POLICY = """\
# The name decision table (tests/cases.py: NAME_CASES). Documentation names only.
version: 1
mode: enforce
deny:
  - name: c2
    to: [c2.example.test, "*.evil.example.test"]
  - name: no-ldap-names
    comment: "a deny by list name, for some ports only: the name still resolves"
    to: ["@ldap-hosts"]
    ports: [389, 636]
allow:
  - name: api
    to: [api.example.test]
    ports: [443]
    proto: tcp
  - name: via-list
    to: ["@apis"]
    ports: [443]
    proto: tcp
  - name: mirrors-any-port
    to: ["@mirrors"]
  - name: directory
    to: [dir.example.test]
  - name: issue-15
    comment: "issue 15's example: names only in a list, every port and protocol"
    to: ["@apis15"]
lists:
  apis15: [api15.example.test, "*.cdn15.example.test"]
  apis: [api2.example.test, "*.cdn.example.test", 203.0.113.10]
  mirrors: [mirror.example.test]
  ldap-hosts: [dir.example.test]
dns:
  listen: "127.0.0.1:53"
  upstreams: ["192.0.2.53"]
"""


@dataclass(frozen=True)
class NameCase:
    name: str
    port: int
    proto: Proto
    rule: str  # what decide says for a connection to the name
    resolves: bool  # whether outguard's resolver answers the name
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.proto}-{self.name}-{self.port}"


NAME_CASES: list[NameCase] = [
    NameCase("api.example.test", 443, "tcp", "allow:api", True),
    NameCase("api.example.test", 80, "tcp", "default", True, "the rule is for port 443 only"),
    NameCase("api.example.test", 53, "udp", "default", True, "DNS only through the resolver"),
    NameCase("api2.example.test", 443, "tcp", "allow:via-list", True, "a name in a list"),
    NameCase("API2.Example.Test.", 443, "tcp", "allow:via-list", True, "case and trailing dot"),
    NameCase("api2.example.test", 443, "udp", "default", True, "the rule is tcp only"),
    NameCase("a.cdn.example.test", 443, "tcp", "allow:via-list", True, "a wildcard in a list"),
    NameCase("x.y.cdn.example.test", 443, "tcp", "allow:via-list", True),
    NameCase("cdn.example.test", 443, "tcp", "default", False, "the wildcard needs a label"),
    NameCase("mirror.example.test", 8080, "udp", "allow:mirrors-any-port", True),
    NameCase("mirror.example.test", 443, "tcp", "allow:mirrors-any-port", True),
    NameCase("dir.example.test", 389, "tcp", "deny:no-ldap-names", True, "a deny by list name"),
    NameCase("dir.example.test", 636, "udp", "deny:no-ldap-names", True),
    NameCase("dir.example.test", 80, "tcp", "allow:directory", True),
    NameCase("c2.example.test", 443, "tcp", "deny:c2", False),
    NameCase("a.evil.example.test", 80, "udp", "deny:c2", False),
    NameCase("unlisted.example.test", 443, "tcp", "default", False),
    # issue 15: the resolver and the kernel allowed these, decide and `explain` said default
    NameCase("api15.example.test", 443, "tcp", "allow:issue-15", True, "a name in a list"),
    NameCase("api15.example.test", 8080, "udp", "allow:issue-15", True, "every port"),
    NameCase("a.cdn15.example.test", 443, "tcp", "allow:issue-15", True, "a list's wildcard"),
    NameCase("Deep.A.CDN15.example.test.", 22, "tcp", "allow:issue-15", True),
    NameCase("cdn15.example.test", 443, "tcp", "default", False, "the wildcard needs a label"),
    NameCase("api15.example.test", 853, "tcp", "default", True, "DNS only through the resolver"),
]


# --- the host's own addresses ----------------------------------------------------------------
# The kernel sends traffic to the host's own addresses through `lo` and accepts it there (`oif
# lo`), like 127.0.0.1; `decide(..., local=LOCAL_ADDRESSES)` must say so (issue 15 §1). These
# are the kernel topology's server addresses (tests/kernel/topology.py).

LOCAL_ADDRESSES = ("192.0.2.2", "2001:db8::2")


@dataclass(frozen=True)
class LocalCase:
    dst: str
    port: int
    proto: Proto
    uid: int
    rule: str  # with local=LOCAL_ADDRESSES
    rule_without_local: str  # what decide says when it is not told the host's addresses
    note: str = ""


LOCAL_CASES: list[LocalCase] = [
    LocalCase("192.0.2.2", 8080, "tcp", ROOT, "builtin:loopback", "default", "own address"),
    LocalCase("2001:db8::2", 53, "udp", NOBODY, "builtin:loopback", "default",
              "own address; rule dns is for the peer 2001:db8::1 only"),
    LocalCase("192.0.2.2", 25, "tcp", ROOT, "builtin:loopback", "deny:no-smtp",
              "loopback comes before every deny rule"),
    LocalCase("127.0.0.53", 53, "udp", ROOT, "builtin:loopback", "builtin:loopback"),
    LocalCase("::1", 443, "tcp", NOBODY, "builtin:loopback", "builtin:loopback"),
    LocalCase("::ffff:192.0.2.2", 443, "tcp", ROOT, "builtin:loopback", "default",
              "an IPv4-mapped own address is the IPv4 packet it becomes"),
    LocalCase("192.0.2.1", 53, "udp", ROOT, "allow:dns", "allow:dns", "the peer is no own address"),
]
