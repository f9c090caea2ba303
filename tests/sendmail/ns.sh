#!/bin/sh
# Runs a command (sendmail) inside the private namespaces `unshare -m -n -u` made for it:
#   ns.sh DIR SASLDIR COMMAND...
# - host name mail.example.test (sendmail needs a dot in it or it waits for DNS at start);
# - its own loopback, with 127.0.0.2 as a second address: sendmail relays for 127.0.0.1 by
#   itself, so the tests connect to 127.0.0.2, which is then their source address too; nothing
#   can leave the machine (there is no other interface);
# - /etc/hosts with a name for 127.0.0.2;
# - a /dev of its own whose /dev/log is DIR/log, a socket the test reads sendmail's syslog from;
# - DIR/sasl bind-mounted over SASLDIR, the first directory where libsasl2 looks for
#   Sendmail.conf (sendmail clears its environment, so SASL_CONF_PATH cannot point elsewhere).
# No file outside DIR changes: every mount lives and dies with the namespace.
set -eu
dir=$1 sasldir=$2
shift 2
hostname mail.example.test
ip link set lo up
ip addr add 127.0.0.2/32 dev lo
mkdir -p "$dir/host-dev"
mount --bind /dev "$dir/host-dev"
mount -t tmpfs -o mode=0755 tmpfs /dev
for node in null zero random urandom; do
    touch "/dev/$node"
    mount --bind "$dir/host-dev/$node" "/dev/$node"
done
ln -s "$dir/log" /dev/log
# The test client's address has a name (sendmail only says "Relaying temporarily denied" to
# an address without one): the system's hosts file plus that line, seen here only.
mount --bind "$dir/hosts" /etc/hosts
mount --bind "$dir/sasl" "$sasldir"
exec "$@"
