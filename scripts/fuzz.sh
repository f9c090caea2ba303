#!/usr/bin/env bash
# Runs every fuzz target (fuzz/) for a bounded time each on the stable toolchain (no
# sanitizer: `cargo fuzz run -s none`), from the seed corpus in fuzz/corpus/ (read only: what
# libFuzzer finds goes to target/fuzz-corpus/). Prints each target's executions; a crash fails.
#   scripts/fuzz.sh [SECONDS per target, default 20] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(saslauthd_request dovecot_lines mechanism shadow sasldb imap)
(cd fuzz && cargo fuzz build -s none >/dev/null)
for t in "${targets[@]}"; do
    work="target/fuzz-corpus/$t"
    mkdir -p "$work"
    log=$(mktemp)
    if ! (cd fuzz && cargo fuzz run -s none "$t" "../$work" "corpus/$t" -- \
            -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1) >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $t FAILED (the input is in fuzz/artifacts/$t/)"
        rm -f "$log"
        exit 1
    fi
    runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
    echo "fuzz: $t: ${runs:-?} executions in ${secs} s, no crash"
    rm -f "$log"
done
