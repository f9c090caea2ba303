#!/usr/bin/env bash
# Measures saslauthd-rs -a ldap (bind) against Debian's Cyrus saslauthd -a ldap -n 5 with the
# same saslauthd.conf and the same throwaway slapd (with syncprov, so ours follows its changes;
# and ours again with ldap_follow_changes: no, a search on every request), a do-nothing
# saslauthd-protocol server (the ceiling of the socket and the load generator) and
# saslauthd-rs -a sasldb (the path without a directory), same run, ROUNDS rounds (default 3),
# rates as medians.
#
#   benches/compare-ldap.sh [CLIENTS] [SECONDS]
#
# Needs Debian's sasl2-bin and ldap-utils, and slapd unpacked under target/peers/slapd (as
# scripts/test.sh does) or SASLAUTHD_RS_SLAPD. Loopback only: slapd on 127.0.0.1 and an
# ldapi socket in a temporary directory.
clients=${1:-16}
secs=${2:-10}
. "$(dirname "$0")/common.sh"
bench_setup
slapd_root=${SASLAUTHD_RS_SLAPD:-$here/target/peers/slapd}
[ -x "$slapd_root/usr/sbin/slapd" ] || { echo "no slapd in $slapd_root (run scripts/test.sh once)" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$tmp/slapd/db"
schema=$slapd_root/etc/ldap/schema
cat > "$tmp/slapd/slapd.conf" <<CONF
include $schema/core.schema
include $schema/cosine.schema
include $schema/inetorgperson.schema
include $schema/nis.schema
modulepath $slapd_root/usr/lib/ldap
moduleload back_mdb
pidfile $tmp/slapd/pid
database mdb
maxsize 104857600
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
rootpw adminpw
directory $tmp/slapd/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
moduleload syncprov
overlay syncprov
CONF
ldapi="ldapi://$(printf %s "$tmp/slapd/ldapi" | sed 's|/|%2F|g')/"
start_server env LD_LIBRARY_PATH="$slapd_root/usr/lib/x86_64-linux-gnu" \
    "$slapd_root/usr/sbin/slapd" -f "$tmp/slapd/slapd.conf" -h "ldap://127.0.0.1:$port/ $ldapi" -d 0
for _ in $(seq 200); do [ -S "$tmp/slapd/ldapi" ] && break; sleep 0.05; done
ldapadd -x -H "$ldapi" -D cn=admin,dc=example,dc=org -w adminpw >/dev/null <<LDIF
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: alice
sn: alice
userPassword: secret
LDIF
printf 'ldap_servers: ldap://127.0.0.1:%s/\nldap_search_base: ou=people,dc=example,dc=org\nldap_filter: (uid=%%u)\n' "$port" > "$tmp/saslauthd.conf"
# The same settings, but searched on every request although slapd offers its changes (syncprov).
{ cat "$tmp/saslauthd.conf"; echo 'ldap_follow_changes: no'; } > "$tmp/searching.conf"
echo secret | "$bin/saslpasswd2-rs" -p -c -u example.org -f "$tmp/sasldb2" alice

start_server "$bin/examples/null-server" saslauthd "$tmp/null-mux"
wait_socket "$tmp/null-mux"
start_mux cyrus /usr/sbin/saslauthd -a ldap -O "$tmp/saslauthd.conf" -d -n 5
start_mux ours "$bin/saslauthd-rs" -a ldap -O "$tmp/saslauthd.conf" -f --failure-delay 0
start_mux cached "$bin/saslauthd-rs" -a ldap -O "$tmp/saslauthd.conf" -f --failure-delay 0 -c
start_mux per-core "$bin/saslauthd-rs" -a ldap -O "$tmp/saslauthd.conf" -f --failure-delay 0 --threads 0
start_mux searching "$bin/saslauthd-rs" -a ldap -O "$tmp/searching.conf" -f --failure-delay 0
start_mux searching-cached "$bin/saslauthd-rs" -a ldap -O "$tmp/searching.conf" -f --failure-delay 0 -c
start_mux sasldb "$bin/saslauthd-rs" -a sasldb -f --sasldb "$tmp/sasldb2" --failure-delay 0

run() { "$bin/saslauthd-bench" --clients "$clients" --duration "$secs" --user alice --password secret "$@"; }
echo "# $(nproc) cores, $clients clients, $secs s each, ${ROUNDS:-3} rounds; $(date -u +%F)"
for _ in $(seq "${ROUNDS:-3}"); do
    run --socket "$tmp/null-mux" --label "do-nothing saslauthd server" | tee -a "$tmp/rows"
    run --socket "$tmp/cyrus/mux" --label "cyrus saslauthd -a ldap -n 5 (bind)" | tee -a "$tmp/rows"
    run --socket "$tmp/ours/mux" --label "saslauthd-rs -a ldap (bind, changes followed)" | tee -a "$tmp/rows"
    run --socket "$tmp/per-core/mux" --label "saslauthd-rs -a ldap --threads 0, one per core (bind, changes followed)" | tee -a "$tmp/rows"
    run --socket "$tmp/cached/mux" --label "saslauthd-rs -a ldap -c (changes followed)" | tee -a "$tmp/rows"
    run --socket "$tmp/searching/mux" --label "saslauthd-rs -a ldap (bind, ldap_follow_changes no)" | tee -a "$tmp/rows"
    run --socket "$tmp/searching-cached/mux" --label "saslauthd-rs -a ldap -c (ldap_follow_changes no)" | tee -a "$tmp/rows"
    run --socket "$tmp/sasldb/mux" --realm example.org --label "saslauthd-rs -a sasldb (reference)" | tee -a "$tmp/rows"
done
medians
