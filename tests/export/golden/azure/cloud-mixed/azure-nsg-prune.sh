#!/bin/sh
# Delete the outbound og- rules of an NSG that this export no longer has (ARM's incremental
# deployments of azure-nsg-rules.json add and change rules, never delete them).
# usage: sh azure-nsg-prune.sh RESOURCE_GROUP NSG_NAME   (after deploying azure-nsg-rules.json)
set -eu
rg="$1"; nsg="$2"
keep=" og-deny-attacker-net-v4 og-deny-attacker-net-v6 og-deny-no-smtp-tcp-v4 og-deny-no-smtp-tcp-v6 og-deny-ldap-as-nobody-tcp-v4 og-deny-ldap-as-nobody-tcp-v6 og-deny-ldap-as-nobody-udp-v4 og-deny-ldap-as-nobody-udp-v6 og-allow-web-tcp-v4 og-allow-web-tcp-v6 og-allow-dns-any-proto-tcp-v4 og-allow-dns-any-proto-tcp-v6 og-allow-dns-any-proto-udp-v4 og-allow-dns-any-proto-udp-v6 og-allow-host-any-v4 og-allow-ping-icmp-v4 og-allow-ping-icmp-v6 og-allow-temporary-tcp-v4 og-allow-traceroute-udp-v4 og-allow-traceroute-udp-v6 og-default-deny "
az network nsg rule list --resource-group "$rg" --nsg-name "$nsg" \
    --query "[?direction=='Outbound' && starts_with(name, 'og-')].name" --output tsv |
while IFS= read -r name; do
    case "$keep" in
        *" $name "*) ;;
        *) echo "deleting stale rule $name"
           az network nsg rule delete --resource-group "$rg" --nsg-name "$nsg" --name "$name" ;;
    esac
done
