# outguard policy 4047f9a7e3e5 for Windows Defender Firewall (generated; run it again to replace the rules of an earlier run).
#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'
$existing = @(Get-NetFirewallRule -Group 'outguard' -ErrorAction SilentlyContinue | ForEach-Object { $_.Name })
if ($existing -notcontains 'outguard-allow-web-tcp-77022d9f37') { New-NetFirewallRule -Name 'outguard-allow-web-tcp-77022d9f37' -DisplayName 'outguard allow:web' -Group 'outguard' -Direction Outbound -Action Allow -Profile Domain,Private,Public -Protocol TCP -RemoteAddress @('203.0.113.10/32') -RemotePort @('443') -Description 'allow:web' | Out-Null }
$keep = @('outguard-allow-web-tcp-77022d9f37')
Get-NetFirewallRule -Group 'outguard' -ErrorAction SilentlyContinue | Where-Object { $keep -notcontains $_.Name } | Remove-NetFirewallRule
$others = @(Get-NetFirewallRule -Direction Outbound -Action Allow -Enabled True -ErrorAction SilentlyContinue | Where-Object { $_.Group -ne 'outguard' })
if ($others.Count) { Write-Warning ('outguard: ' + $others.Count + ' enabled outbound allow rules of Windows and other programs stay in force and allow what they match: ' + (($others | ForEach-Object { $_.DisplayName }) -join '; ')) }
Set-NetFirewallProfile -Profile Domain,Private,Public -Enabled True -DefaultOutboundAction Allow -LogAllowed True -LogBlocked True
