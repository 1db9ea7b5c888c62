@echo off
rem outguard policy 4fa3e4f47edc as netsh advfirewall commands.
rem Every rule is named "outguard", so the first command removes the previous run's rules.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.0/24,2001:db8:bad::/48 description="deny:attacker-net: known-bad networks, both families"
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=tcp remoteport=25,465,587 description="deny:no-smtp: any destination, tcp only"
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=udp remoteport=19 description="deny:chargen: any destination, udp only"
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=tcp remoteport=389,636,1389 description="deny:nobody-no-ldap: JNDI callbacks from the service account (tcp and udp)"
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=udp remoteport=389,636,1389 description="deny:nobody-no-ldap: JNDI callbacks from the service account (tcp and udp)"
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=203.0.113.66/32 description="deny:temp-block: expires in 2099, so it is in force"
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=203.0.113.250/32,2001:db8:dead::/48 description="deny:bad-list"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=198.51.100.7/32 remoteport=443 description="allow:trusted-in-attacker-net: shadowed by deny attacker-net, never decides"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.10/32,2001:db8:1::10/128 remoteport=80,443 description="allow:web-api"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.32/27 remoteport=8000-8100 description="allow:range-svc"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.0/25,2001:db8:1::/48 remoteport=443 description="allow:net-https: overlaps web-api and range-svc_ the earlier rule decides"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=any remoteip=203.0.113.40/32,2001:db8:1::40/128 description="allow:host-any: every port and protocol to one host inside the /25"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteip=203.0.113.0/24 remoteport=123 description="allow:ntp"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.200/32,203.0.113.248/29,2001:db8:2::/48 remoteport=80,443 description="allow:mirrors"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.99/32 remoteport=8443 description="allow:temp-allow"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteport=33434-33534 description="allow:traceroute: any destination, udp high ports"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=192.0.2.1/32,2001:db8::1/128 remoteport=53 description="allow:dns"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteip=192.0.2.1/32,2001:db8::1/128 remoteport=53 description="allow:dns"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=icmpv4 remoteip=203.0.113.0/24 description="allow:ping: icmp only_ never matches tcp or udp"
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,blockoutbound
