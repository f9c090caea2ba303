#!/usr/bin/env bash
# Quick start, step 2: install the test peers from Debian's packages (Cyrus SASL's own
# saslauthd, testsaslauthd, saslpasswd2 and sasldblistusers2, libsasl2, the LMDB, Berkeley DB
# and GDBM tools and libraries, Postfix, Dovecot (auth, SQL drivers, IMAP server), MIT
# Kerberos's KDC (no realm: the tests make their own), Redis (redis-tools holds the server;
# the tests run their own), 389 Directory Server (no instance: the tests make their own);
# sendmail, fail2ban, slapd, Samba's AD DC, PostgreSQL's and MariaDB's servers unpacked
# beside), node's oidc-provider from npm, then run the whole test suite against them, plus the lint gates.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh
# Postfix is installed unconfigured: the tests run their own throwaway instances.
if command -v debconf-set-selections >/dev/null 2>&1; then
    echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
fi
# No package may start a service while it is installed (dovecot-core, postfix, the Dovecot SQL
# drivers' restart): policy-rc.d refuses every start for the length of the installs.
refused_starts=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 755 /usr/sbin/policy-rc.d
    refused_starts=1
    trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt_install build-essential pkg-config libpam0g-dev libclang-dev libkrb5-dev libsqlite3-dev \
    sasl2-bin libsasl2-modules lmdb-utils db5.3-util gdbmtool python3-gdbm util-linux \
    coreutils file whois openssl libpam-wrapper libnss-wrapper libpam-modules \
    postfix swaks libauthen-sasl-perl libdigest-hmac-perl dovecot-core iproute2 systemd \
    dovecot-sqlite dovecot-pgsql dovecot-mysql dovecot-imapd krb5-kdc krb5-admin-server redis-tools \
    groff-base man-db zsh fish rpm ldap-utils tmux 389-ds-base \
    samba-common-bin python3-samba samba-dsdb-modules samba-ad-provision samba-vfs-modules tdb-tools \
    libargon2-1 libldap-2.5-0 libltdl7 libodbc2 libperl5.36 libwrap0 \
    sqlite3 postgresql-client-15 libicu72 libxml2 liblz4-1 libzstd1 libgssapi-krb5-2 tzdata \
    libpcre2-8-0 liburing2 libaio1 libnuma1 libedit2 libncurses6
# Peers that would start a system service if installed (or conflict with one) are unpacked
# instead, once, into target/peers/NAME, from where the tests run them in throwaway
# instances: unpack NAME FILE-THAT-SHOWS-IT-IS-THERE PACKAGE...; exports the root as
# SASLAUTHD_RS_<NAME>.
unpack() {
    local name=$1 marker=$2; shift 2
    local root=target/peers/$name
    if [ ! -e "$root/$marker" ]; then
        local debs
        debs=$(mktemp -d)
        (cd "$debs" && apt-get download "$@" >/dev/null 2>&1) || {
            as_root apt-get update -qq
            (cd "$debs" && apt-get download "$@" >/dev/null)
        }
        rm -rf "$root" && mkdir -p "$root"
        for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
        rm -rf "$debs"
    fi
    export "SASLAUTHD_RS_${name^^}=$PWD/$root"
}
# sendmail conflicts with postfix (the tests run it in private namespaces; tests/sendmail.rs).
unpack sendmail usr/libexec/sendmail/sendmail sendmail-bin sendmail-base sendmail-cf m4
# fail2ban: installing it would start a banning service on this machine.
unpack fail2ban usr/bin/fail2ban-regex fail2ban
# slapd: installing it would configure and start a system directory; its libraries are
# installed above.
unpack slapd usr/sbin/slapd slapd
# Samba's AD domain controller: installing `samba` would start smbd and nmbd. Its tools,
# libraries and provisioning data are installed above; the daemon's package is unpacked.
unpack samba usr/sbin/samba samba
# PostgreSQL's server: installing it would create and start a system cluster. The SQL tests
# run their own (initdb in a temporary directory); its libraries and psql are installed above.
unpack postgresql usr/lib/postgresql/15/bin/postgres postgresql-15
# MariaDB's server, likewise (the tests run mariadb-install-db in a temporary directory).
unpack mariadb usr/sbin/mariadbd mariadb-server-core mariadb-server mariadb-client-core
[ -z "$refused_starts" ] || as_root rm -f /usr/sbin/policy-rc.d
# The OpenID provider the [oauth2] tests run (node's oidc-provider 8, which Debian 12's Node 18
# runs; the version and its dependencies pinned by tests/oidc/package-lock.json), installed
# once into target/peers/oidc. Node and npm from Debian unless the machine has them.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
if [ ! -e target/peers/oidc/node_modules/oidc-provider/package.json ] ||
    ! cmp -s tests/oidc/package-lock.json target/peers/oidc/package-lock.json; then
    rm -rf target/peers/oidc && mkdir -p target/peers/oidc
    cp tests/oidc/package.json tests/oidc/package-lock.json target/peers/oidc/
    (cd target/peers/oidc && npm ci --no-audit --no-fund --loglevel=error)
fi
export SASLAUTHD_RS_OIDC=$PWD/target/peers/oidc
# The OpenMetrics parser the metrics test reads the admin socket's text with.
python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check prometheus-client 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages prometheus-client
ensure_cargo
# One build of everything, run once: incremental compilation's caches would only add to the
# disk the suite needs.
export CARGO_INCREMENTAL=0
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --no-run
# The steps after the tests build a good deal: the release build that the packages are made
# of, the fuzz targets, the cargo tools both need. That is built while the tests run, whose
# servers leave about half of the CPU idle: in the background, at SCHED_IDLE and in the idle
# I/O class. Not earlier: started beside clippy and the test build, even at SCHED_IDLE, it
# made the test build take 12 min instead of 5 on a 2-vCPU machine, and clippy 3.5 min
# instead of 2. The steps themselves then find it done; whatever failed here they build
# again, and report. It is stopped if this script stops first. The builds are the steps' own
# (their --build-only), so they stay the same.
prebuild() {
    chrt --idle --pid 0 "$BASHPID" 2>/dev/null || renice -n 19 -p "$BASHPID" >/dev/null || true
    ionice -c 3 -p "$BASHPID" 2>/dev/null || true
    scripts/package-test.sh --build-only
    [ "${FUZZ_SECONDS:-20}" = 0 ] || scripts/fuzz.sh --build-only
}
export -f prebuild
log=$(mktemp)
prebuild_log=$(mktemp)
# Its own session, so that all of it (cargo, rustc) can be stopped at once.
setsid bash -c prebuild >"$prebuild_log" 2>&1 &
prebuild_pid=$!
# (`|| true`: under `set -e` a failing command in the trap would become the script's status.)
trap 'kill -- -"$prebuild_pid" 2>/dev/null || true; rm -f "$log" "$prebuild_log"' EXIT
set +e
# Peers are required here: a missing one fails instead of skipping. Every test binary runs
# even after one fails, so one failure hides no other suite's result.
SASLAUTHD_RS_REQUIRE_PEERS=1 cargo test --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
wait "$prebuild_pid" || echo "test.sh: the background build failed; the steps below build again"
set -e
# The packages: cargo install, make install, the .deb installed and removed, the .rpm.
package_status=0
scripts/package-test.sh || package_status=$?
# Every fuzz target, bounded (FUZZ_SECONDS each; 0 skips them).
fuzz_status=0
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
    scripts/fuzz.sh "${FUZZ_SECONDS:-20}" || fuzz_status=$?
fi
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
[ "$status" -eq 0 ] || exit "$status"
[ "$package_status" -eq 0 ] || exit "$package_status"
exit "$fuzz_status"
