#!/usr/bin/env bash
# A throwaway Postfix for the tests: its own config, queue and data directories under DIR,
# smtpd on 127.0.0.1:PORT (not chrooted), nothing under /etc/postfix or /var/spool/postfix
# touched. SASL goes to saslauthd-rs either way Postfix can reach it:
#   instance.sh start DIR PORT dovecot SOCKET   smtpd_sasl_type = dovecot, path SOCKET
#   instance.sh start DIR PORT cyrus MUX        smtpd_sasl_type = cyrus, libsasl2 ->
#                                               pwcheck_method saslauthd, saslauthd_path MUX
#   instance.sh start DIR PORT auxprop SASLDB   smtpd_sasl_type = cyrus, libsasl2 reads the
#                                               sasldb2 file itself (pwcheck_method auxprop)
#   instance.sh stop DIR
# POSTFIX_MAIN_EXTRA: lines appended to main.cf (a later line wins in Postfix).
# POSTFIX_SMTPD_CONF: smtpd.conf as a guide has it (cyrus and auxprop types); the socket or
# file path is added as saslauthd_path or sasldb_path.
set -euo pipefail
cmd=$1 dir=$2
if [ "$cmd" = stop ]; then
    if [ -f "$dir/master.pid" ]; then kill "$(cat "$dir/master.pid")" 2>/dev/null || true; fi
    exit 0
fi
port=$3 type=$4 socket=$5
mkdir -p "$dir/etc/sasl" "$dir/spool" "$dir/data"
case $type in
    dovecot) sasl="smtpd_sasl_type = dovecot
smtpd_sasl_path = $socket" ;;
    cyrus) sasl="smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $dir/etc/sasl"
        if [ -n "${POSTFIX_SMTPD_CONF:-}" ]; then
            printf '%s\nsaslauthd_path: %s\n' "$POSTFIX_SMTPD_CONF" "$socket"
        else
            printf 'pwcheck_method: saslauthd\nsaslauthd_path: %s\nmech_list: PLAIN LOGIN\n' "$socket"
        fi > "$dir/etc/sasl/smtpd.conf" ;;
    auxprop) sasl="smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd"
        # What the admin guides say, read from <config_directory>/sasl/smtpd.conf as
        # Debian's Postfix does, plus the file to read.
        if [ -n "${POSTFIX_SMTPD_CONF:-}" ]; then
            printf '%s\nsasldb_path: %s\n' "$POSTFIX_SMTPD_CONF" "$socket"
        else
            printf 'pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: cram-md5 digest-md5 plain login\nsasldb_path: %s\n' "$socket"
        fi > "$dir/etc/sasl/smtpd.conf" ;;
    *) echo "unknown type $type" >&2; exit 2 ;;
esac
cat > "$dir/etc/main.cf" <<MAIN
compatibility_level = 3.6
config_directory = $dir/etc
queue_directory = $dir/spool
data_directory = $dir/data
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
myhostname = postfix.test
default_transport = error:test
relay_transport = error:test
smtpd_peername_lookup = no
maillog_file = $dir/postfix.log
maillog_file_prefixes = /var, /dev/stdout, /tmp
smtpd_sasl_auth_enable = yes
smtpd_tls_security_level = none
smtpd_relay_restrictions = permit_sasl_authenticated, reject
broken_sasl_auth_clients = no
$sasl
${POSTFIX_MAIN_EXTRA:-}
MAIN
cat > "$dir/etc/master.cf" <<MASTER
127.0.0.1:$port inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
MASTER
/usr/sbin/postconf -c "$dir/etc" -e "mail_owner = postfix" "setgid_group = postdrop" >/dev/null
/usr/lib/postfix/sbin/post-install config_directory="$dir/etc" queue_directory="$dir/spool" \
    data_directory="$dir/data" meta_directory=/etc/postfix command_directory=/usr/sbin \
    daemon_directory=/usr/lib/postfix/sbin mail_owner=postfix setgid_group=postdrop \
    create-missing >/dev/null 2>&1
chown postfix "$dir/data"
setsid /usr/lib/postfix/sbin/master -c "$dir/etc" -d > "$dir/master.out" 2>&1 &
master=$!
echo "$master" > "$dir/master.pid"
# Ours must be what listens: a master that cannot bind the port dies a second later, and
# meanwhile whatever holds the port (another test's Postfix being stopped, once) would answer.
for _ in $(seq 100); do
    [ -e "/proc/$master" ] || break
    if ss -Hltnp "( sport = :$port )" | grep -q "pid=$master,"; then exit 0; fi
    sleep 0.1
done
echo "postfix did not listen on 127.0.0.1:$port" >&2
cat "$dir/master.out" "$dir/postfix.log" >&2 2>/dev/null || true
exit 1
