@echo off
rem outguard policy a5ee71c7c6ce as netsh advfirewall commands (run as Administrator).
rem Every rule is named "outguard", so the first command removes the previous run's rules.
rem Each command is checked: the first that fails stops the script (exit code 1) before the default outbound action is set.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.0/24,2001:db8:bad::/48 description="deny:attacker-net"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=tcp remoteport=25,465,587 description="deny:no-smtp"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=tcp remoteport=389,636 description="deny:ldap-as-nobody"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=udp remoteport=389,636 description="deny:ldap-as-nobody"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=80,443,8000-8100 remoteip=203.0.113.10/32,203.0.113.64/26,2001:db8:1::10/128 description="allow:web"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=53 remoteip=192.0.2.53/32,2001:db8::53/128 description="allow:dns-any-proto"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteport=53 remoteip=192.0.2.53/32,2001:db8::53/128 description="allow:dns-any-proto"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=any remoteip=203.0.113.40/32 description="allow:host-any"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=icmpv4 remoteip=203.0.113.0/24 description="allow:ping"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=icmpv6 remoteip=2001:db8:1::/48 description="allow:ping"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=8443 remoteip=203.0.113.99/32 description="allow:temporary"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteport=33434-33534 description="allow:traceroute"
if errorlevel 1 goto :failed
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,blockoutbound
if errorlevel 1 goto :failed
netsh advfirewall set allprofiles state on
if errorlevel 1 goto :failed
echo outguard policy a5ee71c7c6ce applied
exit /b 0
:failed
echo outguard: a netsh command failed (above); the default outbound action was not changed 1>&2
exit /b 1
