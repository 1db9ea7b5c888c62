# outguard policy a5ee71c7c6ce for Windows Defender Firewall (generated; re-run to replace).
#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'
Remove-NetFirewallRule -Name 'outguard-deny-attacker-net-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-attacker-net-any' -DisplayName 'outguard deny:attacker-net' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('198.51.100.0/24','2001:db8:bad::/48') -Description 'deny:attacker-net' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-no-smtp-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-no-smtp-tcp' -DisplayName 'outguard deny:no-smtp' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol TCP -RemotePort @('25','465','587') -Description 'deny:no-smtp' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-ldap-as-nobody-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-ldap-as-nobody-tcp' -DisplayName 'outguard deny:ldap-as-nobody' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol TCP -RemotePort @('389','636') -Description 'deny:ldap-as-nobody' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-ldap-as-nobody-udp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-ldap-as-nobody-udp' -DisplayName 'outguard deny:ldap-as-nobody' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol UDP -RemotePort @('389','636') -Description 'deny:ldap-as-nobody' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-web-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-web-tcp' -DisplayName 'outguard allow:web' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.10/32','203.0.113.64/26','2001:db8:1::10/128') -RemotePort @('80','443','8000-8100') -Description 'allow:web' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-dns-any-proto-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-dns-any-proto-tcp' -DisplayName 'outguard allow:dns-any-proto' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('192.0.2.53/32','2001:db8::53/128') -RemotePort @('53') -Description 'allow:dns-any-proto' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-dns-any-proto-udp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-dns-any-proto-udp' -DisplayName 'outguard allow:dns-any-proto' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol UDP -RemoteAddress @('192.0.2.53/32','2001:db8::53/128') -RemotePort @('53') -Description 'allow:dns-any-proto' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-host-any-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-host-any-any' -DisplayName 'outguard allow:host-any' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('203.0.113.40/32') -Description 'allow:host-any' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-ping-icmpv4' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-ping-icmpv4' -DisplayName 'outguard allow:ping' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol ICMPv4 -RemoteAddress @('203.0.113.0/24') -Description 'allow:ping' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-ping-icmpv6' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-ping-icmpv6' -DisplayName 'outguard allow:ping' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol ICMPv6 -RemoteAddress @('2001:db8:1::/48') -Description 'allow:ping' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-temporary-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-temporary-tcp' -DisplayName 'outguard allow:temporary' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.99/32') -RemotePort @('8443') -Description 'allow:temporary' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-traceroute-udp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-traceroute-udp' -DisplayName 'outguard allow:traceroute' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol UDP -RemotePort @('33434-33534') -Description 'allow:traceroute' | Out-Null
$keep = @('outguard-deny-attacker-net-any','outguard-deny-no-smtp-tcp','outguard-deny-ldap-as-nobody-tcp','outguard-deny-ldap-as-nobody-udp','outguard-allow-web-tcp','outguard-allow-dns-any-proto-tcp','outguard-allow-dns-any-proto-udp','outguard-allow-host-any-any','outguard-allow-ping-icmpv4','outguard-allow-ping-icmpv6','outguard-allow-temporary-tcp','outguard-allow-traceroute-udp')
Get-NetFirewallRule -Group 'outguard' -ErrorAction SilentlyContinue | Where-Object { $keep -notcontains $_.Name } | Remove-NetFirewallRule
Set-NetFirewallProfile -Profile Domain,Private,Public -DefaultOutboundAction Block -LogBlocked True
