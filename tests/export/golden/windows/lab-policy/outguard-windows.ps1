# outguard policy 84a2117e1a6c for Windows Defender Firewall (generated; re-run to replace).
#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'
if (-not (Get-NetFirewallDynamicKeywordAddress -Id '{6ef58370-f0e9-50c7-8aa9-adc280d861ad}' -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress -Id '{6ef58370-f0e9-50c7-8aa9-adc280d861ad}' -Keyword 'mirror.example.test' -AutoResolve $true | Out-Null }
Remove-NetFirewallRule -Name 'outguard-deny-attacker-net-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-attacker-net-any' -DisplayName 'outguard deny:attacker-net' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('198.51.100.0/24','2001:db8:bad::/48') -Description 'deny:attacker-net: known-bad network' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-web-api-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-web-api-tcp' -DisplayName 'outguard allow:web-api' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.10/32','2001:db8::10/128') -RemotePort @('80','443') -Description 'allow:web-api: the application''s upstream API' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-package-mirror-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-package-mirror-tcp' -DisplayName 'outguard allow:package-mirror' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.20/32','2001:db8:1::20/128') -RemotePort @('80') -Description 'allow:package-mirror: host name, resolved at apply time' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-package-mirror-tcp-fqdn' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-package-mirror-tcp-fqdn' -DisplayName 'outguard allow:package-mirror (names)' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteDynamicKeywordAddresses @('{6ef58370-f0e9-50c7-8aa9-adc280d861ad}') -RemotePort @('80') -Description 'allow:package-mirror: host name, resolved at apply time' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-lab-dns-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-lab-dns-tcp' -DisplayName 'outguard allow:lab-dns' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('192.0.2.53/32') -RemotePort @('53') -Description 'allow:lab-dns' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-lab-dns-udp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-lab-dns-udp' -DisplayName 'outguard allow:lab-dns' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol UDP -RemoteAddress @('192.0.2.53/32') -RemotePort @('53') -Description 'allow:lab-dns' | Out-Null
$keep = @('outguard-deny-attacker-net-any','outguard-allow-web-api-tcp','outguard-allow-package-mirror-tcp','outguard-allow-package-mirror-tcp-fqdn','outguard-allow-lab-dns-tcp','outguard-allow-lab-dns-udp')
Get-NetFirewallRule -Group 'outguard' -ErrorAction SilentlyContinue | Where-Object { $keep -notcontains $_.Name } | Remove-NetFirewallRule
Set-NetFirewallProfile -Profile Domain,Private,Public -DefaultOutboundAction Block -LogBlocked True
