@echo off
rem outguard policy 84a2117e1a6c as netsh advfirewall commands (run as Administrator).
rem Every rule is named "outguard", so the first command removes the previous run's rules.
rem Each command is checked: the first that fails stops the script (exit code 1) before the default outbound action is set.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.0/24,2001:db8:bad::/48 description="deny:attacker-net: known-bad network"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=80,443 remoteip=203.0.113.10/32,2001:db8::10/128 description="allow:web-api: the application_s upstream API"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=80 remoteip=203.0.113.20/32,2001:db8:1::20/128 description="allow:package-mirror: host name, resolved at apply time"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=53 remoteip=192.0.2.53/32 description="allow:lab-dns"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteport=53 remoteip=192.0.2.53/32 description="allow:lab-dns"
if errorlevel 1 goto :failed
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,blockoutbound
if errorlevel 1 goto :failed
netsh advfirewall set allprofiles state on
if errorlevel 1 goto :failed
echo outguard policy 84a2117e1a6c applied
exit /b 0
:failed
echo outguard: a netsh command failed (above); the default outbound action was not changed 1>&2
exit /b 1
