# Sourced by the compare-*.sh benchmarks: builds the release binaries, makes a temporary
# directory, starts servers in their own sessions and stops them all at exit.
#   bench_setup            sets $here, $bin, $tmp; installs the cleanup; builds the binaries
#                          and the do-nothing servers ($bin/examples/null-server)
#   start_server CMD...    runs CMD in a new session (its process group is killed at exit)
#   wait_socket PATH...    waits up to 10 s for each Unix socket, fails otherwise
#   start_mux NAME CMD...  starts a saslauthd (ours or Cyrus's) with `-m $tmp/NAME` added
#                          and waits for its socket, $tmp/NAME/mux
#   baseline ARGS...       `run ARGS` (the script's own) when BASELINE names a binary
#   metrics_off ARGS...    `run ARGS` when METRICS_OFF=1 (the script then also runs a
#                          saslauthd-rs with `metrics = false`: what counting costs)
#   metrics_off_config     writes that instance's config file and prints its path
#   dovecot_conf MECHS EXTRA PASSDB
#                          writes $tmp/dovecot/dovecot.conf: Dovecot 2.3 with only its auth
#                          service, its socket at $tmp/dovecot/auth, no failure delay, the
#                          mechanisms MECHS, the settings EXTRA, and the passdb block's body
#   medians                after rounds of rows (saved with `| tee -a "$tmp/rows"`): the
#                          median rate of each row, and its share of the first row's
set -euo pipefail
bench_pids=()

bench_setup() {
    here=$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)
    cd "$here"
    cargo build --release --quiet --bins --example null-server
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

start_mux() {
    local name=$1; shift
    mkdir -p "$tmp/$name"
    start_server "$@" -m "$tmp/$name"
    wait_socket "$tmp/$name/mux"
}

baseline() {
    [ -z "${BASELINE:-}" ] || run "$@"
}

metrics_off() {
    [ "${METRICS_OFF:-}" != 1 ] || run "$@"
}

metrics_off_config() {
    printf 'metrics = false\n' > "$tmp/metrics-off.toml"
    echo "$tmp/metrics-off.toml"
}

dovecot_conf() {
    local mechs=$1 extra=$2 passdb=$3
    mkdir -p "$tmp/dovecot/run" "$tmp/dovecot/state"
    {
        cat <<CONF
protocols = none
listen = 127.0.0.1
base_dir = $tmp/dovecot/run
state_dir = $tmp/dovecot/state
log_path = $tmp/dovecot/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = $mechs
auth_failure_delay = 0
$extra
passdb {
$passdb
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/tmp
}
service auth {
  unix_listener $tmp/dovecot/auth {
    mode = 0666
  }
}
CONF
        # No login process listens anywhere (protocols = none leaves their defaults).
        for service in imap-login:imap,imaps pop3-login:pop3,pop3s submission-login:submission; do
            echo "service ${service%%:*} {"
            for name in $(echo "${service#*:}" | tr , ' '); do
                printf '  inet_listener %s {\n    port = 0\n  }\n' "$name"
            done
            echo "}"
        done
    } > "$tmp/dovecot/dovecot.conf"
}

# The median rate and p99 of each label over the rounds, in first-seen order, with the rate's
# share of the first label's (the do-nothing server's, when it is measured first).
medians() {
    echo "# medians of ${ROUNDS:-1} rounds: req/s, % of the first row's, p99"
    awk -F': ' '
        function median(key, c,    a, b, t, v) {
            for (a = 1; a <= c; a++) v[a] = vals[key, a]
            for (a = 1; a <= c; a++) for (b = a + 1; b <= c; b++) if (v[b] < v[a]) { t = v[a]; v[a] = v[b]; v[b] = t }
            return (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
        }
        / req\/s / {
            label = $1; split($2, f, " ")
            if (!(label in n)) order[++labels] = label
            c = ++n[label]; vals["r" label, c] = f[1]
            for (i = 1; i < length(f); i++) if (f[i] == "p99") vals["p" label, c] = f[i + 1]
        }
        END {
            for (i = 1; i <= labels; i++) {
                l = order[i]; m = median("r" l, n[l]); p = median("p" l, n[l])
                if (i == 1) first = m
                printf "%-58s %8d  %4.0f%%  p99 %6d us\n", l, m, 100 * m / first, p
            }
        }' "$tmp/rows"
}
