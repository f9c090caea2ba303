#!/usr/bin/env bash
# `-a sql` against Dovecot 2.3's SQL passdb on the same PostgreSQL and the same
# dovecot-sql.conf.ext, AUTH PLAIN on each one's Dovecot-protocol socket, in the same run:
# with {SSHA512} values (the database and the protocol dominate) and {SHA512-CRYPT} values (the
# hash dominates). Also measured: the thread-per-connection do-nothing server of the protocol
# (the first row, which the percentages are of). Cache off on both, unless CACHE=1.
#
#   benches/compare-sql.sh [CLIENTS] [SECONDS]
#
# Needs PostgreSQL 15's server (installed, or unpacked where SASLAUTHD_RS_POSTGRESQL says, as
# scripts/test.sh does), dovecot-core and dovecot-pgsql. PostgreSQL runs from a temporary
# directory on a Unix socket and a loopback port (as nobody when run as root). BASELINE names
# another saslauthd-rs binary (an earlier build), run beside ours on the same database with the
# same arguments, its rows after ours. OURS_ARGS: more arguments for both (`--threads 2`).
# PG_SOCKET=1: both reach PostgreSQL over its Unix socket instead of loopback TCP. Each round
# also measures the hashing ceiling beside the {SHA512-CRYPT} rows: libxcrypt alone, on as
# many threads as the `-n` pool has (5, the default), no daemon, no database
# (benches/crypt_scaling.rs). After each row of a server on the database, and as medians at
# the end: the CPU time a login of the server's processes and of the database's (from /proc,
# each server's process and all it forks); these rows are measured without the bench's
# warm-up second, which one warm-up run per server before the rounds replaces.
# DB=mariadb: the same against MariaDB 10.11 (installed, or unpacked where
# SASLAUTHD_RS_MARIADB says) and dovecot-mysql instead: `driver = mysql`, the same table, over
# loopback TCP (or MariaDB's Unix socket with PG_SOCKET=1).
clients=${1:-16}
secs=${2:-5}
. "$(dirname "$0")/common.sh"
bench_setup
ceiling=$(cargo bench --quiet --bench crypt_scaling --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "crypt_scaling" and m.get("executable"):
        print(m["executable"])')
[ -x "$ceiling" ] || { echo "cannot build benches/crypt_scaling.rs" >&2; exit 1; }
ssha=$(doveadm pw -s SSHA512 -p secret)
crypt=$(doveadm pw -s SHA512-CRYPT -p secret)
table="CREATE TABLE mailbox (username VARCHAR(255) PRIMARY KEY, password VARCHAR(255), active SMALLINT);
    INSERT INTO mailbox VALUES ('alice@example.org', '$ssha', 1), ('bob@example.org', '$crypt', 1)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The database runs as nobody when this runs as root (neither server runs as root).
as_nobody=(setpriv)
[ "$(id -u)" != 0 ] || as_nobody+=(--reuid=nobody --regid=nogroup --clear-groups)
as_nobody+=(--)
if [ "${DB:-postgresql}" = mariadb ]; then
    myroot=${SASLAUTHD_RS_MARIADB:-/}
    [ -x "$myroot/usr/sbin/mariadbd" ] || { echo "no MariaDB server at $myroot/usr/sbin" >&2; exit 1; }
    dbname="MariaDB 10.11"
    mkdir -p "$tmp/my"
    [ "$(id -u)" = 0 ] && chown nobody:nogroup "$tmp/my"
    "${as_nobody[@]}" "$myroot/usr/bin/mariadb-install-db" --no-defaults --basedir="$myroot/usr" \
        --datadir="$tmp/my/data" --auth-root-authentication-method=normal --skip-test-db >/dev/null
    start_server "${as_nobody[@]}" "$myroot/usr/sbin/mariadbd" --no-defaults \
        --basedir="$myroot/usr" --datadir="$tmp/my/data" --socket="$tmp/my/sock" --port="$port" --bind-address=127.0.0.1 --skip-log-bin \
        --lc-messages-dir="$myroot/usr/share/mysql" --pid-file="$tmp/my/pid" --max-connections=200
    dbsid=${bench_pids[-1]}
    wait_socket "$tmp/my/sock"
    mysql() { "$myroot/usr/bin/mariadb" --no-defaults --socket="$tmp/my/sock" -u root "$@"; }
    mysql -e "CREATE DATABASE mail; CREATE USER 'mail'@'%' IDENTIFIED BY 'mail-secret';
        GRANT SELECT ON mail.* TO 'mail'@'%'"
    mysql -D mail -e "$table"
    if [ "${PG_SOCKET:-}" = 1 ]; then dbhost=$tmp/my/sock; else dbhost=127.0.0.1; fi
    connect="host=$dbhost port=$port dbname=mail user=mail password=mail-secret"
    driver=mysql
else
    pgroot=${SASLAUTHD_RS_POSTGRESQL:-/}
    pgbin=$pgroot/usr/lib/postgresql/15/bin
    [ -x "$pgbin/postgres" ] || { echo "no PostgreSQL 15 server at $pgbin" >&2; exit 1; }
    dbname="PostgreSQL 15"
    mkdir -p "$tmp/pg" "$tmp/pgsock"
    [ "$(id -u)" = 0 ] && chown nobody:nogroup "$tmp/pg" "$tmp/pgsock"
    "${as_nobody[@]}" "$pgbin/initdb" -D "$tmp/pg" -U postgres -A trust -E UTF8 -N >/dev/null
    start_server "${as_nobody[@]}" "$pgbin/postgres" -D "$tmp/pg" -k "$tmp/pgsock" -h 127.0.0.1 -p "$port" -c fsync=off -c max_connections=100
    dbsid=${bench_pids[-1]}
    wait_socket "$tmp/pgsock/.s.PGSQL.$port"
    psql() { command psql -X -q -v ON_ERROR_STOP=1 -U postgres -h "$tmp/pgsock" -p "$port" "$@"; }
    # The socket comes before the end of recovery ("the database system is starting up").
    for _ in $(seq 100); do psql -d postgres -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
    psql -d postgres -c "CREATE DATABASE mail"
    psql -d mail -c "$table"
    # PG_SOCKET=1: both connect over PostgreSQL's Unix socket (libpq's `host=/directory`), not
    # over loopback TCP.
    if [ "${PG_SOCKET:-}" = 1 ]; then dbhost=$tmp/pgsock; else dbhost=127.0.0.1; fi
    connect="host=$dbhost port=$port dbname=mail user=postgres"
    driver=pgsql
fi
cat > "$tmp/dovecot-sql.conf.ext" <<CONF
driver = $driver
connect = $connect
default_pass_scheme = SHA512-CRYPT
password_query = SELECT username AS user, password FROM mailbox WHERE username = '%u' AND active = '1'
CONF
chmod 644 "$tmp/dovecot-sql.conf.ext"
# CACHE=1: both with their caches (Dovecot's auth cache, which remembers the query's answer
# and so skips the database; ours, -c, which runs the query every time and skips the hash).
if [ "${CACHE:-}" = 1 ]; then
    dovecot_cache="auth_cache_size = 10M
auth_cache_ttl = 1 hour"
    ours_cache=-c
else
    dovecot_cache="auth_cache_size = 0"
    ours_cache=
fi
dovecot_conf plain "$dovecot_cache" "  driver = sql
  args = $tmp/dovecot-sql.conf.ext"
start_server dovecot -F -c "$tmp/dovecot/dovecot.conf"
dovecotsid=${bench_pids[-1]}
setsid "$bin/saslauthd-rs" -a sql -O "$tmp/dovecot-sql.conf.ext" -f -m "$tmp/ours-run" \
    --failure-delay 0 --dovecot-socket "$tmp/ours-auth" $ours_cache ${OURS_ARGS:-} >/dev/null 2>"$tmp/ours.log" &
bench_pids+=($!)
oursid=$!
if [ -n "${BASELINE:-}" ]; then
    setsid "$BASELINE" -a sql -O "$tmp/dovecot-sql.conf.ext" -f -m "$tmp/baseline-run" \
        --failure-delay 0 --dovecot-socket "$tmp/baseline-auth" $ours_cache ${OURS_ARGS:-} >/dev/null 2>"$tmp/baseline.log" &
    bench_pids+=($!)
    basesid=$!
fi
start_server "$bin/examples/null-server" dovecot-threads "$tmp/null-threads-auth"
wait_socket "$tmp/dovecot/auth" "$tmp/null-threads-auth"
for _ in $(seq 100); do [ -S "$tmp/ours-auth" ] && [ -z "${BASELINE:-}" -o -S "$tmp/baseline-auth" ] && break; sleep 0.1; done
[ -S "$tmp/ours-auth" ] || { cat "$tmp/ours.log" >&2; exit 1; }

run() { "$bin/saslauthd-bench" --protocol dovecot --clients "$clients" --duration "$secs" \
        --realm example.org --password secret "$@"; }

# CPU time (clock ticks, user and system, with the children waited for) of each process
# named and all its descendants: a server started by start_server or setsid, with all it
# forks (by parentage, not session: PostgreSQL's backends are sessions of their own).
ticks() {
    python3 - "$@" <<'PY'
import os, sys
parent, cpu = {}, {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    f = stat[stat.rindex(")") + 2:].split()
    parent[pid], cpu[pid] = f[1], sum(int(v) for v in f[11:15])
total = dict.fromkeys(sys.argv[1:], 0)
for pid in cpu:
    at = pid
    while at in parent and at not in total:
        at = parent[at]
    if at in total:
        total[at] += cpu[pid]
print(" ".join(str(total[s]) for s in sys.argv[1:]))
PY
}

# A row (no warm-up: measure_warmup ran once) and, after it, what each login cost: the CPU time
# of the server's session and of the database's, in us, and the database's share of the two.
measured() {
    local sid=$1 label=$2 before after out
    shift 2
    before=$(ticks "$sid" "$dbsid")
    out=$(run --warmup 0 --label "$label" "$@")
    after=$(ticks "$sid" "$dbsid")
    echo "$out"
    python3 - "$label" "$before" "$after" "$out" "$(getconf CLK_TCK)" <<'PY'
import re, sys
label, before, after, out, hz = sys.argv[1:]
n = int(re.search(r"\((\d+) requests", out).group(1))
server, db = (
    (int(a) - int(b)) * 1e6 / int(hz) / max(n, 1) for a, b in zip(after.split(), before.split())
)
print(f"cpu a login, {label}: server {server:.1f} us, database {db:.1f} us, database share {100 * db / max(server + db, 1e-9):.0f}%")
PY
}

# The median of each label's cpu lines over the rounds.
cpu_medians() {
    echo "# medians of ${ROUNDS:-1} rounds: CPU a login (us), the server's and the database's"
    python3 - "$tmp/rows" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"cpu a login, (.*): server ([\d.]+) us, database ([\d.]+) us", line)
    if m:
        rows.setdefault(m.group(1), []).append((float(m.group(2)), float(m.group(3))))
for label, v in rows.items():
    server = statistics.median(s for s, _ in v)
    db = statistics.median(d for _, d in v)
    print(f"{label:<58} server {server:6.1f}  database {db:6.1f}  share {100 * db / (server + db):3.0f}%")
PY
}

# Each server's first connections to the database, before anything is measured.
for socket in "$tmp/dovecot/auth" "$tmp/ours-auth" ${BASELINE:+"$tmp/baseline-auth"}; do
    run --user alice --socket "$socket" --duration 1 --label warm-up >/dev/null
done
echo "# $(nproc) cores, $clients persistent connections, $secs s each, $dbname at $dbhost; $(date -u +%F)"
for round in $(seq "${ROUNDS:-1}"); do {
    run --user alice --socket "$tmp/null-threads-auth" --label "do-nothing server, a thread per connection"
    measured "$dovecotsid" "dovecot 2.3 auth, sql passdb, {SSHA512}" --user alice --socket "$tmp/dovecot/auth"
    measured "$oursid" "saslauthd-rs -a sql, {SSHA512}" --user alice --socket "$tmp/ours-auth"
    [ -z "${BASELINE:-}" ] || measured "$basesid" "baseline -a sql, {SSHA512}" --user alice --socket "$tmp/baseline-auth"
    [ -z "${PROFILE:-}" ] || { perf record -a -g -o "$PROFILE" -- sleep 3 >/dev/null 2>&1 & run --user alice --socket "$tmp/ours-auth" --label "profiled"; wait; }
    measured "$dovecotsid" "dovecot 2.3 auth, sql passdb, {SHA512-CRYPT}" --user bob --socket "$tmp/dovecot/auth"
    measured "$oursid" "saslauthd-rs -a sql, {SHA512-CRYPT}" --user bob --socket "$tmp/ours-auth"
    [ -z "${BASELINE:-}" ] || measured "$basesid" "baseline -a sql, {SHA512-CRYPT}" --user bob --socket "$tmp/baseline-auth"
    "$ceiling" 5 "$secs" "the -n pool's ceiling, SHA512-CRYPT (libxcrypt alone)" "${crypt#\{SHA512-CRYPT\}}"
} | tee -a "$tmp/rows"; done
medians
cpu_medians
