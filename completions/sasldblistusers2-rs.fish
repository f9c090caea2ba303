# fish completion for sasldblistusers2-rs; generated from its option table, do not edit.
complete -c sasldblistusers2-rs -s f -r -F -d 'Use this file as the sasldb (default /etc/sasldb2; also the one operand)'
complete -c sasldblistusers2-rs -s v -l version -d 'Print the version and the sasldb\'s format, and exit'
complete -c sasldblistusers2-rs -s h -d 'Print the usage and exit 1 (as Cyrus)'
complete -c sasldblistusers2-rs -l json -d 'Print a JSON array of {"authid", "realm", "property"} objects instead'
