#!/bin/sh
# Delete the outbound og- rules of an NSG that this export no longer has (ARM's incremental
# deployments of azure-nsg-rules.json add and change rules, never delete them).
# usage: sh azure-nsg-prune.sh RESOURCE_GROUP NSG_NAME   (after deploying azure-nsg-rules.json)
set -eu
rg="$1"; nsg="$2"
keep=" og-deny-attacker-net-v4 og-deny-attacker-net-v6 og-deny-no-smtp-tcp-v4 og-deny-no-smtp-tcp-v6 og-deny-chargen-udp-v4 og-deny-chargen-udp-v6 og-deny-nobody-no-ldap-tcp-v4 og-deny-nobody-no-ldap-tcp-v6 og-deny-nobody-no-ldap-udp-v4 og-deny-nobody-no-ldap-udp-v6 og-deny-temp-block-v4 og-deny-bad-list-v4 og-deny-bad-list-v6 og-allow-trusted-in-attacker-net-tcp-v4 og-allow-web-api-tcp-v4 og-allow-web-api-tcp-v6 og-allow-range-svc-tcp-v4 og-allow-net-https-tcp-v4 og-allow-net-https-tcp-v6 og-allow-host-any-v4 og-allow-host-any-v6 og-allow-ntp-udp-v4 og-allow-mirrors-tcp-v4 og-allow-mirrors-tcp-v6 og-allow-temp-allow-tcp-v4 og-allow-traceroute-udp-v4 og-allow-traceroute-udp-v6 og-allow-dns-tcp-v4 og-allow-dns-tcp-v6 og-allow-dns-udp-v4 og-allow-dns-udp-v6 og-allow-ping-icmp-v4 og-default-deny "
az network nsg rule list --resource-group "$rg" --nsg-name "$nsg" \
    --query "[?direction=='Outbound' && starts_with(name, 'og-')].name" --output tsv |
while IFS= read -r name; do
    case "$keep" in
        *" $name "*) ;;
        *) echo "deleting stale rule $name"
           az network nsg rule delete --resource-group "$rg" --nsg-name "$nsg" --name "$name" ;;
    esac
done
