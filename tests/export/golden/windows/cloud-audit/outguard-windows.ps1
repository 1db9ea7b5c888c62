# outguard policy 4047f9a7e3e5 for Windows Defender Firewall (generated; re-run to replace).
#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'
Remove-NetFirewallRule -Name 'outguard-allow-web-tcp' -ErrorAction SilentlyContinue
New-NetFirewallRule -Name 'outguard-allow-web-tcp' -DisplayName 'outguard allow:web' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.10/32') -RemotePort @('443') -Description 'allow:web' | Out-Null
$keep = @('outguard-allow-web-tcp')
Get-NetFirewallRule -Group 'outguard' -ErrorAction SilentlyContinue | Where-Object { $keep -notcontains $_.Name } | Remove-NetFirewallRule
Set-NetFirewallProfile -Profile Domain,Private,Public -DefaultOutboundAction Allow -LogAllowed True -LogBlocked True
