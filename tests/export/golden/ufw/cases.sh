#!/bin/sh
# outguard policy 4fa3e4f47edc as ufw commands (outgoing only).
# Rules are added after any you have; the default comes last. Then: ufw enable
set -e
ufw deny out log to 198.51.100.0/24 comment og:deny:attacker-net
ufw deny out log to 2001:db8:bad::/48 comment og:deny:attacker-net
ufw deny out log proto tcp to any port 25,465,587 comment og:deny:no-smtp
ufw deny out log proto udp to any port 19 comment og:deny:chargen
ufw deny out log proto tcp to any port 389,636,1389 comment og:deny:nobody-no-ldap
ufw deny out log proto udp to any port 389,636,1389 comment og:deny:nobody-no-ldap
ufw deny out log to 203.0.113.66 comment og:deny:temp-block
ufw deny out log to 203.0.113.250 comment og:deny:bad-list
ufw deny out log to 2001:db8:dead::/48 comment og:deny:bad-list
ufw allow out proto tcp to 198.51.100.7 port 443 comment og:allow:trusted-in-attacker-net
ufw allow out proto tcp to 203.0.113.10 port 80,443 comment og:allow:web-api
ufw allow out proto tcp to 2001:db8:1::10 port 80,443 comment og:allow:web-api
ufw allow out proto tcp to 203.0.113.32/27 port 8000:8100 comment og:allow:range-svc
ufw allow out proto tcp to 203.0.113.0/25 port 443 comment og:allow:net-https
ufw allow out proto tcp to 2001:db8:1::/48 port 443 comment og:allow:net-https
ufw allow out to 203.0.113.40 comment og:allow:host-any
ufw allow out to 2001:db8:1::40 comment og:allow:host-any
ufw allow out proto udp to 203.0.113.0/24 port 123 comment og:allow:ntp
ufw allow out proto tcp to 203.0.113.200 port 80,443 comment og:allow:mirrors
ufw allow out proto tcp to 203.0.113.248/29 port 80,443 comment og:allow:mirrors
ufw allow out proto tcp to 2001:db8:2::/48 port 80,443 comment og:allow:mirrors
ufw allow out proto tcp to 203.0.113.99 port 8443 comment og:allow:temp-allow
ufw allow out proto udp to any port 33434:33534 comment og:allow:traceroute
ufw allow out proto tcp to 192.0.2.1 port 53 comment og:allow:dns
ufw allow out proto udp to 192.0.2.1 port 53 comment og:allow:dns
ufw allow out proto tcp to 2001:db8::1 port 53 comment og:allow:dns
ufw allow out proto udp to 2001:db8::1 port 53 comment og:allow:dns
ufw default deny outgoing
