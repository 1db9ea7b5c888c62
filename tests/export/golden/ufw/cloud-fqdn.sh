#!/bin/sh
# outguard policy 208ec2a3b70d as ufw commands (outgoing only).
# Rules are added after any you have; the default comes last. Then: ufw enable
set -e
ufw deny out log to 198.51.100.66 comment og:deny:evil-name
ufw deny out log to 2001:db8:bad::66 comment og:deny:evil-name
ufw allow out proto tcp to 203.0.113.20 port 80,443 comment og:allow:mirror
ufw allow out proto tcp to 2001:db8:1::20 port 80,443 comment og:allow:mirror
ufw allow out to 203.0.113.30 comment og:allow:api-any-port
ufw allow out to 2001:db8:1::30 comment og:allow:api-any-port
ufw default deny outgoing
