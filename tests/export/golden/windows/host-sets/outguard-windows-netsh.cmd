@echo off
rem outguard policy 15295e780905 as netsh advfirewall commands (run as Administrator).
rem Every rule is named "outguard", so the first command removes the previous run's rules.
rem Each command is checked: the first that fails stops the script (exit code 1) before the default outbound action is set.
netsh advfirewall firewall delete rule name="outguard" dir=out >nul 2>&1
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=203.0.113.100/32,203.0.113.101/32,203.0.113.102/32,203.0.113.103/32,203.0.113.104/32,203.0.113.105/32,203.0.113.106/32,203.0.113.107/32,203.0.113.108/32,203.0.113.109/32,203.0.113.110/32,203.0.113.111/32,203.0.113.112/32,203.0.113.113/32,203.0.113.114/32,203.0.113.115/32,203.0.113.116/32,203.0.113.117/32,203.0.113.118/32,203.0.113.119/32,203.0.113.120/32,203.0.113.121/32,203.0.113.122/32,203.0.113.123/32,203.0.113.124/32,203.0.113.125/32,203.0.113.126/32,203.0.113.127/32,203.0.113.128/32,203.0.113.129/32,203.0.113.130/32,203.0.113.131/32,203.0.113.132/32,203.0.113.133/32,203.0.113.134/32,203.0.113.135/32,203.0.113.136/32,203.0.113.137/32,203.0.113.138/32,203.0.113.139/32,203.0.113.140/32,203.0.113.141/32,203.0.113.142/32,203.0.113.143/32,203.0.113.144/32,203.0.113.145/32,203.0.113.146/32,203.0.113.147/32,203.0.113.148/32,203.0.113.149/32,203.0.113.150/32,203.0.113.151/32,203.0.113.152/32,203.0.113.153/32,203.0.113.154/32,203.0.113.155/32,203.0.113.156/32,203.0.113.157/32,203.0.113.158/32,203.0.113.159/32,2001:db8:dead::/48 description="deny:feed"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=block profile=domain,private,public protocol=any remoteip=198.51.100.1/32,198.51.100.2/32,198.51.100.3/32,198.51.100.4/32,198.51.100.5/32,198.51.100.6/32,198.51.100.7/32,198.51.100.8/32,198.51.100.9/32,2001:db8:bad::1/128 description="deny:many-hosts: nine single addresses of both families"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=20,21,22,25,53,80,110,143,443,465,587,993,995,8000-8100,9000-9100,10000 remoteip=203.0.113.10/32 description="allow:many-ports"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=443 remoteip=203.0.113.50/32 description="allow:vendor-until-2030"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=tcp remoteport=53 description="allow:everything-dns"
if errorlevel 1 goto :failed
netsh advfirewall firewall add rule name="outguard" dir=out action=allow profile=domain,private,public protocol=udp remoteport=53 description="allow:everything-dns"
if errorlevel 1 goto :failed
rem netsh sets both directions at once; inbound stays Windows' default, block.
netsh advfirewall set allprofiles firewallpolicy blockinbound,blockoutbound
if errorlevel 1 goto :failed
netsh advfirewall set allprofiles state on
if errorlevel 1 goto :failed
echo outguard policy 15295e780905 applied
exit /b 0
:failed
echo outguard: a netsh command failed (above); the default outbound action was not changed 1>&2
exit /b 1
