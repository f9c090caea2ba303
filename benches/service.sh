#!/usr/bin/env bash
# Running as a service: the time from start to READY=1 (sd_notify, with -a sasldb over the
# 2,007-user fixture), and resident memory idle and under 64 concurrent clients, against
# Cyrus's saslauthd -a sasldb -n 5 (its processes measured together) on the same file.
#
#   benches/service.sh [ROUNDS]
#
# Needs root for Cyrus's saslauthd (it reads only /etc/sasldb2: a copy is bind-mounted over
# it in a private mount namespace; the real file is never touched). Loopback Unix sockets
# only; every run stops by itself.
rounds=${1:-20}
. "$(dirname "$0")/common.sh"
bench_setup
cp tests/fixtures/sasldb/sasldb2-bdb-hash-2007users "$tmp/sasldb2"

echo "# $(nproc) cores; $(date -u +%F)"
# Start to READY=1: the daemon is started by a small Python supervisor that listens on
# NOTIFY_SOCKET, as systemd would, and times each start.
python3 - "$bin/saslauthd-rs" "$tmp" "$rounds" <<'PY'
import os, socket, subprocess, sys, time, statistics
daemon, tmp, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
path = os.path.join(tmp, "notify")
times = []
for i in range(rounds):
    try: os.unlink(path)
    except FileNotFoundError: pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(path); s.settimeout(10)
    run = os.path.join(tmp, f"ready-{i}")
    t0 = time.monotonic()
    p = subprocess.Popen([daemon, "-a", "sasldb", "-f", "--sasldb", os.path.join(tmp, "sasldb2"),
                          "-m", run], env={"NOTIFY_SOCKET": path, "PATH": "/usr/bin:/bin"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        msg = s.recv(512)
        if msg.startswith(b"READY=1"): break
    times.append((time.monotonic() - t0) * 1000)
    p.terminate(); p.wait(); s.close()
times.sort()
print(f"start to READY=1, -a sasldb, 2,007 users: median {statistics.median(times):.1f} ms, "
      f"min {times[0]:.1f}, max {times[-1]:.1f} ({rounds} starts)")
PY

# Memory: VmRSS of every process of a server, summed.
rss() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")))
    done
    echo "$total"
}
mkdir -p "$tmp/ours" "$tmp/cyrus"
start_server "$bin/saslauthd-rs" -a sasldb -f -m "$tmp/ours" --sasldb "$tmp/sasldb2" \
    --failure-delay 0
start_server unshare -m sh -c "mount --bind '$tmp/sasldb2' /etc/sasldb2 && \
    exec /usr/sbin/saslauthd -a sasldb -d -n 5 -m '$tmp/cyrus'"
wait_socket "$tmp/ours/mux" "$tmp/cyrus/mux"
sleep 1
ours() { pgrep -f -- "-m $tmp/ours" | grep -v "^$$\$" ; }
cyrus() { pgrep -f -- "saslauthd -a sasldb -d -n 5 -m $tmp/cyrus" | grep -v "^$$\$"; }
echo "resident memory idle: saslauthd-rs $(rss $(ours)) KiB (1 process); cyrus-saslauthd" \
    "$(rss $(cyrus)) KiB ($(cyrus | wc -l) processes)"
for who in ours cyrus; do
    "$bin/saslauthd-bench" --socket "$tmp/$who/mux" --clients 64 --duration 4 --service smtp \
        --user user1999 --password pw-1999 --realm bulk.example --label "$who" >"$tmp/$who.bench" &
    load=$!
    sleep 2
    kib=$(rss $($who))
    wait "$load"
    echo "resident memory, 64 clients: $who $kib KiB ($($who | wc -l) processes); $(cat "$tmp/$who.bench")"
done
