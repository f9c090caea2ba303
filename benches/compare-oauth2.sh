#!/usr/bin/env bash
# [oauth2] on the Dovecot socket against Dovecot 2.3's oauth2 passdb, in the same run, on one
# throwaway OpenID provider (node's oidc-provider, tests/oidc/provider.mjs, on a loopback
# port): OAUTHBEARER with an RS256 and an ES256 JWT verified here (mode = "jwt", with the
# verified claims kept for 60 s, the default, and verified on every login), XOAUTH2 with
# an opaque token introspected (mode = "introspection") with the cache on (cache_ttl 60) and
# off, and Dovecot's oauth2 passdb introspecting the same opaque token (auth cache off); with
# AUTH PLAIN from the sasldb and the thread-per-connection do-nothing server (the first row,
# which the percentages are of). Every token is valid.
#
#   benches/compare-oauth2.sh [CLIENTS] [SECONDS]
#
# Needs dovecot-core and the provider installed as scripts/test.sh installs it
# (SASLAUTHD_RS_OIDC, default target/peers/oidc).
clients=${1:-16}
secs=${2:-5}
. "$(dirname "$0")/common.sh"
bench_setup
oidc=${SASLAUTHD_RS_OIDC:-$here/target/peers/oidc}
[ -e "$oidc/node_modules/oidc-provider/package.json" ] || { echo "no oidc-provider in $oidc (run scripts/test.sh)" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cp tests/oidc/provider.mjs "$oidc/provider-bench.mjs"
setsid node "$oidc/provider-bench.mjs" "$port" b1 > "$tmp/provider.log" 2>&1 &
bench_pids+=($!)
for _ in $(seq 200); do grep -q READY "$tmp/provider.log" 2>/dev/null && break; sleep 0.05; done
grep -q READY "$tmp/provider.log" || { cat "$tmp/provider.log" >&2; exit 1; }
issuer=http://127.0.0.1:$port
token() {
    python3 - "$issuer/token" "$@" <<'PY'
import base64, json, sys, urllib.parse, urllib.request
url, extra = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
form = {"grant_type": "client_credentials", "scope": "mail", "username": "alice@example.org", **extra}
req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode())
req.add_header("Authorization", "Basic " + base64.b64encode(b"mail-client:mail-client-secret").decode())
print(json.load(urllib.request.urlopen(req))["access_token"])
PY
}
rs256=$(token alg=RS256 ttl=3600)
es256=$(token alg=ES256 ttl=3600)
opaque=$(token format=opaque ttl=3600)

"$bin/saslpasswd2-rs" -f "$tmp/sasldb2" -c -p -u example.org alice <<< secret
ours() {
    local name=$1 table=$2
    printf '[oauth2]\n%s\n' "$table" > "$tmp/$name.toml"
    setsid "$bin/saslauthd-rs" -a sasldb --sasldb "$tmp/sasldb2" -f -m "$tmp/$name-run" \
        --failure-delay 0 --config "$tmp/$name.toml" --dovecot-socket "$tmp/$name-auth" \
        >/dev/null 2>"$tmp/$name.log" &
    bench_pids+=($!)
}
ours jwt "mode = \"jwt\"
issuer = \"$issuer\"
audience = \"urn:smtp\""
ours jwt-nocache "mode = \"jwt\"
issuer = \"$issuer\"
audience = \"urn:smtp\"
cache_ttl = 0"
introspection="mode = \"introspection\"
issuer = \"$issuer\"
audience = \"urn:smtp\"
client_id = \"smtp-server\"
client_secret = \"smtp-server-secret\""
ours cached "$introspection
cache_ttl = 60"
ours uncached "$introspection
cache_ttl = 0"
cat > "$tmp/dovecot-oauth2.conf.ext" <<CONF
introspection_mode = post
introspection_url = http://smtp-server:smtp-server-secret@127.0.0.1:$port/token/introspection
username_attribute = email
active_attribute = active
active_value = true
CONF
dovecot_conf "plain xoauth2 oauthbearer" "auth_cache_size = 0" "  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $tmp/dovecot-oauth2.conf.ext"
start_server dovecot -F -c "$tmp/dovecot/dovecot.conf"
start_server "$bin/examples/null-server" dovecot-threads "$tmp/null-threads-auth"
wait_socket "$tmp/dovecot/auth" "$tmp/null-threads-auth" "$tmp/jwt-auth" "$tmp/jwt-nocache-auth" \
    "$tmp/cached-auth" "$tmp/uncached-auth"

run() { "$bin/saslauthd-bench" --protocol dovecot --clients "$clients" --duration "$secs" \
        --user alice@example.org "$@"; }
echo "# $(nproc) cores, $clients persistent connections, $secs s each, oidc-provider on loopback; $(date -u +%F)"
for round in $(seq "${ROUNDS:-1}"); do {
    run --socket "$tmp/null-threads-auth" --password secret --label "do-nothing server, a thread per connection"
    run --socket "$tmp/jwt-auth" --password secret --label "saslauthd-rs AUTH PLAIN, sasldb"
    run --socket "$tmp/jwt-auth" --mech oauthbearer --password "$rs256" --label "saslauthd-rs OAUTHBEARER, jwt RS256, cache 60 s"
    run --socket "$tmp/jwt-nocache-auth" --mech oauthbearer --password "$rs256" --label "saslauthd-rs OAUTHBEARER, jwt RS256, no cache"
    run --socket "$tmp/jwt-nocache-auth" --mech oauthbearer --password "$es256" --label "saslauthd-rs OAUTHBEARER, jwt ES256, no cache"
    run --socket "$tmp/cached-auth" --mech xoauth2 --password "$opaque" --label "saslauthd-rs XOAUTH2, introspection, cache 60 s"
    run --socket "$tmp/uncached-auth" --mech xoauth2 --password "$opaque" --label "saslauthd-rs XOAUTH2, introspection, no cache"
    run --socket "$tmp/dovecot/auth" --mech xoauth2 --password "$opaque" --label "dovecot 2.3 XOAUTH2, oauth2 passdb (introspection)"
} | tee -a "$tmp/rows"; done
medians
