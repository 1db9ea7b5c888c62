# outguard policy 54a9437f9334 for Windows Defender Firewall (generated; re-run to replace).
#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'
if (-not (Get-NetFirewallDynamicKeywordAddress -Id '{d8685660-873d-50c6-ad28-66c948ad7ad4}' -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress -Id '{d8685660-873d-50c6-ad28-66c948ad7ad4}' -Keyword 'c2.example.test' -AutoResolve $true | Out-Null }
if (-not (Get-NetFirewallDynamicKeywordAddress -Id '{0f3a4020-a645-59b5-927e-72a473c6ae1a}' -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress -Id '{0f3a4020-a645-59b5-927e-72a473c6ae1a}' -Keyword 'evil.example.test' -AutoResolve $true | Out-Null }
if (-not (Get-NetFirewallDynamicKeywordAddress -Id '{8bb7ba33-1517-5de5-b117-e44700cfa275}' -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress -Id '{8bb7ba33-1517-5de5-b117-e44700cfa275}' -Keyword 'api.example.test' -AutoResolve $true | Out-Null }
if (-not (Get-NetFirewallDynamicKeywordAddress -Id '{1152c749-d535-5f66-939b-1d298715cbae}' -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress -Id '{1152c749-d535-5f66-939b-1d298715cbae}' -Keyword 'partner.example.test' -AutoResolve $true | Out-Null }
if (-not (Get-NetFirewallDynamicKeywordAddress -Id '{4f4feef4-bdd6-5cb6-bb5f-802cf221592f}' -ErrorAction SilentlyContinue)) { New-NetFirewallDynamicKeywordAddress -Id '{4f4feef4-bdd6-5cb6-bb5f-802cf221592f}' -Keyword 'gone.example.test' -AutoResolve $true | Out-Null }
Remove-NetFirewallRule -Name 'outguard-deny-c2-by-name-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-c2-by-name-any' -DisplayName 'outguard deny:c2-by-name' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('198.51.100.99/32') -Description 'deny:c2-by-name' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-c2-by-name-any-fqdn' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-c2-by-name-any-fqdn' -DisplayName 'outguard deny:c2-by-name (names)' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteDynamicKeywordAddresses @('{d8685660-873d-50c6-ad28-66c948ad7ad4}') -Description 'deny:c2-by-name' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-bad-list-any' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-bad-list-any' -DisplayName 'outguard deny:bad-list' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteAddress @('198.51.100.66/32','2001:db8:bad::66/128') -Description 'deny:bad-list' | Out-Null
Remove-NetFirewallRule -Name 'outguard-deny-bad-list-any-fqdn' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-deny-bad-list-any-fqdn' -DisplayName 'outguard deny:bad-list (names)' -Group 'outguard' -Direction Outbound -Action Block -Profile Domain,Private,Public -Protocol Any -RemoteDynamicKeywordAddresses @('{0f3a4020-a645-59b5-927e-72a473c6ae1a}') -Description 'deny:bad-list' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-api-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-api-tcp' -DisplayName 'outguard allow:api' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.30/32','2001:db8:1::30/128') -RemotePort @('443') -Description 'allow:api' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-api-tcp-fqdn' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-api-tcp-fqdn' -DisplayName 'outguard allow:api (names)' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteDynamicKeywordAddresses @('{8bb7ba33-1517-5de5-b117-e44700cfa275}') -RemotePort @('443') -Description 'allow:api' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-partners-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-partners-tcp' -DisplayName 'outguard allow:partners' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('192.0.2.41/32','192.0.2.40/32') -RemotePort @('443') -Description 'allow:partners' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-partners-tcp-fqdn' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-partners-tcp-fqdn' -DisplayName 'outguard allow:partners (names)' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteDynamicKeywordAddresses @('{1152c749-d535-5f66-939b-1d298715cbae}') -RemotePort @('443') -Description 'allow:partners' | Out-Null
Remove-NetFirewallRule -Name 'outguard-allow-not-yet-tcp-fqdn' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-not-yet-tcp-fqdn' -DisplayName 'outguard allow:not-yet (names)' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteDynamicKeywordAddresses @('{4f4feef4-bdd6-5cb6-bb5f-802cf221592f}') -RemotePort @('80') -Description 'allow:not-yet: a name with no address at export time' | Out-Null
$keep = @('outguard-deny-c2-by-name-any','outguard-deny-c2-by-name-any-fqdn','outguard-deny-bad-list-any','outguard-deny-bad-list-any-fqdn','outguard-allow-api-tcp','outguard-allow-api-tcp-fqdn','outguard-allow-partners-tcp','outguard-allow-partners-tcp-fqdn','outguard-allow-not-yet-tcp-fqdn')
Get-NetFirewallRule -Group 'outguard' -ErrorAction SilentlyContinue | Where-Object { $keep -notcontains $_.Name } | Remove-NetFirewallRule
Set-NetFirewallProfile -Profile Domain,Private,Public -DefaultOutboundAction Block -LogBlocked True
