@echo off
rem outguard policy 54a9437f9334 as netsh advfirewall commands (run as Administrator).
rem Every rule is named "outguard", so the first command removes the previous run's rules.
rem Each command is checked: the first that fails stops the script (exit code 1) before the default outbound action is set.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.99/32 description="deny:c2-by-name"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.66/32,2001:db8:bad::66/128 description="deny:bad-list"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=443 remoteip=203.0.113.30/32,2001:db8:1::30/128 description="allow:api"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=443 remoteip=192.0.2.41/32,192.0.2.40/32 description="allow:partners"
if errorlevel 1 goto :failed
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,blockoutbound
if errorlevel 1 goto :failed
netsh advfirewall set allprofiles state on
if errorlevel 1 goto :failed
echo outguard policy 54a9437f9334 applied
exit /b 0
:failed
echo outguard: a netsh command failed (above); the default outbound action was not changed 1>&2
exit /b 1
