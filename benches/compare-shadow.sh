#!/usr/bin/env bash
# Measures saslauthd-rs -a shadow (yescrypt and sha512-crypt; -n 1 against -n 2; with -c,
# cache hits against the sasldb path) and Debian's Cyrus saslauthd -a shadow under
# nss_wrapper, with the same load generator in the same run.
#
#   benches/compare-shadow.sh [CLIENTS] [SECONDS]
#
# Needs Debian's sasl2-bin, whois (mkpasswd) and libnss-wrapper. The shadow entries live in a
# temporary file (nss_wrapper stands in for /etc/shadow for Cyrus; ours reads it with
# --shadow-file): no system account is touched. Loopback Unix sockets only.
clients=${1:-16}
secs=${2:-10}
. "$(dirname "$0")/common.sh"
bench_setup

y=$(mkpasswd -m yescrypt secret)
s=$(mkpasswd -m sha512crypt secret)
printf 'ybench:%s:19000:0:99999:7:::\nsbench:%s:19000:0:99999:7:::\n' "$y" "$s" > "$tmp/shadow"
printf 'ybench:x:2001:2001::/nonexistent:/bin/false\nsbench:x:2002:2002::/nonexistent:/bin/false\n' > "$tmp/passwd"
printf 'ybench:x:2001:\nsbench:x:2002:\n' > "$tmp/group"
echo secret | "$bin/saslpasswd2-rs" -p -c -u example.org -f "$tmp/sasldb2" alice

start_mux cyrus env LD_PRELOAD=libnss_wrapper.so NSS_WRAPPER_PASSWD="$tmp/passwd" \
    NSS_WRAPPER_GROUP="$tmp/group" NSS_WRAPPER_SHADOW="$tmp/shadow" \
    /usr/sbin/saslauthd -a shadow -d -n 5
ours=("$bin/saslauthd-rs" -a shadow -f --shadow-file "$tmp/shadow" --failure-delay 0)
start_mux n1 "${ours[@]}" -n 1
start_mux n2 "${ours[@]}" -n 2
start_mux n5 "${ours[@]}" -n 5
start_mux cached "${ours[@]}" -n 2 -c
start_mux sasldb "$bin/saslauthd-rs" -a sasldb -f --sasldb "$tmp/sasldb2" --failure-delay 0

run() { "$bin/saslauthd-bench" --clients "$clients" --duration "$secs" --password secret "$@"; }
echo "# $(nproc) cores, $clients clients, $secs s each; $(date -u +%F)"
for user in ybench sbench; do
    scheme=$([ $user = ybench ] && echo yescrypt || echo sha512-crypt)
    run --socket "$tmp/cyrus/mux" --user $user --label "cyrus -a shadow -n 5, $scheme"
    run --socket "$tmp/n1/mux" --user $user --label "saslauthd-rs -a shadow -n 1, $scheme"
    run --socket "$tmp/n2/mux" --user $user --label "saslauthd-rs -a shadow -n 2, $scheme"
    run --socket "$tmp/n5/mux" --user $user --label "saslauthd-rs -a shadow -n 5, $scheme"
    run --socket "$tmp/cached/mux" --user $user --label "saslauthd-rs -a shadow -n 2 -c (hits), $scheme"
done
run --socket "$tmp/sasldb/mux" --user alice --realm example.org --label "saslauthd-rs -a sasldb (reference)"
