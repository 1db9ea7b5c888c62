#!/bin/sh
# outguard policy 15295e780905 as ufw commands (outgoing only).
# Rules are added after any you have; the default comes last. Then: ufw enable
set -e
ufw deny out log to 203.0.113.100 comment og:deny:feed
ufw deny out log to 203.0.113.101 comment og:deny:feed
ufw deny out log to 203.0.113.102 comment og:deny:feed
ufw deny out log to 203.0.113.103 comment og:deny:feed
ufw deny out log to 203.0.113.104 comment og:deny:feed
ufw deny out log to 203.0.113.105 comment og:deny:feed
ufw deny out log to 203.0.113.106 comment og:deny:feed
ufw deny out log to 203.0.113.107 comment og:deny:feed
ufw deny out log to 203.0.113.108 comment og:deny:feed
ufw deny out log to 203.0.113.109 comment og:deny:feed
ufw deny out log to 203.0.113.110 comment og:deny:feed
ufw deny out log to 203.0.113.111 comment og:deny:feed
ufw deny out log to 203.0.113.112 comment og:deny:feed
ufw deny out log to 203.0.113.113 comment og:deny:feed
ufw deny out log to 203.0.113.114 comment og:deny:feed
ufw deny out log to 203.0.113.115 comment og:deny:feed
ufw deny out log to 203.0.113.116 comment og:deny:feed
ufw deny out log to 203.0.113.117 comment og:deny:feed
ufw deny out log to 203.0.113.118 comment og:deny:feed
ufw deny out log to 203.0.113.119 comment og:deny:feed
ufw deny out log to 203.0.113.120 comment og:deny:feed
ufw deny out log to 203.0.113.121 comment og:deny:feed
ufw deny out log to 203.0.113.122 comment og:deny:feed
ufw deny out log to 203.0.113.123 comment og:deny:feed
ufw deny out log to 203.0.113.124 comment og:deny:feed
ufw deny out log to 203.0.113.125 comment og:deny:feed
ufw deny out log to 203.0.113.126 comment og:deny:feed
ufw deny out log to 203.0.113.127 comment og:deny:feed
ufw deny out log to 203.0.113.128 comment og:deny:feed
ufw deny out log to 203.0.113.129 comment og:deny:feed
ufw deny out log to 203.0.113.130 comment og:deny:feed
ufw deny out log to 203.0.113.131 comment og:deny:feed
ufw deny out log to 203.0.113.132 comment og:deny:feed
ufw deny out log to 203.0.113.133 comment og:deny:feed
ufw deny out log to 203.0.113.134 comment og:deny:feed
ufw deny out log to 203.0.113.135 comment og:deny:feed
ufw deny out log to 203.0.113.136 comment og:deny:feed
ufw deny out log to 203.0.113.137 comment og:deny:feed
ufw deny out log to 203.0.113.138 comment og:deny:feed
ufw deny out log to 203.0.113.139 comment og:deny:feed
ufw deny out log to 203.0.113.140 comment og:deny:feed
ufw deny out log to 203.0.113.141 comment og:deny:feed
ufw deny out log to 203.0.113.142 comment og:deny:feed
ufw deny out log to 203.0.113.143 comment og:deny:feed
ufw deny out log to 203.0.113.144 comment og:deny:feed
ufw deny out log to 203.0.113.145 comment og:deny:feed
ufw deny out log to 203.0.113.146 comment og:deny:feed
ufw deny out log to 203.0.113.147 comment og:deny:feed
ufw deny out log to 203.0.113.148 comment og:deny:feed
ufw deny out log to 203.0.113.149 comment og:deny:feed
ufw deny out log to 203.0.113.150 comment og:deny:feed
ufw deny out log to 203.0.113.151 comment og:deny:feed
ufw deny out log to 203.0.113.152 comment og:deny:feed
ufw deny out log to 203.0.113.153 comment og:deny:feed
ufw deny out log to 203.0.113.154 comment og:deny:feed
ufw deny out log to 203.0.113.155 comment og:deny:feed
ufw deny out log to 203.0.113.156 comment og:deny:feed
ufw deny out log to 203.0.113.157 comment og:deny:feed
ufw deny out log to 203.0.113.158 comment og:deny:feed
ufw deny out log to 203.0.113.159 comment og:deny:feed
ufw deny out log to 2001:db8:dead::/48 comment og:deny:feed
ufw deny out log to 198.51.100.1 comment og:deny:many-hosts
ufw deny out log to 198.51.100.2 comment og:deny:many-hosts
ufw deny out log to 198.51.100.3 comment og:deny:many-hosts
ufw deny out log to 198.51.100.4 comment og:deny:many-hosts
ufw deny out log to 198.51.100.5 comment og:deny:many-hosts
ufw deny out log to 198.51.100.6 comment og:deny:many-hosts
ufw deny out log to 198.51.100.7 comment og:deny:many-hosts
ufw deny out log to 198.51.100.8 comment og:deny:many-hosts
ufw deny out log to 198.51.100.9 comment og:deny:many-hosts
ufw deny out log to 2001:db8:bad::1 comment og:deny:many-hosts
ufw allow out proto tcp to 203.0.113.10 port 20,21,22,25,53,80,110,143,443,465,587,993,995,8000:8100 comment og:allow:many-ports
ufw allow out proto tcp to 203.0.113.10 port 9000:9100,10000 comment og:allow:many-ports
ufw allow out proto tcp to 203.0.113.50 port 443 comment og:allow:vendor-until-2030
ufw allow out proto tcp to any port 53 comment og:allow:everything-dns
ufw allow out proto udp to any port 53 comment og:allow:everything-dns
ufw default deny outgoing
