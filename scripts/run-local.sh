#!/usr/bin/env bash
# Quick start, step 1: install what is needed, build, and run saslauthd-rs in the foreground
# on a local sasldb store and a local socket directory (nothing under /etc or /run):
#   store  ./local/sasldb2        socket ./local/run/mux
# On the first run it adds a user "demo" (realm "localhost") with a random password and
# prints how to test it. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh
# libpam0g-dev and libclang-dev: pam-client generates its PAM bindings with bindgen;
# libkrb5-dev: -a kerberos5 links MIT's libkrb5; libsqlite3-dev: -a sql's SQLite driver links
# Debian's libsqlite3 (which gets Debian's security updates) rather than building its own copy.
apt_install build-essential pkg-config libpam0g-dev libclang-dev libkrb5-dev libsqlite3-dev
ensure_cargo
cargo build --release --bins
bin=target/release
mkdir -p local
if [ ! -s local/sasldb2 ]; then
    password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
    printf '%s\n' "$password" | "$bin/saslpasswd2-rs" -p -c -u localhost -f local/sasldb2 demo
    printf 'Created local/sasldb2 with user demo@localhost, password: %s\n' "$password"
fi
cat <<MSG
saslauthd-rs is starting on $(pwd)/local/run/mux. In another terminal:
  $bin/testsaslauthd-rs -f local/run/mux -u demo -r localhost -p <password>
  $bin/saslpasswd2-rs -f local/sasldb2 -c -u example.org alice     # add a user
  $bin/sasldblistusers2-rs -f local/sasldb2                          # list users
MSG
exec "$bin/saslauthd-rs" -a sasldb -d -m "$(pwd)/local/run" --sasldb "$(pwd)/local/sasldb2" --realm localhost
