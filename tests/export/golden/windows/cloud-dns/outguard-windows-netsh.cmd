@echo off
rem outguard policy 54a9437f9334 as netsh advfirewall commands.
rem Every rule is named "outguard", so the first command removes the previous run's rules.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.99/32 description="deny:c2-by-name"
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.66/32,2001:db8:bad::66/128 description="deny:bad-list"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.30/32,2001:db8:1::30/128 remoteport=443 description="allow:api"
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=192.0.2.41/32,192.0.2.40/32 remoteport=443 description="allow:partners"
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,blockoutbound
