@echo off
rem outguard policy 4047f9a7e3e5 as netsh advfirewall commands (run as Administrator).
rem Every rule is named "outguard", so the first command removes the previous run's rules.
rem Each command is checked: the first that fails stops the script (exit code 1) before the default outbound action is set.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=443 remoteip=203.0.113.10/32 description="allow:web"
if errorlevel 1 goto :failed
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,allowoutbound
if errorlevel 1 goto :failed
netsh advfirewall set allprofiles state on
if errorlevel 1 goto :failed
echo outguard policy 4047f9a7e3e5 applied
exit /b 0
:failed
echo outguard: a netsh command failed (above); the default outbound action was not changed 1>&2
exit /b 1
