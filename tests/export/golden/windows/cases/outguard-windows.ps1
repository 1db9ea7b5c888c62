# outguard policy 4fa3e4f47edc for Windows Defender Firewall (generated; re-run to replace).
#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'
Remove-NetFirewallRule -Name 'outguard-deny-attacker-net-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-attacker-net-any' -DisplayName 'outguard deny:attacker-net' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('198.51.100.0/24','2001:db8:bad::/48') -Description 'deny:attacker-net: known-bad networks, both families' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-no-smtp-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-no-smtp-tcp' -DisplayName 'outguard deny:no-smtp' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol TCP -RemotePort @('25','465','587') -Description 'deny:no-smtp: any destination, tcp only' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-chargen-udp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-chargen-udp' -DisplayName 'outguard deny:chargen' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol UDP -RemotePort @('19') -Description 'deny:chargen: any destination, udp only' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-nobody-no-ldap-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-nobody-no-ldap-tcp' -DisplayName 'outguard deny:nobody-no-ldap' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol TCP -RemotePort @('389','636','1389') -Description 'deny:nobody-no-ldap: JNDI callbacks from the service account (tcp and udp)' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-nobody-no-ldap-udp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-nobody-no-ldap-udp' -DisplayName 'outguard deny:nobody-no-ldap' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol UDP -RemotePort @('389','636','1389') -Description 'deny:nobody-no-ldap: JNDI callbacks from the service account (tcp and udp)' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-temp-block-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-temp-block-any' -DisplayName 'outguard deny:temp-block' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('203.0.113.66/32') -Description 'deny:temp-block: expires in 2099, so it is in force' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-bad-list-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-bad-list-any' -DisplayName 'outguard deny:bad-list' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('203.0.113.250/32','2001:db8:dead::/48') -Description 'deny:bad-list' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-trusted-in-attacker-net-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-trusted-in-attacker-net-tcp' -DisplayName 'outguard allow:trusted-in-attacker-net' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('198.51.100.7/32') -RemotePort @('443') -Description 'allow:trusted-in-attacker-net: shadowed by deny attacker-net, never decides' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-web-api-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-web-api-tcp' -DisplayName 'outguard allow:web-api' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.10/32','2001:db8:1::10/128') -RemotePort @('80','443') -Description 'allow:web-api' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-range-svc-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-range-svc-tcp' -DisplayName 'outguard allow:range-svc' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.32/27') -RemotePort @('8000-8100') -Description 'allow:range-svc' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-net-https-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-net-https-tcp' -DisplayName 'outguard allow:net-https' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.0/25','2001:db8:1::/48') -RemotePort @('443') -Description 'allow:net-https: overlaps web-api and range-svc; the earlier rule decides' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-host-any-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-host-any-any' -DisplayName 'outguard allow:host-any' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('203.0.113.40/32','2001:db8:1::40/128') -Description 'allow:host-any: every port and protocol to one host inside the /25' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-ntp-udp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-ntp-udp' -DisplayName 'outguard allow:ntp' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol UDP -RemoteAddress @('203.0.113.0/24') -RemotePort @('123') -Description 'allow:ntp' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-mirrors-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-mirrors-tcp' -DisplayName 'outguard allow:mirrors' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.200/32','203.0.113.248/29','2001:db8:2::/48') -RemotePort @('80','443') -Description 'allow:mirrors' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-temp-allow-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-temp-allow-tcp' -DisplayName 'outguard allow:temp-allow' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.99/32') -RemotePort @('8443') -Description 'allow:temp-allow' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-traceroute-udp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-traceroute-udp' -DisplayName 'outguard allow:traceroute' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol UDP -RemotePort @('33434-33534') -Description 'allow:traceroute: any destination, udp high ports' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-dns-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-dns-tcp' -DisplayName 'outguard allow:dns' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('192.0.2.1/32','2001:db8::1/128') -RemotePort @('53') -Description 'allow:dns' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-dns-udp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-dns-udp' -DisplayName 'outguard allow:dns' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol UDP -RemoteAddress @('192.0.2.1/32','2001:db8::1/128') -RemotePort @('53') -Description 'allow:dns' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-ping-icmpv4' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-ping-icmpv4' -DisplayName 'outguard allow:ping' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol ICMPv4 -RemoteAddress @('203.0.113.0/24') -Description 'allow:ping: icmp only; never matches tcp or udp' | Out-Null
$keep = @('outguard-deny-attacker-net-any','outguard-deny-no-smtp-tcp','outguard-deny-chargen-udp','outguard-deny-nobody-no-ldap-tcp','outguard-deny-nobody-no-ldap-udp','outguard-deny-temp-block-any','outguard-deny-bad-list-any','outguard-allow-trusted-in-attacker-net-tcp','outguard-allow-web-api-tcp','outguard-allow-range-svc-tcp','outguard-allow-net-https-tcp','outguard-allow-host-any-any','outguard-allow-ntp-udp','outguard-allow-mirrors-tcp','outguard-allow-temp-allow-tcp','outguard-allow-traceroute-udp','outguard-allow-dns-tcp','outguard-allow-dns-udp','outguard-allow-ping-icmpv4')
Get-NetFirewallRule -Group 'outguard' -ErrorAction SilentlyContinue | Where-Object { $keep -notcontains $_.Name } | Remove-NetFirewallRule
Set-NetFirewallProfile -Profile Domain,Private,Public -DefaultOutboundAction Block -LogBlocked True
