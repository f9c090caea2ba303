#!/usr/bin/env bash
# User-space instructions per request under callgrind: one client, sequential requests, the
# counters zeroed just before the load and dumped just after (start-up is not counted); for
# the do-nothing server of the protocol, saslauthd-rs, saslauthd-rs with `metrics = false`
# when METRICS_OFF=1, and BASELINE when given. Counted
# instructions repeat from run to run, whatever else the machine does.
#
#   [MECH=scram-sha-256] benches/instructions.sh saslauthd|dovecot [SECONDS]
#
# Under valgrind SHA-256 runs in software (no SHA-NI): about 7,000 of each request's
# instructions are the constant-time password compare, which natively costs a few hundred
# cycles. Needs valgrind.
proto=${1:?saslauthd or dovecot}
secs=${2:-6}
. "$(dirname "$0")/common.sh"
bench_setup
echo secret | "$bin/saslpasswd2-rs" -p -c -u example.org -f "$tmp/sasldb2" alice
one() { # LABEL COMMAND...
    local label=$1; shift
    local sock=$tmp/socket
    [ "$proto" = saslauthd ] && [ "$label" != do-nothing ] && sock=$tmp/run/mux
    setsid valgrind --tool=callgrind --callgrind-out-file="$tmp/cg-$label.%p" "$@" \
        >/dev/null 2>"$tmp/valgrind-$label.log" &
    local pid=$!
    for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.1; done
    sleep 1
    callgrind_control -z "$pid" >/dev/null 2>&1
    local out n total
    out=$("$bin/saslauthd-bench" --protocol "$proto" --clients 1 --duration "$secs" --warmup 0 \
        --user alice --password secret --realm example.org --socket "$sock" --label "$label" \
        ${MECH:+--mech "$MECH"})
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    rm -f "$tmp/socket" "$tmp/run/mux"
    n=$(echo "$out" | sed -E 's/.*\(([0-9]+) requests.*/\1/')
    total=$(grep -h '^totals:' "$tmp"/cg-"$label".*.1 | awk '{print $2}')
    echo "$label $proto: $n requests, $((total / n)) instructions per request"
}
ours() { one "$1" "$2" "${@:3}" -a sasldb -f -m "$tmp/run" --sasldb "$tmp/sasldb2" --failure-delay 0 \
    --dovecot-socket "$tmp/socket"; }
# The do-nothing server answers PLAIN only.
[ -n "${MECH:-}" ] || one do-nothing "$bin/examples/null-server" "$proto" "$tmp/socket"
ours saslauthd-rs "$bin/saslauthd-rs"
[ "${METRICS_OFF:-}" != 1 ] || ours metrics-off "$bin/saslauthd-rs" --config "$(metrics_off_config)"
[ -z "${BASELINE:-}" ] || ours baseline "$BASELINE"
