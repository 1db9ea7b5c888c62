#!/bin/sh
# outguard policy 4047f9a7e3e5 as ufw commands (outgoing only).
# Rules are added after any you have; the default comes last. Then: ufw enable
set -e
ufw allow out log to 198.51.100.0/24 comment og:deny:attacker-net
ufw allow out proto tcp to 203.0.113.10 port 443 comment og:allow:web
ufw default allow outgoing
