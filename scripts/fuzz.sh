#!/usr/bin/env bash
# Runs every fuzz target (fuzz/) for a bounded time each, one per core at a time, on the
# stable toolchain (no sanitizer: `cargo fuzz run -s none`), from the seed corpus in
# fuzz/corpus/ (read only: what libFuzzer finds goes to target/fuzz-corpus/). Prints each
# target's executions; a crash fails.
#   scripts/fuzz.sh [SECONDS per target, default 20] [TARGET...]
#   scripts/fuzz.sh --build-only     (cargo-fuzz and the targets' build)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
(cd fuzz && cargo fuzz build -s none >/dev/null)
[ "$secs" != --build-only ] || exit 0
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(saslauthd_request dovecot_lines mechanism shadow sasldb imap)
# One target per core at a time (libFuzzer runs on one thread): the same time for each
# target, in half the wall time on two cores.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
fuzz_one() {
    local t=$1 work="target/fuzz-corpus/$1"
    mkdir -p "$work"
    if (cd fuzz && cargo fuzz run -s none "$t" "../$work" "corpus/$t" -- \
            -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1) \
            >"$logs/$t.log" 2>&1; then
        echo ok >"$logs/$t.status"
    else
        echo failed >"$logs/$t.status"
    fi
}
jobs_max=$(nproc)
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
    fuzz_one "$t" &
done
wait
status=0
for t in "${targets[@]}"; do
    if [ "$(cat "$logs/$t.status" 2>/dev/null)" != ok ]; then
        tail -40 "$logs/$t.log"
        echo "fuzz: $t FAILED (the input is in fuzz/artifacts/$t/)"
        status=1
        continue
    fi
    runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$logs/$t.log")
    echo "fuzz: $t: ${runs:-?} executions in ${secs} s, no crash"
done
exit "$status"
