"""Each built-in signature: an event it must match, and a near miss it must not."""

from __future__ import annotations

from pathlib import Path

import pytest

from outguard.events import Attribution, Event
from outguard.monitor.classify import FALLBACK, SignatureError, load_classifier
from tests.monitor.events import event

JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
C = load_classifier()


def gone(kind: str, uid: int | None = 0, user: str | None = "root") -> Event:
    """A blocked packet whose process could not be found, for reason `kind`."""
    base = event(exe=None, pid=None, uid=uid)
    return Event(base.packet, Attribution(uid=uid, user=user, failure="gone",
                                          failure_kind=kind), names=base.names)

# (signature, event that must match, event that must not)
CASES: list[tuple[str, Event, Event]] = [
    ("jndi-callback", event("203.0.113.9", 1389, exe=JAVA, rule="deny:x"),
     event("203.0.113.9", 443, exe=JAVA, rule="deny:x")),
    ("jndi-callback", event("203.0.113.9", 443, exe=JAVA, rule="default"),
     event("203.0.113.9", 443, exe="/usr/bin/python3", rule="default")),
    ("jndi-callback", event("203.0.113.9", 1099, exe=JAVA, rule="deny:x"),  # RMI
     event("203.0.113.9", 1389, exe="/usr/bin/ldapsearch", rule="deny:x")),
    ("cloud-metadata", event("169.254.169.254", 80, exe="/usr/bin/python3"),
     event("169.254.169.254", 80, exe="/usr/bin/cloud-init")),
    ("cloud-metadata", event("fd00:ec2::254", 80, exe="/usr/bin/curl"),
     event("198.51.100.254", 80, exe="/usr/bin/curl")),
    ("miner-process", event(exe="/tmp/.x/xmrig"), event(exe="/usr/bin/xmllint")),
    ("miner-pool", event(dport=3333), event(dport=3333, proto="udp")),
    ("tor", event(dport=9001), event(dport=9002)),
    ("tor", event(dport=443, rule="feed:tor-exits", feed="tor-exits"), event(dport=443)),
    ("webserver-ssh", event(dport=22, exe="/usr/sbin/nginx"), event(dport=22, exe="/usr/bin/git")),
    ("webserver-smb", event(dport=445, exe="/usr/sbin/apache2"),
     event(dport=443, exe="/usr/sbin/apache2")),
    ("webserver-smtp", event(dport=587, exe="/usr/sbin/php-fpm8.2"),
     event(dport=587, exe="/usr/sbin/postfix")),
    ("webserver-user-lateral", event(dport=22, exe=None, pid=None, user=None, uid=33),
     event(dport=22, exe=None, pid=None, user=None, uid=1000)),
    ("reverse-shell", event(dport=4242, exe="/usr/bin/bash"), event(dport=4242, exe="/usr/bin/bashful")),
    ("download-from-webserver", event(exe="/usr/bin/wget", parent=JAVA),
     event(exe="/usr/bin/wget", parent="/usr/bin/bash")),
    ("irc-c2", event(dport=6667), event(dport=6670)),
    ("threat-feed", event(rule="feed:spamhaus", feed="spamhaus"), event(rule="deny:x")),
    ("dns-bypass", event("198.51.100.53", 53, proto="udp", rule="default"),
     event("198.51.100.53", 53, proto="udp", rule="allow:dns")),
    # without a `dns:` section there is no resolver to bypass
    ("dns-bypass", event("198.51.100.53", 853, rule="default"),
     event("198.51.100.53", 853, rule="default", names_known=False)),
    ("dns-not-allowed", event("198.51.100.53", 53, proto="udp", names_known=False),
     event("198.51.100.53", 53, proto="udp")),
    ("local-discovery", event("224.0.0.251", 5353, proto="udp", names_known=False),
     event("198.51.100.53", 5353, proto="udp", names_known=False)),
    ("local-discovery", event("ff02::1:3", 5355, proto="udp"),
     event("ff02::1:3", 5355, proto="tcp")),
    ("direct-smtp", event(dport=25, exe="/usr/bin/python3"),
     event(dport=25, exe="/usr/lib/postfix/sbin/master")),
    ("remote-admin", event(dport=3389), event(dport=3390)),
    ("database-egress", event(dport=5432), event(dport=5433)),
    ("raw-ip-no-dns", event("203.0.113.50", 443, names=()),
     event("203.0.113.50", 443, names=("cdn.example",))),
    ("raw-ip-no-dns", event("203.0.113.50", 443, names=()),
     event("10.1.2.3", 443, names=())),
    # no outguard resolver ran: that no name was behind the address is not known, so not claimed
    ("raw-ip-no-dns", event("203.0.113.50", 443, names=()),
     event("203.0.113.50", 443, names=(), names_known=False)),
    ("explicit-deny", event(rule="deny:telemetry"), event(rule="default")),
    ("lockdown", event(rule="lockdown"), event(rule="default")),
    ("unattributed", event(exe=None, pid=None), event()),
    ("closed-early", gone("closed"), gone("no-socket", uid=None, user=None)),
    ("closed-early", gone("orphan"), event()),
    ("exited-early", gone("exited"), gone("closed")),
    ("exited-early", gone("no-process"), gone("not-local", uid=None, user=None)),
]


def test_a_socket_closed_before_the_lookup_says_whose_it_was() -> None:
    """A connect closed within ~0.5 s was "no process behind it" (low), exe "uid:0": a
    process was there, and NFLOG said whose."""
    got = C.classify(gone("closed"))
    assert (got[0].signature, got[0].severity, got[0].title) == (
        "closed-early", "low", "socket closed before it could be looked up (uid 0, user root)")
    assert "no process behind it" not in " ".join(c.title for c in got)
    got = C.classify(gone("no-socket", uid=None, user=None))
    assert (got[0].signature, got[0].title) == (
        "unattributed", "outbound packet whose process could not be found")


@pytest.mark.parametrize(("sig", "hit", "miss"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_signature_matches_and_misses(sig: str, hit: Event, miss: Event) -> None:
    assert sig in {c.signature for c in C.classify(hit)}
    assert sig not in {c.signature for c in C.classify(miss)}


def test_every_builtin_signature_has_a_case() -> None:
    assert {s.id for s in C.signatures} == {c[0] for c in CASES}


def test_jndi_is_critical_and_first() -> None:
    got = C.classify(event("203.0.113.9", 1389, exe=JAVA, names=()))
    assert got[0].signature == "jndi-callback"
    assert got[0].severity == "critical"
    assert got[0].title == "possible JNDI callback (Log4Shell)"
    assert [c.severity for c in got] == sorted((c.severity for c in got),
                                               key=["info", "low", "medium", "high",
                                                    "critical"].index, reverse=True)


@pytest.mark.parametrize("names_known", [True, False])
def test_mdns_is_local_discovery_not_a_dns_bypass(names_known: bool) -> None:
    """Trial run: UDP 5353 (mDNS) was classed "DNS query that bypasses outguard's resolver",
    with no `dns:` section (no resolver at all)."""
    for dst in ("224.0.0.251", "ff02::fb"):
        got = C.classify(event(dst, 5353, proto="udp", exe="/usr/sbin/avahi-daemon",
                               names_known=names_known))
        assert got[0].signature == "local-discovery", got
        assert not {"dns-bypass", "dns-not-allowed"} & {c.signature for c in got}


def test_no_resolver_no_bypass() -> None:
    got = C.classify(event("198.51.100.53", 53, proto="udp", names_known=False))
    assert got[0].signature == "dns-not-allowed"
    assert "dns-bypass" not in {c.signature for c in got}


@pytest.mark.parametrize("port", [4444, 3333, 5555])
def test_a_shell_connecting_out_is_a_reverse_shell_before_a_miner_port(port: int) -> None:
    """Trial run: `bash -c 'exec 3<>/dev/tcp/…/4444'` was named "connection to a cryptocurrency
    mining pool port"; what the process is beats what the port suggests."""
    got = C.classify(event("203.0.113.9", port, exe="/usr/bin/bash", names=()))
    assert got[0].signature == "reverse-shell"
    assert "miner-pool" in {c.signature for c in got}  # still listed


def test_nothing_matches_gives_the_fallback() -> None:
    assert C.classify(event(dport=443, rule="default", exe="/usr/bin/apt")) == [FALLBACK]


def test_user_file_adds_replaces_and_disables(tmp_path: Path) -> None:
    extra = tmp_path / "mine.yaml"
    extra.write_text("""
version: 1
signatures:
  - id: internal-api
    title: our own API hit from the batch host
    severity: critical
    when: {dst: [198.51.100.0/24], ports: ["8000-8100"]}
  - id: tor
    title: TOR, replaced
    severity: low
    when: {ports: [9001]}
disable: [irc-c2]
""")
    c = load_classifier([extra])
    assert [x.signature for x in c.classify(event("198.51.100.4", 8080))][:1] == ["internal-api"]
    tor = [x for x in c.classify(event(dport=9001)) if x.signature == "tor"]
    assert tor and tor[0].severity == "low"
    assert "irc-c2" not in {x.signature for x in c.classify(event(dport=6667))}


@pytest.mark.parametrize(("text", "message"), [
    ("signatures: [{id: a, title: t, severity: severe, when: {}}]", "signatures[0].severity"),
    ("signatures: [{id: a, title: t, severity: low, when: {ports: [70000]}}]",
     "signatures[0].when.ports"),
    ("signatures: [{id: a, title: t, severity: low, when: {dst: [nope]}}]",
     "signatures[0].when.dst"),
    ("signatures: [{id: a, title: t, severity: low, when: {colour: red}}]",
     "signatures[0].when.colour"),
    ("disable: [no-such]", "no signature 'no-such'"),
    ("signatures: [", "not valid YAML"),
])
def test_bad_signature_file_names_the_place(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SignatureError) as err:
        load_classifier([bad])
    assert str(bad) in str(err.value)
    assert message in str(err.value)
