#!/bin/sh
# Delete the outbound og- rules of an NSG that this export no longer has (ARM's incremental
# deployments of azure-nsg-rules.json add and change rules, never delete them).
# usage: sh azure-nsg-prune.sh RESOURCE_GROUP NSG_NAME   (after deploying azure-nsg-rules.json)
set -eu
rg="$1"; nsg="$2"
keep=" og-deny-feed-v4 og-deny-feed-v6 og-deny-many-hosts-v4 og-deny-many-hosts-v6 og-allow-many-ports-tcp-v4 og-allow-vendor-until-2030-tcp-v4 og-allow-everything-dns-tcp-v4 og-allow-everything-dns-tcp-v6 og-allow-everything-dns-udp-v4 og-allow-everything-dns-udp-v6 og-default-deny "
az network nsg rule list --resource-group "$rg" --nsg-name "$nsg" \
    --query "[?direction=='Outbound' && starts_with(name, 'og-')].name" --output tsv |
while IFS= read -r name; do
    case "$keep" in
        *" $name "*) ;;
        *) echo "deleting stale rule $name"
           az network nsg rule delete --resource-group "$rg" --nsg-name "$nsg" --name "$name" ;;
    esac
done
