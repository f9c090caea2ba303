#!/usr/bin/env bash
# Measures saslauthd-rs -a sasldb against Debian's Cyrus saslauthd -a sasldb -n 5 with the
# same load generator, in the same run, on the same users.
#
#   benches/compare-cyrus.sh [CLIENTS] [SECONDS]
#
# Also measured in the same run: a do-nothing server of the protocol (benches/null_server.rs,
# which answers OK without checking: the limit this machine allows), and, when BASELINE names
# another saslauthd-rs binary (an earlier build), that one, for a before-and-after figure.
#
# Needs root (Cyrus's saslauthd reads only /etc/sasldb2, so a Berkeley DB copy is bind-mounted
# over it in a private mount namespace; the real /etc/sasldb2 is never touched), and Debian's
# sasl2-bin. Loopback Unix sockets only; every run stops by itself.
clients=${1:-16}
secs=${2:-10}
. "$(dirname "$0")/common.sh"
bench_setup

# The same user in both formats, each written by its own tool.
echo secret | /usr/sbin/saslpasswd2 -p -c -u example.org -f "$tmp/sasldb2.bdb" alice
echo secret | "$bin/saslpasswd2-rs" --format lmdb -p -c -u example.org -f "$tmp/sasldb2.lmdb" alice
mkdir -p "$tmp/cyrus" "$tmp/ours"

start_server unshare -m sh -c "mount --bind '$tmp/sasldb2.bdb' /etc/sasldb2 && \
    exec /usr/sbin/saslauthd -a sasldb -d -n 5 -m '$tmp/cyrus'"
# No failure delay: this measures throughput, and Cyrus has none.
start_server "$bin/saslauthd-rs" -a sasldb -f -m "$tmp/ours" --sasldb "$tmp/sasldb2.lmdb" --failure-delay 0
start_server "$bin/examples/null-server" saslauthd "$tmp/null-mux"
wait_socket "$tmp/cyrus/mux" "$tmp/ours/mux" "$tmp/null-mux"
if [ "${METRICS_OFF:-}" = 1 ]; then
    mkdir -p "$tmp/off"
    start_server "$bin/saslauthd-rs" --config "$(metrics_off_config)" -a sasldb -f -m "$tmp/off" \
        --sasldb "$tmp/sasldb2.lmdb" --failure-delay 0
    wait_socket "$tmp/off/mux"
fi
if [ -n "${BASELINE:-}" ]; then
    mkdir -p "$tmp/baseline"
    start_server "$BASELINE" -a sasldb -f -m "$tmp/baseline" --sasldb "$tmp/sasldb2.lmdb" --failure-delay 0
    wait_socket "$tmp/baseline/mux"
fi

run() { "$bin/saslauthd-bench" --clients "$clients" --duration "$secs" --user alice \
        --password secret --realm example.org "$@"; }
echo "# $(nproc) cores, $clients clients, $secs s each; $(date -u +%F)"
for round in $(seq "${ROUNDS:-1}"); do {
    run --socket "$tmp/null-mux" --label "do-nothing saslauthd server"
    run --socket "$tmp/cyrus/mux" --label "cyrus-saslauthd-2.1.28 -a sasldb -n 5"
    run --socket "$tmp/ours/mux" --label "saslauthd-rs -a sasldb"
    metrics_off --socket "$tmp/off/mux" --label "saslauthd-rs -a sasldb, metrics = false"
    baseline --socket "$tmp/baseline/mux" --label "baseline saslauthd-rs -a sasldb"
    run --socket "$tmp/cyrus/mux" --fail-percent 50 --label "cyrus, 50% wrong passwords"
    run --socket "$tmp/ours/mux" --fail-percent 50 --label "saslauthd-rs, 50% wrong passwords"
} | tee -a "$tmp/rows"; done
medians
