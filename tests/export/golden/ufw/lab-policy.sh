#!/bin/sh
# outguard policy 84a2117e1a6c as ufw commands (outgoing only).
# Rules are added after any you have; the default comes last. Then: ufw enable
set -e
ufw deny out log to 198.51.100.0/24 comment og:deny:attacker-net
ufw deny out log to 2001:db8:bad::/48 comment og:deny:attacker-net
ufw allow out proto tcp to 203.0.113.10 port 80,443 comment og:allow:web-api
ufw allow out proto tcp to 2001:db8::10 port 80,443 comment og:allow:web-api
ufw allow out proto tcp to 203.0.113.20 port 80 comment og:allow:package-mirror
ufw allow out proto tcp to 2001:db8:1::20 port 80 comment og:allow:package-mirror
ufw allow out proto tcp to 192.0.2.53 port 53 comment og:allow:lab-dns
ufw allow out proto udp to 192.0.2.53 port 53 comment og:allow:lab-dns
ufw default deny outgoing
