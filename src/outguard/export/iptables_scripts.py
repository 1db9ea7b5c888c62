"""The shell half of the iptables export: `deploy.sh`, `remove.sh` and `README.txt`.

Place in the data flow: `export.iptables` renders `ipsets`, `rules.v4` and `rules.v6` (pure)
and adds these three texts. outguard itself never loads iptables rules: the export is deployed
by the user on the iptables host, with the tools that host has (`ipset restore`,
`iptables-restore`), in the order that keeps every rule's set in place:

1. `ipset -exist restore` of the sets (named after their content: a changed list is a new set,
   so a set a live rule uses is never touched);
2. per family, one `iptables-restore --noflush` transaction that replaces only the
   `OUTGUARD-*` chains the file declares, and adds the jump from OUTPUT (FORWARD) unless an
   earlier deploy left it;
3. the `OUTGUARD-*` chains and `og-*` sets of an earlier deploy that this one no longer uses.

`remove.sh` takes away exactly that: the jumps to `OUTGUARD-*` chains, those chains, and the
`og-*` sets. The scripts are POSIX sh (dash) and read the chain and set names from the files
next to them, so what they do is what the files say.
"""

from __future__ import annotations

CHAIN_OUT, CHAIN_FWD = "OUTGUARD-OUT", "OUTGUARD-FWD"
CHAIN_PREFIX, SET_PREFIX = "OUTGUARD-", "og-"  # every chain and set the export makes
JUMPS = {CHAIN_OUT: "OUTPUT", CHAIN_FWD: "FORWARD"}  # outguard's chain → the hook that jumps

_VARIANT = """\
case "${1:-}" in
    "") v= ;;
    legacy|nft) v="-$1" ;;
    *) echo "usage: $0 [legacy|nft]   (default: the iptables this host uses)" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }
"""

# The chains of one family, as iptables-save lists them: ":OUTGUARD-OUT - [0:0]".
_CHAINS_OF = f"sed -n 's/^:\\({CHAIN_PREFIX}[A-Za-z0-9-]*\\) .*/\\1/p'"
_SETS_OF = f"sed -n '/^{SET_PREFIX}/p'"
_HOOKS = " ".join(JUMPS.values())

_UNHOOK = f"""\
# Flush first, delete second: a stale chain may jump to another stale chain.
unhook() {{  # $1: iptables command; the rest: chains to delete
    ipt=$1; shift
    for c in "$@"; do
        for hook in {_HOOKS}; do
            while "$ipt" -w -D "$hook" -j "$c" 2>/dev/null; do :; done
        done
        "$ipt" -w -F "$c"
    done
    for c in "$@"; do "$ipt" -w -X "$c"; done
}}
"""

_IPV6 = """\
# A kernel booted with ipv6.disable=1 has no IPv6 tables: nothing to filter there.
ipv6() { [ -e /proc/net/if_inet6 ]; }
"""


def deploy_sh(digest: str) -> str:
    return f"""\
#!/bin/sh
# outguard policy {digest}: deploy this export with ipset and iptables (run as root).
#   sh deploy.sh [legacy|nft]     default: the iptables this host uses (iptables-nft on Debian 12)
# Order: the ipsets, then per family one iptables-restore --noflush transaction that replaces
# only the {CHAIN_PREFIX}* chains rules.v4 / rules.v6 declare (IPv4 first: for a moment the new
# IPv4 rules run next to the earlier IPv6 ones), then the {CHAIN_PREFIX}* chains and {SET_PREFIX}*
# sets an earlier deploy left that this one no longer uses. Nothing else is changed.
# Run it again after every new export; remove.sh undoes it; README.txt says how to keep it
# across reboots.
set -eu
dir=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
{_VARIANT}for tool in ipset "iptables$v-save" "iptables$v-restore" "ip6tables$v-save" \\
        "ip6tables$v-restore"; do
    command -v "$tool" >/dev/null 2>&1 || {{
        echo "$0: $tool is missing (Debian: apt-get install iptables ipset)" >&2; exit 1; }}
done
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{_UNHOOK}{_IPV6}
ipset -exist restore < "$dir/ipsets"
echo "loaded $(sed -n '/^create /p' "$dir/ipsets" | wc -l) ipsets"

load() {{  # $1: iptables command, $2: rules file
    ipt=$1 file=$2
    cp "$file" "$tmp"
    for jump in {" ".join(f"{h}:{c}" for c, h in JUMPS.items())}; do
        hook=${{jump%%:*}} chain=${{jump#*:}}
        # An earlier deploy's jump stays where it is; the restore would add a second one.
        if "$ipt" -w -C "$hook" -j "$chain" 2>/dev/null; then
            sed -i "/^-I $hook 1 -j $chain\\$/d" "$tmp"
        fi
    done
    "$ipt-restore" -w --noflush < "$tmp"
    keep=" $({_CHAINS_OF} "$file" | tr '\\n' ' ')"
    stale=
    for c in $("$ipt-save" -t filter | {_CHAINS_OF}); do
        case "$keep" in *" $c "*) ;; *) stale="$stale $c" ;; esac
    done
    # shellcheck disable=SC2086  # chain names hold no blanks
    unhook "$ipt" $stale
    echo "loaded $file with $ipt-restore ($(echo "$keep" | wc -w) chains${{stale:+, removed$stale}})"
}}

load "iptables$v" "$dir/rules.v4"
if ipv6; then load "ip6tables$v" "$dir/rules.v6"; else echo "IPv6 is off in this kernel: rules.v6 skipped"; fi

keep=" $(sed -n 's/^create \\([^ ]*\\) .*/\\1/p' "$dir/ipsets" | tr '\\n' ' ')"
for s in $(ipset list -n | {_SETS_OF}); do
    case "$keep" in *" $s "*) continue ;; esac
    if ipset destroy "$s" 2>/dev/null; then
        echo "removed ipset $s (an earlier deploy's)"
    else
        echo "$0: warning: ipset $s is still in use by a rule outside outguard's chains; left" >&2
    fi
done
echo "outguard policy {digest} deployed"
"""


def remove_sh(digest: str) -> str:
    return f"""\
#!/bin/sh
# Remove what deploy.sh added (from this export of policy {digest} or any earlier one): the
# jumps from {_HOOKS.replace(" ", " and ")} to {CHAIN_PREFIX}* chains, those chains (IPv4 and IPv6),
# then the {SET_PREFIX}* ipsets. Nothing else is touched. Egress is open again afterwards.
#   sh remove.sh [legacy|nft]     the same variant deploy.sh was run with
set -eu
{_VARIANT}{_UNHOOK}{_IPV6}
for ipt in "iptables$v" "ip6tables$v"; do
    command -v "$ipt-save" >/dev/null 2>&1 || continue
    [ "$ipt" = "iptables$v" ] || ipv6 || continue
    chains=$("$ipt-save" -t filter | {_CHAINS_OF})
    # shellcheck disable=SC2086  # chain names hold no blanks
    unhook "$ipt" $chains
    for c in $chains; do echo "removed $ipt chain $c"; done
done
if command -v ipset >/dev/null 2>&1; then
    for s in $(ipset list -n | {_SETS_OF}); do
        ipset destroy "$s"
        echo "removed ipset $s"
    done
fi
"""


def readme(digest: str, report: str) -> str:
    return f"""\
outguard policy {digest}: the iptables export
{"=" * (len(digest) + 37)}

outguard applies and rolls back only its own nftables table. For a host that filters with
iptables, this directory holds the same policy as files for that host's own tools:

  ipsets      the address sets, for `ipset restore` (ipset-persistent's /etc/iptables/ipsets)
  rules.v4    IPv4 rules for `iptables-restore --noflush` (netfilter-persistent's rules.v4)
  rules.v6    IPv6 rules for `ip6tables-restore --noflush` (netfilter-persistent's rules.v6)
  deploy.sh   loads them in order: the ipsets, then the rules; replaces an earlier deploy
  remove.sh   removes what deploy.sh added ({CHAIN_PREFIX}* chains, {SET_PREFIX}* ipsets), nothing else

Deploy (as root, on the iptables host; Debian: apt-get install iptables ipset):

  sh deploy.sh              # or: sh deploy.sh legacy | sh deploy.sh nft

Only the {CHAIN_PREFIX}* chains and {SET_PREFIX}* sets change, and one jump at the top of OUTPUT
(and FORWARD with options.forward): other rules, chains and sets stay. Run deploy.sh again
after each new export. There is no confirm window: test from a session that the policy allows,
and keep remove.sh at hand.

Keep it across reboots with netfilter-persistent and its ipset plugin:

  apt-get install iptables-persistent ipset-persistent
  sh deploy.sh && netfilter-persistent save

netfilter-persistent saves the whole running ruleset (the sets to /etc/iptables/ipsets, the
rules to /etc/iptables/rules.v4 and rules.v6) and loads the sets before the rules at boot.
Save again after every deploy. On a host with no other iptables rules the files can also be
copied there as they are:

  install -m 0640 ipsets /etc/iptables/ipsets
  install -m 0640 rules.v4 /etc/iptables/rules.v4
  install -m 0640 rules.v6 /etc/iptables/rules.v6

(netfilter-persistent loads rules.v4 without --noflush: the file then replaces the whole
filter table at boot, dropping any rule it does not hold.)

Remove:

  sh remove.sh              # the same variant as deploy.sh; then `netfilter-persistent save`

Blocked packets go to NFLOG with the prefix og:deny:<rule> or og:default, followed by
" reject" (default_action: reject) or " audit" (mode: audit: logged, not blocked), at most
log_rate per destination address and port (hashlimit table og-log); the packet counter of the
lines commented og:<rule> is the rule's counter (`iptables -L -v -n`).

What iptables cannot hold of the policy (the fidelity report):

{report}
"""
