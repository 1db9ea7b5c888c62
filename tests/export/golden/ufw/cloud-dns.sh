#!/bin/sh
# outguard policy 54a9437f9334 as ufw commands (outgoing only).
# Rules are added after any you have; the default comes last. Then: ufw enable
set -e
ufw deny out log to 198.51.100.99 comment og:deny:c2-by-name
ufw deny out log to 198.51.100.66 comment og:deny:bad-list
ufw deny out log to 2001:db8:bad::66 comment og:deny:bad-list
ufw allow out proto tcp to 203.0.113.30 port 443 comment og:allow:api
ufw allow out proto tcp to 2001:db8:1::30 port 443 comment og:allow:api
ufw allow out proto tcp to 192.0.2.41 port 443 comment og:allow:partners
ufw allow out proto tcp to 192.0.2.40 port 443 comment og:allow:partners
ufw default deny outgoing
