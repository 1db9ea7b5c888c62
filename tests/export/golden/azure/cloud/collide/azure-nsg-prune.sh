#!/bin/sh
# Delete the outbound og- rules of an NSG that this export no longer has (ARM's incremental
# deployments of azure-nsg-rules.json add and change rules, never delete them).
# usage: sh azure-nsg-prune.sh RESOURCE_GROUP NSG_NAME   (after deploying azure-nsg-rules.json)
set -eu
rg="$1"; nsg="$2"
keep=" og-deny-Bad-v4 og-deny-bad-v4_eb7861 og-allow-Web.API-tcp-v4 og-allow-web-api-tcp-v4 og-allow-web_api-tcp-v4 og-default-deny "
az network nsg rule list --resource-group "$rg" --nsg-name "$nsg" \
    --query "[?direction=='Outbound' && starts_with(name, 'og-')].name" --output tsv |
while IFS= read -r name; do
    case "$keep" in
        *" $name "*) ;;
        *) echo "deleting stale rule $name"
           az network nsg rule delete --resource-group "$rg" --nsg-name "$nsg" --name "$name" ;;
    esac
done
