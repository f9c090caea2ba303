#!/usr/bin/env bash
# What the server itself spends per request, user and system CPU (from /proc/PID/stat), for
# the do-nothing server of the protocol, saslauthd-rs, saslauthd-rs with `metrics = false`
# when METRICS_OFF=1, and BASELINE (another saslauthd-rs
# binary) when given; each measured alone, ROUNDS times, interleaved.
#
#   benches/cost-per-request.sh saslauthd|dovecot [CLIENTS] [SECONDS]
#
# Rates on a shared machine swing from run to run; CPU per request is the steadier figure of
# what a change saved. Loopback Unix sockets only.
proto=${1:?saslauthd or dovecot}
clients=${2:-16}
secs=${3:-4}
. "$(dirname "$0")/common.sh"
bench_setup
tick=$(getconf CLK_TCK)
echo secret | "$bin/saslpasswd2-rs" -p -c -u example.org -f "$tmp/sasldb2" alice
one() { # LABEL COMMAND...
    local label=$1; shift
    setsid "$@" >/dev/null 2>&1 &
    local pid=$! sock=$tmp/socket
    [ "$proto" = saslauthd ] && [ "$label" != do-nothing ] && sock=$tmp/run/mux
    wait_socket "$sock"
    local before after n out
    before=$(awk '{print $14, $15}' "/proc/$pid/stat")
    out=$("$bin/saslauthd-bench" --protocol "$proto" --clients "$clients" --duration "$secs" \
        --user alice --password secret --realm example.org --socket "$sock" --label "$label")
    after=$(awk '{print $14, $15}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$tmp/socket" "$tmp/run/mux"
    n=$(echo "$out" | sed -E 's/.*\(([0-9]+) requests.*/\1/')
    echo "$out" | sed -E 's/  p50.*//' | tr '\n' ' '
    echo "$before $after" | awk -v n="$n" -v t="$tick" '{
        printf "user %.1f us  sys %.1f us per request\n", ($3-$1)/t/n*1e6, ($4-$2)/t/n*1e6 }'
}
ours() { one "$1" "$2" "${@:3}" -a sasldb -f -m "$tmp/run" --sasldb "$tmp/sasldb2" --failure-delay 0 \
    --dovecot-socket "$tmp/socket"; }
echo "# $(nproc) cores, $clients clients, $secs s each, $proto protocol; $(date -u +%F)"
for round in $(seq "${ROUNDS:-3}"); do
    one do-nothing "$bin/examples/null-server" "$proto" "$tmp/socket"
    ours saslauthd-rs "$bin/saslauthd-rs"
    [ "${METRICS_OFF:-}" != 1 ] || ours metrics-off "$bin/saslauthd-rs" --config "$(metrics_off_config)"
    [ -z "${BASELINE:-}" ] || ours baseline "$BASELINE"
done
