#!/bin/sh
# outguard policy 4fa3e4f47edc: deploy this export with ipset and iptables (run as root).
#   sh deploy.sh [legacy|nft]     default: the iptables this host uses (iptables-nft on Debian 12)
# Order: the ipsets, then per family one iptables-restore --noflush transaction that replaces
# only the OUTGUARD-* chains rules.v4 / rules.v6 declare (IPv4 first: for a moment the new
# IPv4 rules run next to the earlier IPv6 ones), then the OUTGUARD-* chains and og-*
# sets an earlier deploy left that this one no longer uses. Nothing else is changed.
# Run it again after every new export; remove.sh undoes it; README.txt says how to keep it
# across reboots.
set -eu
dir=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
case "${1:-}" in
    "") v= ;;
    legacy|nft) v="-$1" ;;
    *) echo "usage: $0 [legacy|nft]   (default: the iptables this host uses)" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }
for tool in ipset "iptables$v-save" "iptables$v-restore" "ip6tables$v-save" \
        "ip6tables$v-restore"; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "$0: $tool is missing (Debian: apt-get install iptables ipset)" >&2; exit 1; }
done
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
# Flush first, delete second: a stale chain may jump to another stale chain.
unhook() {  # $1: iptables command; the rest: chains to delete
    ipt=$1; shift
    for c in "$@"; do
        for hook in OUTPUT FORWARD; do
            while "$ipt" -w -D "$hook" -j "$c" 2>/dev/null; do :; done
        done
        "$ipt" -w -F "$c"
    done
    for c in "$@"; do "$ipt" -w -X "$c"; done
}
# A kernel booted with ipv6.disable=1 has no IPv6 tables: nothing to filter there.
ipv6() { [ -e /proc/net/if_inet6 ]; }

ipset -exist restore < "$dir/ipsets"
echo "loaded $(sed -n '/^create /p' "$dir/ipsets" | wc -l) ipsets"

load() {  # $1: iptables command, $2: rules file
    ipt=$1 file=$2
    cp "$file" "$tmp"
    for jump in OUTPUT:OUTGUARD-OUT FORWARD:OUTGUARD-FWD; do
        hook=${jump%%:*} chain=${jump#*:}
        # An earlier deploy's jump stays where it is; the restore would add a second one.
        if "$ipt" -w -C "$hook" -j "$chain" 2>/dev/null; then
            sed -i "/^-I $hook 1 -j $chain\$/d" "$tmp"
        fi
    done
    "$ipt-restore" -w --noflush < "$tmp"
    keep=" $(sed -n 's/^:\(OUTGUARD-[A-Za-z0-9-]*\) .*/\1/p' "$file" | tr '\n' ' ')"
    stale=
    for c in $("$ipt-save" -t filter | sed -n 's/^:\(OUTGUARD-[A-Za-z0-9-]*\) .*/\1/p'); do
        case "$keep" in *" $c "*) ;; *) stale="$stale $c" ;; esac
    done
    # shellcheck disable=SC2086  # chain names hold no blanks
    unhook "$ipt" $stale
    echo "loaded $file with $ipt-restore ($(echo "$keep" | wc -w) chains${stale:+, removed$stale})"
}

load "iptables$v" "$dir/rules.v4"
if ipv6; then load "ip6tables$v" "$dir/rules.v6"; else echo "IPv6 is off in this kernel: rules.v6 skipped"; fi

keep=" $(sed -n 's/^create \([^ ]*\) .*/\1/p' "$dir/ipsets" | tr '\n' ' ')"
for s in $(ipset list -n | sed -n '/^og-/p'); do
    case "$keep" in *" $s "*) continue ;; esac
    if ipset destroy "$s" 2>/dev/null; then
        echo "removed ipset $s (an earlier deploy's)"
    else
        echo "$0: warning: ipset $s is still in use by a rule outside outguard's chains; left" >&2
    fi
done
echo "outguard policy 4fa3e4f47edc deployed"
