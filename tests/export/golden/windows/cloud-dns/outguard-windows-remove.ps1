# Remove what outguard-windows.ps1 (policy 54a9437f9334 or any other) added: the rules of group 'outguard', its dynamic keywords' rules, and re-enable the allow rules it disabled. Outbound is allowed by default again afterwards.
#Requires -RunAsAdministrator
$ErrorActionPreference = 'Stop'
Get-NetFirewallRule -Group 'outguard' -ErrorAction SilentlyContinue | Remove-NetFirewallRule
$file = Join-Path (Join-Path $env:ProgramData 'outguard') 'disabled-outbound-rules.txt'
if (Test-Path $file) { Get-Content $file | Sort-Object -Unique | ForEach-Object { Enable-NetFirewallRule -Name $_ -ErrorAction SilentlyContinue }; Remove-Item $file }
Set-NetFirewallProfile -Profile Domain,Private,Public -DefaultOutboundAction Allow
