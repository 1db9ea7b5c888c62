#!/bin/sh
# outguard policy a5ee71c7c6ce as ufw commands (outgoing only).
# Rules are added after any you have; the default comes last. Then: ufw enable
set -e
ufw reject out log to 198.51.100.0/24 comment og:deny:attacker-net
ufw reject out log to 2001:db8:bad::/48 comment og:deny:attacker-net
ufw reject out log proto tcp to any port 25,465,587 comment og:deny:no-smtp
ufw reject out log proto tcp to any port 389,636 comment og:deny:ldap-as-nobody
ufw reject out log proto udp to any port 389,636 comment og:deny:ldap-as-nobody
ufw allow out proto tcp to 203.0.113.10 port 80,443,8000:8100 comment og:allow:web
ufw allow out proto tcp to 203.0.113.64/26 port 80,443,8000:8100 comment og:allow:web
ufw allow out proto tcp to 2001:db8:1::10 port 80,443,8000:8100 comment og:allow:web
ufw allow out proto tcp to 192.0.2.53 port 53 comment og:allow:dns-any-proto
ufw allow out proto udp to 192.0.2.53 port 53 comment og:allow:dns-any-proto
ufw allow out proto tcp to 2001:db8::53 port 53 comment og:allow:dns-any-proto
ufw allow out proto udp to 2001:db8::53 port 53 comment og:allow:dns-any-proto
ufw allow out to 203.0.113.40 comment og:allow:host-any
ufw allow out proto tcp to 203.0.113.99 port 8443 comment og:allow:temporary
ufw allow out proto udp to any port 33434:33534 comment og:allow:traceroute
ufw default reject outgoing
