#!/usr/bin/env bash
# `-a rimap` against Debian's Cyrus `saslauthd -a rimap` (its Debian default `-n 5`, and
# `-n 16`, one process per client) on the same throwaway Dovecot 2.3 IMAP server, in the same
# run; with the do-nothing saslauthd server (the socket's ceiling) and a client that logs in
# to the IMAP server directly, with no saslauthd at all (the IMAP server's own work: the
# ceiling of any rimap). Every request is a right password, so every one is a new IMAP
# connection, a LOGIN and, at Dovecot, an imap process (reused: service_count = 0). Then the
# same with 5% wrong passwords against a second Dovecot with its default failure delay (2 s):
# what a password-guessing client costs everyone else.
#
#   benches/compare-rimap.sh [CLIENTS] [SECONDS]
#
# Needs sasl2-bin, dovecot-core and dovecot-imapd; loopback only.
clients=${1:-16}
secs=${2:-5}
. "$(dirname "$0")/common.sh"
bench_setup
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mkdir -p "$tmp/imapd/home"
chmod 1777 "$tmp/imapd/home"
echo 'alice:{PLAIN}secret::::::' > "$tmp/imapd/users"
# imapd NAME PORT FAILURE-DELAY: a Dovecot IMAP server in $tmp/NAME; sets dovecot_sid.
imapd() {
    mkdir -p "$tmp/$1/run" "$tmp/$1/state"
    cat > "$tmp/$1/dovecot.conf" <<CONF
protocols = imap
listen = 127.0.0.1
base_dir = $tmp/$1/run
state_dir = $tmp/$1/state
log_path = /dev/null
ssl = no
disable_plaintext_auth = no
auth_failure_delay = $3
mail_location = maildir:~/Maildir
# One user from one address, many times at once.
mail_max_userip_connections = 1000
passdb {
  driver = passwd-file
  args = $tmp/imapd/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$tmp/imapd/home/%u
}
service imap-login {
  inet_listener imap {
    port = $2
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  process_min_avail = $(nproc)
}
service imap {
  service_count = 0
  process_min_avail = $clients
}
# Every login comes from one address: no per-address penalty.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
CONF
    start_server dovecot -F -c "$tmp/$1/dovecot.conf"
    dovecot_sid=${bench_pids[-1]}
    for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$2") 2>/dev/null && break; sleep 0.1; done
}
# Dovecot's default failure delay (2 s) on the second one, for the rows with wrong passwords.
port=$(free_port) delayed_port=$(free_port)
imapd delayed "$delayed_port" 2s
imapd imapd "$port" 0

start_server "$bin/examples/null-server" saslauthd "$tmp/null-mux"
wait_socket "$tmp/null-mux"
start_mux cyrus5 /usr/sbin/saslauthd -a rimap -O "127.0.0.1/$port" -d -n 5
cyrus5_sid=${bench_pids[-1]}
start_mux cyrus16 /usr/sbin/saslauthd -a rimap -O "127.0.0.1/$port" -d -n "$clients"
cyrus16_sid=${bench_pids[-1]}
start_mux ours "$bin/saslauthd-rs" -a rimap -O "127.0.0.1/$port" -f --failure-delay 0
ours_sid=${bench_pids[-1]}
start_mux cyrus5-delayed /usr/sbin/saslauthd -a rimap -O "127.0.0.1/$delayed_port" -d -n 5
start_mux ours-delayed "$bin/saslauthd-rs" -a rimap -O "127.0.0.1/$delayed_port" -f --failure-delay 0

# A row with failures still prints (and says how many): the bench's own exit status is not
# the script's.
run() { "$bin/saslauthd-bench" --clients "$clients" --duration "$secs" --user alice --password secret "$@" || true; }
# CPU time (clock ticks) of every process of the session led by $1, the reaped children's too.
ticks() { local t=0 p; for p in $(ps -s "$1" -o pid=); do
    t=$((t + $(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
# `run` of a saslauthd whose session is $1, then the CPU each login cost it and Dovecot.
measured() { local sid=$1; shift
    local d0 s0 out d1 s1 n
    d0=$(ticks "$dovecot_sid"); s0=$(ticks "$sid")
    out=$(run "$@"); echo "$out"
    d1=$(ticks "$dovecot_sid"); s1=$(ticks "$sid")
    n=$(echo "$out" | sed -n 's/.*(\([0-9]*\) requests.*/\1/p')
    echo "#   CPU per login: Dovecot $(( (d1 - d0) * 1000000 / $(getconf CLK_TCK) / n )) us, the saslauthd $(( (s1 - s0) * 1000000 / $(getconf CLK_TCK) / n )) us" >&2
}
echo "# $(nproc) cores, $clients clients, $secs s each, ${ROUNDS:-3} rounds, Dovecot $(dovecot --version | cut -d' ' -f1) IMAP on loopback; $(date -u +%F)"
for _ in $(seq "${ROUNDS:-3}"); do {
    run --socket "$tmp/null-mux" --label "do-nothing saslauthd server"
    python3 "$here/benches/imap_logins.py" 127.0.0.1 "$port" alice secret "$clients" "$secs" \
        "IMAP LOGIN straight to Dovecot, no saslauthd"
    measured "$cyrus5_sid" --socket "$tmp/cyrus5/mux" --label "cyrus saslauthd -a rimap -n 5"
    measured "$cyrus16_sid" --socket "$tmp/cyrus16/mux" --label "cyrus saslauthd -a rimap -n $clients"
    measured "$ours_sid" --socket "$tmp/ours/mux" --label "saslauthd-rs -a rimap"
    run --socket "$tmp/cyrus5-delayed/mux" --fail-percent 5 --label "cyrus -n 5, 5% wrong passwords, IMAP failure delay 2 s"
    run --socket "$tmp/ours-delayed/mux" --fail-percent 5 --label "saslauthd-rs, 5% wrong passwords, IMAP failure delay 2 s"
} | tee -a "$tmp/rows"; done
medians
