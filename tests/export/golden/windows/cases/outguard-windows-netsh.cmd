@echo off
rem outguard policy 4fa3e4f47edc as netsh advfirewall commands (run as Administrator).
rem Every rule is named "outguard", so the first command removes the previous run's rules.
rem Each command is checked: the first that fails stops the script (exit code 1) before the default outbound action is set.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.0/24,2001:db8:bad::/48 description="deny:attacker-net: known-bad networks, both families"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=tcp remoteport=25,465,587 description="deny:no-smtp: any destination, tcp only"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=udp remoteport=19 description="deny:chargen: any destination, udp only"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=tcp remoteport=389,636,1389 description="deny:nobody-no-ldap: JNDI callbacks from the service account (tcp and udp)"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=udp remoteport=389,636,1389 description="deny:nobody-no-ldap: JNDI callbacks from the service account (tcp and udp)"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=203.0.113.66/32 description="deny:temp-block: expires in 2099, so it is in force"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=203.0.113.250/32,2001:db8:dead::/48 description="deny:bad-list"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=443 remoteip=198.51.100.7/32 description="allow:trusted-in-attacker-net: shadowed by deny attacker-net, never decides"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=80,443 remoteip=203.0.113.10/32,2001:db8:1::10/128 description="allow:web-api"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=8000-8100 remoteip=203.0.113.32/27 description="allow:range-svc"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=443 remoteip=203.0.113.0/25,2001:db8:1::/48 description="allow:net-https: overlaps web-api and range-svc_ the earlier rule decides"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=any remoteip=203.0.113.40/32,2001:db8:1::40/128 description="allow:host-any: every port and protocol to one host inside the /25"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteport=123 remoteip=203.0.113.0/24 description="allow:ntp"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=80,443 remoteip=203.0.113.200/32,203.0.113.248/29,2001:db8:2::/48 description="allow:mirrors"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=8443 remoteip=203.0.113.99/32 description="allow:temp-allow"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteport=33434-33534 description="allow:traceroute: any destination, udp high ports"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=53 remoteip=192.0.2.1/32,2001:db8::1/128 description="allow:dns"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteport=53 remoteip=192.0.2.1/32,2001:db8::1/128 description="allow:dns"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=icmpv4 remoteip=203.0.113.0/24 description="allow:ping: icmp only_ never matches tcp or udp"
if errorlevel 1 goto :failed
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,blockoutbound
if errorlevel 1 goto :failed
netsh advfirewall set allprofiles state on
if errorlevel 1 goto :failed
echo outguard policy 4fa3e4f47edc applied
exit /b 0
:failed
echo outguard: a netsh command failed (above); the default outbound action was not changed 1>&2
exit /b 1
