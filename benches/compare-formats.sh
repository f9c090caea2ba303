#!/usr/bin/env bash
# The sasldb2 formats side by side: requests per second for one user of a 2,007-user file
# (the Cyrus-written fixtures) and of a 200,000-user file, in LMDB, Berkeley DB and GDBM, over
# the saslauthd protocol, with a do-nothing server and Cyrus's saslauthd (Berkeley DB) in the
# same run; then sasldblistusers2-rs against Cyrus's sasldblistusers2 on the same files, and
# how long one saslpasswd2-rs change takes in a 200,000-user file (Cyrus's saslpasswd2, which
# changes a Berkeley DB file in place, beside it).
#
#   benches/compare-formats.sh [CLIENTS] [SECONDS]
#
# Needs root for Cyrus's saslauthd (it reads only /etc/sasldb2: a copy is bind-mounted over it
# in a private mount namespace; the real file is never touched), Debian's sasl2-bin and
# lmdb-utils. Loopback Unix sockets only; every run stops by itself.
clients=${1:-16}
secs=${2:-4}
. "$(dirname "$0")/common.sh"
bench_setup

fixtures=$here/tests/fixtures/sasldb
# 200,000 users in LMDB (mdb_load), converted to the other formats by sasldb-convert-rs.
{
    printf 'VERSION=3\nformat=print\ntype=btree\nmapsize=268435456\nHEADER=END\n'
    awk 'BEGIN { for (i = 0; i < 200000; i++) printf " user%d\\00bulk.example\\00userPassword\n pw-%d\n", i, i }'
    printf 'DATA=END\n'
} | mdb_load -n -f /dev/stdin "$tmp/big.lmdb"
for f in bdb gdbm; do "$bin/sasldb-convert-rs" --to "$f" "$tmp/big.lmdb" "$tmp/big.$f" >/dev/null; done
for f in lmdb gdbm; do cp "$fixtures/sasldb2-$f-2007users" "$tmp/small.$f"; done
cp "$fixtures/sasldb2-bdb-hash-2007users" "$tmp/small.bdb"

start_server "$bin/examples/null-server" saslauthd "$tmp/null-mux"
sockets=("$tmp/null-mux")
for size in small big; do
    for f in lmdb bdb gdbm; do
        mkdir -p "$tmp/run-$size-$f"
        start_server "$bin/saslauthd-rs" -a sasldb -f -m "$tmp/run-$size-$f" \
            --sasldb "$tmp/$size.$f" --failure-delay 0
        sockets+=("$tmp/run-$size-$f/mux")
    done
    mkdir -p "$tmp/cyrus-$size"
    start_server unshare -m sh -c "mount --bind '$tmp/$size.bdb' /etc/sasldb2 && \
        exec /usr/sbin/saslauthd -a sasldb -d -n 5 -m '$tmp/cyrus-$size'"
    sockets+=("$tmp/cyrus-$size/mux")
done
wait_socket "${sockets[@]}"

run() { "$bin/saslauthd-bench" --clients "$clients" --duration "$secs" --service smtp "$@"; }
echo "# $(nproc) cores, $clients clients, $secs s each; $(date -u +%F)"
for round in $(seq "${ROUNDS:-1}"); do {
    run --socket "$tmp/null-mux" --user user1999 --password pw-1999 --realm bulk.example \
        --label "do-nothing saslauthd server"
    for f in lmdb bdb gdbm; do
        run --socket "$tmp/run-small-$f/mux" --user user1999 --password pw-1999 \
            --realm bulk.example --label "saslauthd-rs, 2,007 users, $f"
    done
    run --socket "$tmp/cyrus-small/mux" --user user1999 --password pw-1999 \
        --realm bulk.example --label "cyrus-saslauthd, 2,007 users, bdb"
    for f in lmdb bdb gdbm; do
        run --socket "$tmp/run-big-$f/mux" --user user123456 --password pw-123456 \
            --realm bulk.example --label "saslauthd-rs, 200,000 users, $f"
    done
    run --socket "$tmp/cyrus-big/mux" --user user123456 --password pw-123456 \
        --realm bulk.example --label "cyrus-saslauthd, 200,000 users, bdb"
} | tee -a "$tmp/rows"; done
medians

# Wall time of a command: the median of ROUNDS runs, in milliseconds.
time_ms() {
    local times=() t0 t1
    for _ in $(seq "${ROUNDS:-1}"); do
        t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N)
        times+=($(( (t1 - t0) / 1000000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

echo "# listing every user: median of ${ROUNDS:-1} runs, ms"
for size in small big; do
    for f in lmdb bdb gdbm; do
        printf '%-58s %6s ms\n' "sasldblistusers2-rs, $size, $f" \
            "$(time_ms "$bin/sasldblistusers2-rs" -f "$tmp/$size.$f")"
    done
    printf '%-58s %6s ms\n' "cyrus sasldblistusers2, $size, bdb" \
        "$(time_ms /usr/sbin/sasldblistusers2 -f "$tmp/$size.bdb")"
done

echo "# one password change in the 200,000-user file: median of ${ROUNDS:-1} runs, ms"
change() { echo "$2" | "$1" -p -u bulk.example -f "$3" user4242; }
for f in lmdb bdb gdbm; do
    printf '%-58s %6s ms\n' "saslpasswd2-rs, $f" \
        "$(time_ms change "$bin/saslpasswd2-rs" changed "$tmp/big.$f")"
done
printf '%-58s %6s ms\n' "cyrus saslpasswd2 (in place), bdb" \
    "$(time_ms change /usr/sbin/saslpasswd2 changed "$tmp/big.bdb")"
