@echo off
rem outguard policy 84a2117e1a6c as netsh advfirewall commands.
rem Every rule is named "outguard", so the first command removes the previous run's rules.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.0/24,2001:db8:bad::/48 description="deny:attacker-net: known-bad network"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.10/32,2001:db8::10/128 remoteport=80,443 description="allow:web-api: the application_s upstream API"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.20/32,2001:db8:1::20/128 remoteport=80 description="allow:package-mirror: host name, resolved at apply time"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=192.0.2.53/32 remoteport=53 description="allow:lab-dns"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteip=192.0.2.53/32 remoteport=53 description="allow:lab-dns"
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,blockoutbound
