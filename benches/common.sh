# Sourced by the compare-*.sh benchmarks: builds the release binaries, makes a temporary
# directory, starts servers in their own sessions and stops them all at exit.
#   bench_setup            sets $here, $bin, $tmp; installs the cleanup
#   start_server CMD...    runs CMD in a new session (its process group is killed at exit)
#   wait_socket PATH...    waits up to 10 s for each Unix socket, fails otherwise
set -euo pipefail
bench_pids=()

bench_setup() {
    here=$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)
    cd "$here"
    cargo build --release --quiet --bins
    bin=$here/target/release
    tmp=$(mktemp -d)
    chmod 755 "$tmp"
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for p in "${bench_pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}

start_server() {
    setsid "$@" >/dev/null 2>&1 &
    bench_pids+=($!)
}

wait_socket() {
    for s in "$@"; do
        for _ in $(seq 200); do [ -S "$s" ] && break; sleep 0.05; done
        [ -S "$s" ] || { echo "no server on $s" >&2; exit 1; }
    done
}
