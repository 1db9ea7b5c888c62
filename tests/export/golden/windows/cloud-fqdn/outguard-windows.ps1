# outguard policy 208ec2a3b70d for Windows Defender Firewall (generated; re-run to replace).
#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'
if (-not (Get-NetFirewallDynamicKeywordAddress -Id '{0f3a4020-a645-59b5-927e-72a473c6ae1a}' -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress -Id '{0f3a4020-a645-59b5-927e-72a473c6ae1a}' -Keyword 'evil.example.test' -AutoResolve $true | Out-Null }
if (-not (Get-NetFirewallDynamicKeywordAddress -Id '{6ef58370-f0e9-50c7-8aa9-adc280d861ad}' -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress -Id '{6ef58370-f0e9-50c7-8aa9-adc280d861ad}' -Keyword 'mirror.example.test' -AutoResolve $true | Out-Null }
if (-not (Get-NetFirewallDynamicKeywordAddress -Id '{8bb7ba33-1517-5de5-b117-e44700cfa275}' -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress -Id '{8bb7ba33-1517-5de5-b117-e44700cfa275}' -Keyword 'api.example.test' -AutoResolve $true | Out-Null }
Remove-NetFirewallRule -Name 'outguard-deny-evil-name-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-evil-name-any' -DisplayName 'outguard deny:evil-name' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('198.51.100.66/32','2001:db8:bad::66/128') -Description 'deny:evil-name: a deny by name (its export-time addresses plus the target''s FQDN form)' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-evil-name-any-fqdn' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-evil-name-any-fqdn' -DisplayName 'outguard deny:evil-name (names)' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteDynamicKeywordAddresses @('{0f3a4020-a645-59b5-927e-72a473c6ae1a}') -Description 'deny:evil-name: a deny by name (its export-time addresses plus the target''s FQDN form)' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-mirror-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-mirror-tcp' -DisplayName 'outguard allow:mirror' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.20/32','2001:db8:1::20/128') -RemotePort @('80','443') -Description 'allow:mirror' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-mirror-tcp-fqdn' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-mirror-tcp-fqdn' -DisplayName 'outguard allow:mirror (names)' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteDynamicKeywordAddresses @('{6ef58370-f0e9-50c7-8aa9-adc280d861ad}') -RemotePort @('80','443') -Description 'allow:mirror' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-api-any-port-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-api-any-port-any' -DisplayName 'outguard allow:api-any-port' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('203.0.113.30/32','2001:db8:1::30/128') -Description 'allow:api-any-port' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-api-any-port-any-fqdn' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-api-any-port-any-fqdn' -DisplayName 'outguard allow:api-any-port (names)' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol Any -RemoteDynamicKeywordAddresses @('{8bb7ba33-1517-5de5-b117-e44700cfa275}') -Description 'allow:api-any-port' | Out-Null
$keep = @('outguard-deny-evil-name-any','outguard-deny-evil-name-any-fqdn','outguard-allow-mirror-tcp','outguard-allow-mirror-tcp-fqdn','outguard-allow-api-any-port-any','outguard-allow-api-any-port-any-fqdn')
Get-NetFirewallRule -Group 'outguard' -ErrorAction SilentlyContinue | Where-Object { $keep -notcontains $_.Name } | Remove-NetFirewallRule
Set-NetFirewallProfile -Profile Domain,Private,Public -DefaultOutboundAction Block -LogBlocked True
