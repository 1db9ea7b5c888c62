@echo off
rem outguard policy a5ee71c7c6ce as netsh advfirewall commands.
rem Every rule is named "outguard", so the first command removes the previous run's rules.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.0/24,2001:db8:bad::/48 description="deny:attacker-net"
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=tcp remoteport=25,465,587 description="deny:no-smtp"
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=tcp remoteport=389,636 description="deny:ldap-as-nobody"
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=udp remoteport=389,636 description="deny:ldap-as-nobody"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.10/32,203.0.113.64/26,2001:db8:1::10/128 remoteport=80,443,8000-8100 description="allow:web"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=192.0.2.53/32,2001:db8::53/128 remoteport=53 description="allow:dns-any-proto"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteip=192.0.2.53/32,2001:db8::53/128 remoteport=53 description="allow:dns-any-proto"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=any remoteip=203.0.113.40/32 description="allow:host-any"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=icmpv4 remoteip=203.0.113.0/24 description="allow:ping"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=icmpv6 remoteip=2001:db8:1::/48 description="allow:ping"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.99/32 remoteport=8443 description="allow:temporary"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteport=33434-33534 description="allow:traceroute"
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,blockoutbound
