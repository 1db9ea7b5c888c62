@echo off
rem outguard policy 4047f9a7e3e5 as netsh advfirewall commands.
rem Every rule is named "outguard", so the first command removes the previous run's rules.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteip=203.0.113.10/32 remoteport=443 description="allow:web"
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,allowoutbound
