#!/usr/bin/env bash
# Measures saslauthd-rs's Dovecot auth socket against Dovecot 2.3's own auth process
# (passwd-file passdb), with the same load generator in the same run: persistent
# connections, one AUTH at a time on each, AUTH PLAIN, then SCRAM-SHA-256.
#
#   benches/compare-dovecot.sh [CLIENTS] [SECONDS]
#
# Also measured in the same run: two do-nothing servers of the protocol (benches/null_server.rs,
# which answer OK to every AUTH without checking: the limit this machine allows; the first row,
# which the percentages are of, is the thread-per-connection one), and, when
# BASELINE names another saslauthd-rs binary (an earlier build), that one. ROUNDS repeats the
# rows, for a noisy machine. VERBOSE=1 adds a saslauthd-rs with -V (its log in a file).
#
# Needs Debian's dovecot-core. Dovecot runs from its own config in a temporary directory
# (protocols = none: no network listener); ours from a temporary sasldb. Unix sockets only.
clients=${1:-16}
secs=${2:-10}
. "$(dirname "$0")/common.sh"
bench_setup

mkdir -p "$tmp/dovecot"
echo 'alice@example.org:{PLAIN}secret' > "$tmp/dovecot/users"
dovecot_conf "plain scram-sha-256" "" "  driver = passwd-file
  args = scheme=PLAIN username_format=%u $tmp/dovecot/users"
start_server dovecot -F -c "$tmp/dovecot/dovecot.conf"

echo secret | "$bin/saslpasswd2-rs" -p -c -u example.org -f "$tmp/sasldb2" alice
start_server "$bin/saslauthd-rs" -a sasldb -f -m "$tmp/ours-run" --sasldb "$tmp/sasldb2" \
    --failure-delay 0 --dovecot-socket "$tmp/ours-auth"
start_server "$bin/examples/null-server" dovecot "$tmp/null-auth"
start_server "$bin/examples/null-server" dovecot-threads "$tmp/null-threads-auth"
wait_socket "$tmp/dovecot/auth" "$tmp/ours-auth" "$tmp/null-auth" "$tmp/null-threads-auth"
if [ "${METRICS_OFF:-}" = 1 ]; then
    start_server "$bin/saslauthd-rs" --config "$(metrics_off_config)" -a sasldb -f \
        -m "$tmp/off-run" --sasldb "$tmp/sasldb2" --failure-delay 0 --dovecot-socket "$tmp/off-auth"
    wait_socket "$tmp/off-auth"
fi
if [ -n "${BASELINE:-}" ]; then
    start_server "$BASELINE" -a sasldb -f -m "$tmp/baseline-run" --sasldb "$tmp/sasldb2" \
        --failure-delay 0 --dovecot-socket "$tmp/baseline-auth"
    wait_socket "$tmp/baseline-auth"
fi
# VERBOSE=1: also a saslauthd-rs with -V (a log line per success), its log in a file.
verbose() { [ "${VERBOSE:-}" != 1 ] || run "$@"; }
if [ "${VERBOSE:-}" = 1 ]; then
    setsid "$bin/saslauthd-rs" -V -a sasldb -f -m "$tmp/verbose-run" --sasldb "$tmp/sasldb2" \
        --failure-delay 0 --dovecot-socket "$tmp/verbose-auth" >/dev/null 2>"$tmp/verbose.log" &
    bench_pids+=($!)
    wait_socket "$tmp/verbose-auth"
fi

run() { "$bin/saslauthd-bench" --protocol dovecot --clients "$clients" --duration "$secs" \
        --user alice --realm example.org --password secret "$@"; }
echo "# $(nproc) cores, $clients persistent connections, $secs s each; $(date -u +%F)"
for round in $(seq "${ROUNDS:-1}"); do {
    run --socket "$tmp/null-threads-auth" --label "do-nothing server, a thread per connection"
    run --socket "$tmp/null-auth" --label "do-nothing server, one tokio thread"
    run --socket "$tmp/dovecot/auth" --label "dovecot 2.3 auth (passwd-file), AUTH PLAIN"
    run --socket "$tmp/ours-auth" --label "saslauthd-rs (sasldb), AUTH PLAIN"
    metrics_off --socket "$tmp/off-auth" --label "saslauthd-rs, AUTH PLAIN, metrics = false"
    baseline --socket "$tmp/baseline-auth" --label "baseline saslauthd-rs, AUTH PLAIN"
    verbose --socket "$tmp/verbose-auth" --label "saslauthd-rs -V (a log line per success, to a file)"
    run --socket "$tmp/ours-auth" --fail-percent 50 --label "saslauthd-rs, AUTH PLAIN, 50% wrong"
    run --socket "$tmp/dovecot/auth" --mech scram-sha-256 --label "dovecot 2.3 auth, SCRAM-SHA-256"
    run --socket "$tmp/ours-auth" --mech scram-sha-256 --label "saslauthd-rs, SCRAM-SHA-256 (cached keys)"
    metrics_off --socket "$tmp/off-auth" --mech scram-sha-256 --label "saslauthd-rs, SCRAM-SHA-256, metrics = false"
    baseline --socket "$tmp/baseline-auth" --mech scram-sha-256 --label "baseline saslauthd-rs, SCRAM-SHA-256"
} | tee -a "$tmp/rows"; done
medians
