#!/usr/bin/env bash
# The packages, end to end: `cargo install --path .`, `make install DESTDIR=... PREFIX=...`,
# the .deb that `cargo deb` builds (its contents, then installed on this machine with dpkg,
# the daemon run from it as its system user, then removed and purged) and the .rpm that
# rpmbuild makes from packaging/rpm/saslauthd-rs.spec (its contents, with rpm -qlp). Run by scripts/test.sh, as root,
# on a throwaway test machine; it refuses to touch a saslauthd-rs package already installed.
#   scripts/package-test.sh [--build-only]   (--build-only: cargo-deb and the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh
ensure_cargo
fail() { echo "package-test: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v cargo-deb >/dev/null || cargo install --quiet --locked cargo-deb
cargo build --quiet --release --locked --bins
[ "${1:-}" != --build-only ] || exit 0

# The files every package puts in place (Debian's paths; the RPM's differ as Fedora's do).
expected_deb=(
    ./usr/sbin/saslauthd-rs ./usr/sbin/saslpasswd2-rs ./usr/sbin/sasldblistusers2-rs
    ./usr/sbin/testsaslauthd-rs ./usr/sbin/sasldb-convert-rs ./usr/sbin/saslauthd-rs-ctl
    ./usr/lib/saslauthd-rs/saslauthd.wrapper
    ./lib/systemd/system/saslauthd-rs.service ./lib/systemd/system/saslauthd-rs.socket
    ./lib/systemd/system/saslauthd-rs-dovecot.socket
    ./usr/lib/tmpfiles.d/saslauthd-rs.conf ./usr/lib/sysusers.d/saslauthd-rs.conf
    ./etc/saslauthd-rs.toml
    ./usr/share/man/man8/saslauthd-rs.8.gz ./usr/share/man/man8/saslpasswd2-rs.8.gz
    ./usr/share/man/man8/sasldblistusers2-rs.8.gz ./usr/share/man/man8/testsaslauthd-rs.8.gz
    ./usr/share/man/man8/saslauthd-rs-ctl.8.gz
    ./usr/share/man/man5/saslauthd-rs.toml.5.gz
    ./usr/share/bash-completion/completions/saslauthd-rs
    ./usr/share/zsh/vendor-completions/_saslauthd-rs
    ./usr/share/fish/vendor_completions.d/saslauthd-rs.fish
    ./usr/share/doc/saslauthd-rs/examples/saslauthd.service
    ./usr/share/doc/saslauthd-rs/fail2ban/filter.d/saslauthd-rs.conf
)

# 1. cargo install --path . (reusing the release build).
cargo install --quiet --locked --path . --root "$work/cargo-root" --target-dir target
for p in saslauthd-rs saslpasswd2-rs sasldblistusers2-rs testsaslauthd-rs; do
    "$work/cargo-root/bin/$p" --version 2>&1 | grep -q "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ||
        fail "cargo install: $p --version"
done
echo "package-test: cargo install --path . put $(ls "$work/cargo-root/bin" | wc -l) programs in place"

# 2. make install with DESTDIR and PREFIX.
make --quiet install DESTDIR="$work/stage" PREFIX=/usr/local SYSCONFDIR=/usr/local/etc >/dev/null
for f in usr/local/sbin/saslauthd-rs usr/local/lib/systemd/system/saslauthd-rs.service \
    usr/local/share/man/man8/saslauthd-rs.8 usr/local/share/man/man5/saslauthd-rs.toml.5 \
    usr/local/share/bash-completion/completions/saslauthd-rs usr/local/etc/saslauthd-rs.toml \
    usr/local/lib/sysusers.d/saslauthd-rs.conf usr/local/share/doc/saslauthd-rs/examples/saslauthd.service; do
    [ -f "$work/stage/$f" ] || fail "make install: no $f"
done
installed=$(cd "$work/stage" && find . -type f | wc -l)
echo "edited" >> "$work/stage/usr/local/etc/saslauthd-rs.toml"
make --quiet install DESTDIR="$work/stage" PREFIX=/usr/local SYSCONFDIR=/usr/local/etc >/dev/null
tail -1 "$work/stage/usr/local/etc/saslauthd-rs.toml" | grep -q edited ||
    fail "make install overwrote an existing configuration file"
make --quiet uninstall DESTDIR="$work/stage" PREFIX=/usr/local SYSCONFDIR=/usr/local/etc >/dev/null
left=$(cd "$work/stage" && find . -type f | sort)
[ "$left" = "./usr/local/etc/saslauthd-rs.toml" ] || fail "make uninstall left: $left"
echo "package-test: make install DESTDIR PREFIX: $installed files; uninstall kept only the edited configuration"

# 3. The .deb.
deb=$(cargo deb --no-build --quiet --output "$work/")
[ -f "$deb" ] || deb=$(ls "$work"/saslauthd-rs_*.deb)
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|/$||' > "$work/deb.list"
for f in "${expected_deb[@]}"; do
    grep -qx -- "$f" "$work/deb.list" || fail ".deb lacks $f"
done
dpkg-deb -f "$deb" Depends | grep -q adduser || fail ".deb does not depend on adduser"
dpkg-deb -f "$deb" Conffiles 2>/dev/null || true
echo "package-test: $(basename "$deb"): $(wc -l < "$work/deb.list") entries, depends: $(dpkg-deb -f "$deb" Depends)"
if [ "$(id -u)" -ne 0 ]; then
    echo "package-test: SKIPPED installing the .deb (needs root)"
elif dpkg-query -W -f='${Status}' saslauthd-rs 2>/dev/null | grep -q installed; then
    echo "package-test: SKIPPED installing the .deb: a saslauthd-rs package is installed already"
else
    dpkg -i "$deb" >/dev/null
    /usr/sbin/saslauthd-rs --version 2>&1 | grep -q saslauthd-rs || fail "installed daemon"
    getent passwd saslauthd-rs >/dev/null || fail "no user saslauthd-rs"
    id -gn saslauthd-rs | grep -qx sasl || fail "saslauthd-rs's group is not sasl"
    [ -f /etc/saslauthd-rs.toml ] || fail "no /etc/saslauthd-rs.toml"
    [ ! -e /etc/systemd/system/multi-user.target.wants/saslauthd-rs.service ] ||
        fail "the package enabled the service"
    [ ! -e /etc/systemd/system/sockets.target.wants/saslauthd-rs.socket ] ||
        fail "the package enabled the socket"
    man -w saslauthd-rs.toml >/dev/null 2>&1 || fail "man saslauthd-rs.toml(5) not found"
    # The installed daemon as the package's user, on a store and socket of this test's.
    mkdir -p "$work/srv" && chmod 755 "$work" "$work/srv"
    /usr/sbin/saslpasswd2-rs -p -c -f "$work/srv/sasldb2" -u example.org alice <<< 'packaged'
    chgrp sasl "$work/srv/sasldb2" && chmod 640 "$work/srv/sasldb2"
    /usr/sbin/saslauthd-rs -f --config /etc/saslauthd-rs.toml -m "$work/srv/run" \
        --sasldb "$work/srv/sasldb2" --user saslauthd-rs --group sasl 2> "$work/daemon.log" &
    daemon=$!
    for _ in $(seq 100); do [ -S "$work/srv/run/mux" ] && break; sleep 0.05; done
    reply=$(/usr/sbin/testsaslauthd-rs -f "$work/srv/run/mux" -u alice -r example.org -p packaged) ||
        fail "the packaged daemon refused: $reply $(cat "$work/daemon.log")"
    user=$(ps -o user= -p "$daemon")
    kill -TERM "$daemon"; wait "$daemon" || fail "the packaged daemon did not stop cleanly"
    [ "$user" = saslauthd-rs ] || fail "the packaged daemon ran as $user"
    echo "package-test: dpkg -i: user saslauthd-rs (group sasl) made, nothing enabled; the installed daemon ran as $user and answered: $reply"
    dpkg -r saslauthd-rs >/dev/null
    [ ! -e /usr/sbin/saslauthd-rs ] || fail "dpkg -r left the daemon"
    [ -f /etc/saslauthd-rs.toml ] || fail "dpkg -r removed the configuration file"
    dpkg -P saslauthd-rs >/dev/null 2>"$work/purge.log" || fail "dpkg -P: $(cat "$work/purge.log")"
    [ ! -e /etc/saslauthd-rs.toml ] || fail "dpkg -P left the configuration file"
    ! getent passwd saslauthd-rs >/dev/null || fail "dpkg -P left the user"
    echo "package-test: dpkg -r kept /etc/saslauthd-rs.toml, dpkg -P removed it and the user"
fi

# 4. The .rpm, from packaging/rpm/saslauthd-rs.spec (Fedora's BuildRequires are not Debian
# packages: --nodeps; the release build above is reused in place).
if command -v rpmbuild >/dev/null; then
    rpmbuild -bb --build-in-place --nodeps --quiet --define "_topdir $work/rpmbuild" \
        packaging/rpm/saslauthd-rs.spec >"$work/rpmbuild.log" 2>&1 ||
        fail "rpmbuild: $(tail -20 "$work/rpmbuild.log")"
    rpm_file=$(ls "$work"/rpmbuild/RPMS/*/saslauthd-rs-*.rpm)
    rpm -qlp "$rpm_file" 2>/dev/null > "$work/rpm.list"
    for f in /usr/sbin/saslauthd-rs /usr/sbin/saslpasswd2-rs /usr/lib/systemd/system/saslauthd-rs.service \
        /usr/lib/sysusers.d/saslauthd-rs.conf /usr/lib/tmpfiles.d/saslauthd-rs.conf /etc/saslauthd-rs.toml \
        /usr/share/zsh/site-functions/_saslauthd-rs /usr/share/bash-completion/completions/saslauthd-rs \
        /usr/lib/saslauthd-rs/saslauthd.wrapper; do
        grep -qx -- "$f" "$work/rpm.list" || fail ".rpm lacks $f"
    done
    grep -q '^/usr/share/man/man8/saslauthd-rs\.8' "$work/rpm.list" || fail ".rpm lacks the manual"
    rpm -qp --configfiles "$rpm_file" 2>/dev/null | grep -qx /etc/saslauthd-rs.toml ||
        fail ".rpm: /etc/saslauthd-rs.toml is not a configuration file"
    rpm -qp --scripts "$rpm_file" 2>/dev/null | grep -q systemd-sysusers || fail ".rpm: no sysusers"
    echo "package-test: $(basename "$rpm_file"): $(wc -l < "$work/rpm.list") files (rpm -qlp)"
else
    echo "package-test: SKIPPED the .rpm (no rpmbuild)"
fi
echo "package-test: ok"
