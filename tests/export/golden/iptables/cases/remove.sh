#!/bin/sh
# Remove what deploy.sh added (from this export of policy 4fa3e4f47edc or any earlier one): the
# jumps from OUTPUT and FORWARD to OUTGUARD-* chains, those chains (IPv4 and IPv6),
# then the og-* ipsets. Nothing else is touched. Egress is open again afterwards.
#   sh remove.sh [legacy|nft]     the same variant deploy.sh was run with
set -eu
case "${1:-}" in
    "") v= ;;
    legacy|nft) v="-$1" ;;
    *) echo "usage: $0 [legacy|nft]   (default: the iptables this host uses)" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }
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

for ipt in "iptables$v" "ip6tables$v"; do
    command -v "$ipt-save" >/dev/null 2>&1 || continue
    [ "$ipt" = "iptables$v" ] || ipv6 || continue
    chains=$("$ipt-save" -t filter | sed -n 's/^:\(OUTGUARD-[A-Za-z0-9-]*\) .*/\1/p')
    # shellcheck disable=SC2086  # chain names hold no blanks
    unhook "$ipt" $chains
    for c in $chains; do echo "removed $ipt chain $c"; done
done
if command -v ipset >/dev/null 2>&1; then
    for s in $(ipset list -n | sed -n '/^og-/p'); do
        ipset destroy "$s"
        echo "removed ipset $s"
    done
fi
