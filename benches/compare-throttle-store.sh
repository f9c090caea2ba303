#!/usr/bin/env bash
# The shared throttle store's cost: saslauthd-rs with `throttle_store` (a Redis 7 on a
# loopback port) against the same daemon without it, on both sockets, 16 clients, half the
# logins failing, each request from one of 1000 client addresses (the saslauthd request's
# fifth field, Dovecot's rip=). Two settings of the failure delay:
#
#   - 2 s, the default: what a mail host runs. A failure waits ~2 s anyway, and the call to
#     the store is made within that wait.
#   - 0.1 ms: the delay no longer hides anything (tokio's timers round it up to 1 ms), so
#     the rate shows what the store costs in CPU (Redis shares this machine's cores) and in
#     latency. Here also, in the same run: the do-nothing servers of both protocols (every
#     login right: they check nothing), Cyrus's saslauthd -a sasldb and Dovecot 2.3's auth
#     process (passwd-file, auth_failure_delay = 0, its anvil penalty off).
#
# "failures p50/p99" are the failures' own latencies; after the rows, each store daemon's
# `throttle_store_wait_seconds` histogram says how long its failures waited for Redis (the
# bucket that holds the 50th and 99th percentile: 50 us doubling).
#
#   benches/compare-throttle-store.sh [CLIENTS] [SECONDS]
#
# Needs Debian's redis-tools, sasl2-bin and dovecot-core. Every server runs from a temporary
# directory; Redis listens on 127.0.0.1 only. ROUNDS repeats the rows.
clients=${1:-16}
secs=${2:-10}
. "$(dirname "$0")/common.sh"
bench_setup

ln -s /usr/bin/redis-check-rdb "$tmp/redis-server"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_server "$tmp/redis-server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$tmp"
for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
printf 'throttle_store = "redis://127.0.0.1:%s/0"\n' "$port" > "$tmp/store.toml"
: > "$tmp/local.toml"

echo secret | "$bin/saslpasswd2-rs" -p -c -u example.org -f "$tmp/sasldb2" alice
echo secret | /usr/sbin/saslpasswd2 -p -c -u example.org -f "$tmp/sasldb2.bdb" alice
# local-2, store-2: a 2 s failure delay; local-0, store-0: 0.1 ms.
for kind in local store; do
    for delay in 2 0; do
        seconds=$([ "$delay" = 2 ] && echo 2 || echo 0.0001)
        start_mux "$kind-$delay" "$bin/saslauthd-rs" --config "$tmp/$kind.toml" -a sasldb -f \
            --sasldb "$tmp/sasldb2" --failure-delay "$seconds" --dovecot-socket "$tmp/$kind-$delay-auth"
        wait_socket "$tmp/$kind-$delay-auth"
    done
done
mkdir -p "$tmp/cyrus"
start_server unshare -m sh -c "mount --bind '$tmp/sasldb2.bdb' /etc/sasldb2 && \
    exec /usr/sbin/saslauthd -a sasldb -d -n 5 -m '$tmp/cyrus'"
mkdir -p "$tmp/dovecot"
echo 'alice@example.org:{PLAIN}secret' > "$tmp/dovecot/users"
dovecot_conf "plain" "service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}" "  driver = passwd-file
  args = scheme=PLAIN username_format=%u $tmp/dovecot/users"
start_server dovecot -F -c "$tmp/dovecot/dovecot.conf"
start_server "$bin/examples/null-server" saslauthd "$tmp/null-mux"
start_server "$bin/examples/null-server" dovecot "$tmp/null-auth"
wait_socket "$tmp/cyrus/mux" "$tmp/dovecot/auth" "$tmp/null-mux" "$tmp/null-auth"
# Both store daemons are connected before anything is measured.
for d in store-2 store-0; do
    for _ in $(seq 100); do
        "$bin/saslauthd-rs-ctl" -m "$tmp/$d" metrics | grep -q '^saslauthd_rs_throttle_store_up 1' && break
        sleep 0.05
    done
done

run() { "$bin/saslauthd-bench" --clients "$clients" --duration "$secs" --user alice \
        --password secret --realm example.org --addresses 1000 "$@"; }
wrong() { run --fail-percent 50 "$@"; }
echo "# $(nproc) cores, $clients clients, $secs s each, 50% wrong, 1000 addresses; $(date -u +%F)"
for round in $(seq "${ROUNDS:-1}"); do {
    wrong --socket "$tmp/local-2/mux" --label "2 s delay, saslauthd socket, saslauthd-rs, local throttle"
    wrong --socket "$tmp/store-2/mux" --label "2 s delay, saslauthd socket, saslauthd-rs, throttle_store (Redis)"
    wrong --protocol dovecot --socket "$tmp/local-2-auth" --label "2 s delay, dovecot socket, saslauthd-rs, local throttle"
    wrong --protocol dovecot --socket "$tmp/store-2-auth" --label "2 s delay, dovecot socket, saslauthd-rs, throttle_store (Redis)"
    run --socket "$tmp/null-mux" --label "0.1 ms delay, saslauthd socket, do-nothing server"
    wrong --socket "$tmp/cyrus/mux" --label "0.1 ms delay, saslauthd socket, cyrus-saslauthd-2.1.28 -a sasldb -n 5"
    wrong --socket "$tmp/local-0/mux" --label "0.1 ms delay, saslauthd socket, saslauthd-rs, local throttle"
    wrong --socket "$tmp/store-0/mux" --label "0.1 ms delay, saslauthd socket, saslauthd-rs, throttle_store (Redis)"
    run --protocol dovecot --socket "$tmp/null-auth" --label "0.1 ms delay, dovecot socket, do-nothing server"
    wrong --protocol dovecot --socket "$tmp/dovecot/auth" --label "0.1 ms delay, dovecot socket, dovecot 2.3 auth (passwd-file)"
    wrong --protocol dovecot --socket "$tmp/local-0-auth" --label "0.1 ms delay, dovecot socket, saslauthd-rs, local throttle"
    wrong --protocol dovecot --socket "$tmp/store-0-auth" --label "0.1 ms delay, dovecot socket, saslauthd-rs, throttle_store (Redis)"
} | tee -a "$tmp/rows"; done
medians
# The bucket (upper bound) holding a quantile of a store daemon's waits for Redis.
for d in store-2 store-0; do
    "$bin/saslauthd-rs-ctl" -m "$tmp/$d" metrics | awk -v d="$d" '
        /^saslauthd_rs_throttle_store_wait_seconds_bucket/ {
            match($0, /le="[^"]*"/); le[++n] = substr($0, RSTART + 4, RLENGTH - 5); c[n] = $NF
        }
        END {
            total = c[n]
            for (i = 1; i <= n; i++) {
                if (!p50 && c[i] >= 0.5 * total) p50 = le[i]
                if (!p99 && c[i] >= 0.99 * total) p99 = le[i]
            }
            printf "# %s: %d failures waited for Redis: p50 <= %s s, p99 <= %s s\n", d, total, p50, p99
        }'
done
echo "# Redis: $(redis-cli -p "$port" INFO commandstats | grep -E 'cmdstat_evalsha:' | tr -d '\r'); $(redis-cli -p "$port" INFO cpu | grep -E 'used_cpu_(user|sys):' | tr -d '\r' | tr '\n' ' ')"
