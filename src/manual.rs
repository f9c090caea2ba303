//! Manual pages and shell completions, made from the option tables the parsers read
//! ([`crate::cli::OPTIONS`], [`crate::tools::options`]) and the configuration file's key list
//! ([`crate::config::KEYS`]), with hand-written sections beside them. `tests/docs.rs` holds
//! the files under `man/` and `completions/` to what this renders, so neither can drift from
//! the parsers; `SASLAUTHD_RS_WRITE_DOCS=1 cargo test --test docs` writes them again.

use crate::getopt::{option_words, ArgKind, OptDef};

/// One manual page.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// The command or file.
    pub name: &'static str,
    /// `8` or `5`.
    pub section: &'static str,
    /// The NAME line's description.
    pub summary: &'static str,
    /// SYNOPSIS lines.
    pub synopsis: &'static [&'static str],
    /// The options (empty for a file format).
    pub options: &'static [OptDef],
    /// The keys, for the configuration file's page.
    pub keys: &'static [crate::config::Key],
    /// Hand-written sections, in order, after DESCRIPTION and OPTIONS (or KEYS): a title and
    /// paragraphs separated by blank lines; lines that start with two spaces are shown as
    /// they are (examples).
    pub sections: &'static [(&'static str, &'static str)],
    /// DESCRIPTION.
    pub description: &'static str,
}

impl Page {
    /// `name.section`, the page's file name.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.name, self.section)
    }

    /// Whether it documents a command (and so has completions).
    pub fn is_command(&self) -> bool {
        !self.options.is_empty()
    }
}

/// Every page: the daemon, the three Cyrus tools, the configuration file.
pub fn pages() -> Vec<Page> {
    vec![
        Page {
            name: "saslauthd-rs",
            section: "8",
            summary: "SASL authentication daemon, a drop-in replacement for Cyrus saslauthd",
            synopsis: &["[-a sasldb|shadow|pam|ldap|sql|getpwent|kerberos5|rimap] [-O file|host] [-m path] [-n procs] [-c] [-d] [-V] [options]"],
            options: crate::cli::OPTIONS,
            keys: &[],
            description: DAEMON_DESCRIPTION,
            sections: DAEMON_SECTIONS,
        },
        Page {
            name: "saslpasswd2-rs",
            section: "8",
            summary: "set a user's password in a sasldb2 file, as Cyrus saslpasswd2",
            synopsis: &["[-v] [-c [-p] [-n]] [-d] [-a appname] [-f sasldb] [-u DOM] [--format lmdb|bdb|gdbm] userid"],
            options: crate::tools::options::SASLPASSWD2,
            keys: &[],
            description: SASLPASSWD2_DESCRIPTION,
            sections: SASLPASSWD2_SECTIONS,
        },
        Page {
            name: "sasldblistusers2-rs",
            section: "8",
            summary: "list the users of a sasldb2 file, as Cyrus sasldblistusers2",
            synopsis: &["[-v] [[-f] sasldb] [--json]"],
            options: crate::tools::options::SASLDBLISTUSERS2,
            keys: &[],
            description: LISTUSERS_DESCRIPTION,
            sections: LISTUSERS_SECTIONS,
        },
        Page {
            name: "testsaslauthd-rs",
            section: "8",
            summary: "ask a saslauthd whether a password is right, as Cyrus testsaslauthd",
            synopsis: &["-u username -p password [-r realm] [-s servicename] [-f socket path] [-R repeatnum] [-a clientaddr]"],
            options: crate::tools::options::TESTSASLAUTHD,
            keys: &[],
            description: TEST_DESCRIPTION,
            sections: TEST_SECTIONS,
        },
        Page {
            name: "saslauthd-rs-ctl",
            section: "8",
            summary: "talk to a running saslauthd-rs, and make password hashes",
            synopsis: &[
                "[-m path] stats|metrics|reload|top [--count n]",
                "[-m path] cache flush [user]",
                "[-m path] penalty list|reset address|reset-user user",
                "[-m path] test user password [--service s] [--realm r]",
                "pw [-s scheme] [-u user] [-p password] [-t value] | pw -l",
            ],
            options: crate::tools::options::CTL,
            keys: &[],
            description: CTL_DESCRIPTION,
            sections: CTL_SECTIONS,
        },
        Page {
            name: "saslauthd-rs.toml",
            section: "5",
            summary: "configuration file of saslauthd-rs",
            synopsis: &["/etc/saslauthd-rs.toml"],
            options: &[],
            keys: crate::config::KEYS,
            description: TOML_DESCRIPTION,
            sections: TOML_SECTIONS,
        },
    ]
}

const DAEMON_DESCRIPTION: &str = "\
saslauthd-rs answers \"is this password right?\" for Postfix, sendmail and Cyrus IMAP over \
the saslauthd protocol on path/mux (libsasl2's pwcheck_method: saslauthd) and, when asked, \
over Dovecot's auth-client protocol (Postfix's smtpd_sasl_type = dovecot), where it runs \
the SASL mechanisms itself: PLAIN and LOGIN over every passdb, CRAM-MD5, DIGEST-MD5, \
SCRAM-SHA-1 and SCRAM-SHA-256 over sasldb, and over sql where the stored value allows it \
(see SQL), and OAUTHBEARER and XOAUTH2 when an [oauth2] table says how to check their tokens \
(see OAUTH2).

It takes Cyrus saslauthd's flags with their meanings, so that a unit or init script written \
for saslauthd runs it unchanged. Every read has a deadline, failures are delayed per client \
address, secrets are compared in constant time and never logged, and the credential cache \
never accepts an old password.";

const DAEMON_SECTIONS: &[(&str, &str)] = &[
    (
        "SIGNALS",
        "SIGHUP reads the configuration file again (the same flags over it) and opens the \
passdb it names for the requests that start from then on; requests in flight finish on the \
old one and the sockets stay open. A file that does not load changes nothing: the error is \
logged. Sockets, the run directory, --user and the connection budgets take a restart.

SIGTERM and SIGINT stop accepting, answer the requests in flight (a delayed failure at \
once), remove the sockets and exit 0.",
    ),
    (
        "LOGS",
        "One line per authentication, in Cyrus's words, each part a field:

  auth failure: [user=alice] [service=smtp] [realm=example.org] [mech=sasldb] [reason=password mismatch] [remote=192.0.2.7] [protocol=dovecot] [sasl=PLAIN] [duration_us=41]

Successes are logged with -V. Detached, lines go to syslog (facility auth); in the \
foreground to stderr, or, when JOURNAL_STREAM says stderr is the systemd journal, to the \
journal with USER, SERVICE, REALM, PASSDB, REMOTE, PROTOCOL, SASL_MECHANISM, VERDICT, \
DURATION_US and REASON as fields. SASLAUTHD_LOG (a tracing filter) overrides the level.",
    ),
    (
        "POSTFIX",
        "Cyrus mode: smtpd_sasl_type = cyrus and, in /etc/postfix/sasl/smtpd.conf:

  pwcheck_method: saslauthd
  saslauthd_path: /var/spool/postfix/var/run/saslauthd/mux
  mech_list: PLAIN LOGIN

Dovecot mode: run with --dovecot-socket /var/spool/postfix/private/auth \
--dovecot-socket-owner postfix:postfix and set smtpd_sasl_type = dovecot, \
smtpd_sasl_path = private/auth. For Postfix on another host, a [[listener]] with an \
address and an allow list serves smtpd_sasl_path = inet:host:port (see \
saslauthd-rs.toml(5)).",
    ),
    (
        "SQL",
        "-a sql -O /etc/dovecot/dovecot-sql.conf.ext reads Dovecot's SQL file as it is: \
driver (pgsql, mysql, sqlite), connect (several host= are tried in order), \
default_pass_scheme and password_query. A Postfixadmin site points at the file its \
documentation has it write:

  driver = pgsql
  connect = host=db1 host=db2 dbname=postfix user=postfix password=secret
  default_pass_scheme = SHA512-CRYPT
  password_query = SELECT username AS user, password FROM mailbox \\
    WHERE username = '%u' AND active = '1' AND (smtp_active = '1' OR '%s' <> 'smtp') \\
    UNION SELECT username AS user, password_hash AS password \\
    FROM mailbox_app_password WHERE username = '%u'

The variables are bound parameters, never pasted into the SQL. Each row is a password any \
of which may match (the UNION adds Postfixadmin's app passwords); %s makes a per-service \
flag such as smtp_active work. The user column names the user in the Dovecot socket's OK; \
nologin and allow_nets columns refuse after the right password. Values are in Dovecot's \
{SCHEME} notation; saslauthd-rs-ctl pw makes them. On a busy PostgreSQL or MariaDB host \
the logins that arrive while a statement runs go out together in one statement (the query \
once per login: LATERAL on PostgreSQL, UNION ALL on MariaDB); a query that cannot be (a \
data-modifying WITH, a derived table's duplicate column) is asked login by login.

A host on libsasl2's sql auxprop plugin points -O at its smtpd.conf instead, as it is \
(sql_engine, sql_hostnames, sql_user, sql_passwd, sql_database, sql_select with %u, %r and \
%p, sql_usessl); the first column is then a cleartext password. The same keys may sit in \
the [sql] table of saslauthd-rs.toml(5).",
    ),
    (
        "OAUTH2",
        "With an [oauth2] table in saslauthd-rs.toml(5), the Dovecot socket also offers \
OAUTHBEARER (RFC 7628) and XOAUTH2, whose clients (Thunderbird, FairEmail, Outlook) send an \
OAuth 2.0 access token from the site's OpenID provider (Keycloak, Authentik, Authelia) \
instead of a password. mode = \"jwt\" verifies a JWT here against the provider's published \
keys (found through discovery, cached, fetched again for a key id it has not seen, at most \
once per key_refresh_interval): RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 and \
EdDSA only, never none or an HMAC; iss, aud or azp, exp, nbf and iat with a leeway, and the \
scopes named in scope. mode = \"introspection\" asks the provider (RFC 7662, as client_id) \
whether the token is active, for opaque tokens and for revocation that bites at once. In \
both modes a token's claims, once verified, are kept for cache_ttl (60 s; 0: none), never \
past its exp, and judged again on every use.

  [oauth2]
  mode = \"jwt\"
  issuer = \"https://id.example.org/realms/mail\"
  audience = \"smtp.example.org\"
  username_claim = \"email\"

The user the token names (username_claim, default email; username_domain appends or \
requires a domain) must be the one the client names, or the exchange fails after the \
mechanism's error challenge. The provider's calls have a deadline (timeout, 3 s), go over \
HTTPS checked against ca or the system's CAs (http:// only to a loopback address), follow \
no redirects and read at most 1 MiB; a provider that cannot be asked is a temporary failure \
(Postfix: 454), never a success. Refused tokens are throttled like wrong passwords. \
--check-config fetches discovery and the keys (or asks the introspection endpoint) once. \
Dovecot's dovecot-oauth2.conf.ext keys are read where they mean the same \
(introspection_mode = post or local, introspection_url with the client in it, \
username_attribute, tls_ca_cert_file, timeout_msecs, issuers, scope).",
    ),
    (
        "KERBEROS5",
        "-a kerberos5 asks the KDC for a ticket for user@REALM with the password, then verifies \
the ticket against the host's keytab (host/<this host>), as Cyrus's kerberos5, so that a \
forged KDC answer logs nobody in: OK, or NO krb5_get_init_creds_password failed (no ticket: \
a wrong password, an unknown or refused principal, a KDC that cannot be reached), or NO \
krb5_verify_init_creds failed (a ticket the keytab cannot verify: its key is missing or \
stale). It uses MIT's libkrb5, so KRB5_CONFIG and KRB5_KTNAME work as for kinit. -O names a \
saslauthd.conf (else /etc/saslauthd.conf when it exists) with krb5_keytab, \
krb5_verify_principal (default host) and krb5_servername (default this host's name).

An empty realm is krb5.conf's default_realm (or --realm). With -r, a login that names its \
realm keeps it: Cyrus 2.1.28 appends the realm again (alice@EXAMPLE.ORG@EXAMPLE.ORG) and \
refuses every such login. A KDC that cannot be reached is a temporary failure (Postfix's \
Dovecot mode: 454), answered within the reply deadline (libkrb5 itself gives up after 27 s, \
holding one of the -n threads until then). -c is not used.",
    ),
    (
        "RIMAP",
        "-a rimap -O imap.example.org/143 checks each password with a LOGIN on an IMAP server, \
as Cyrus's rimap: OK remote authentication successful, or NO remote server rejected your \
credentials; NO [ALERT] ... (Cyrus's texts) when the server cannot be used, which Postfix's \
Dovecot mode answers 454 (try later). -O takes host, host/port (Cyrus) or host:port; several \
hosts (space-separated) are tried in order, a failed one skipped for 30 s and probed each \
second. The realm is ignored unless -r, which logs in as user@realm.

--rimap-tls starttls (or imaps, port 993 by default) protects the password, the server's \
certificate checked against --rimap-ca or the system's CAs; without it no password goes to a \
server that says LOGINDISABLED (Dovecot's default for remote clients). A CR, LF or 8-bit \
byte goes as an IMAP literal, never raw; a NUL is refused. Each host has 1.5 s to connect \
and greet, and the whole check ends within 3.8 s. -c is not used: the server's answer cannot \
be tied to its stored password.

On a Dovecot server every login comes from this host, so its per-address penalty (up to \
15 s) soon slows every user, and a reply later than 3.8 s is a temporary failure: turn it \
off there (service anvil { unix_listener anvil-auth-penalty { mode = 0 } }) and let \
saslauthd-rs delay failures per client address instead.",
    ),
    (
        "SENDMAIL",
        "sendmail asks libsasl2, which asks saslauthd with pwcheck_method: saslauthd in \
/etc/sasl2/Sendmail.conf (or /usr/lib/sasl2/Sendmail.conf); nothing else changes.",
    ),
    (
        "FILES",
        "/run/saslauthd/mux (the socket), /run/saslauthd/saslauthd.pid, /etc/sasldb2, \
/etc/saslauthd-rs.toml, /etc/default/saslauthd-rs, and Cyrus's /etc/default/saslauthd \
(Debian) or /etc/sysconfig/saslauthd (Fedora) through the saslauthd.service it ships.",
    ),
    (
        "EXIT STATUS",
        "0 after a clean stop, or for -h, -v and a usable --check-config; 1 when it cannot \
start, with one line on stderr naming the problem.",
    ),
    (
        "SEE ALSO",
        "saslauthd-rs.toml(5), saslauthd-rs-ctl(8), saslpasswd2-rs(8), \
sasldblistusers2-rs(8), testsaslauthd-rs(8), saslauthd(8)",
    ),
];

const SASLPASSWD2_DESCRIPTION: &str = "\
saslpasswd2-rs sets, or with -d deletes, a user's password in a sasldb2 file, with Cyrus \
saslpasswd2's flags, prompts, messages and exit codes. It writes the plaintext \
userPassword (unless -n) and SCRAM's authPassword entries, in whichever of the three \
formats the file has (LMDB, Berkeley DB hash, GDBM): libsasl2's own sasldb plugin (Postfix's \
pwcheck_method: auxprop) reads what it writes. A new file gets the format this host's \
libsasl2 reads. The file is replaced whole, never left half-written, keeping its mode, \
owner and group.";

const SASLPASSWD2_SECTIONS: &[(&str, &str)] = &[
    (
        "EXAMPLES",
        "  saslpasswd2-rs -c -u example.org alice
  echo 'new password' | saslpasswd2-rs -p -c -u example.org alice
  saslpasswd2-rs -d -u example.org alice",
    ),
    (
        "EXIT STATUS",
        "0 on success; 1 on a usage error or failure (as Cyrus: SASL_FAIL); the messages are \
Cyrus's.",
    ),
    (
        "SEE ALSO",
        "sasldblistusers2-rs(8), saslauthd-rs(8), saslpasswd2(8)",
    ),
];

const LISTUSERS_DESCRIPTION: &str = "\
sasldblistusers2-rs lists the entries of a sasldb2 file, one user@realm: property line \
each, as Cyrus sasldblistusers2 prints them, in any of the three formats.";

const LISTUSERS_SECTIONS: &[(&str, &str)] = &[
    (
        "EXAMPLES",
        "  sasldblistusers2-rs -f /etc/sasldb2\n  sasldblistusers2-rs --json",
    ),
    (
        "EXIT STATUS",
        "0 on success, 1 when the file cannot be read or the usage is wrong.",
    ),
    ("SEE ALSO", "saslpasswd2-rs(8), sasldblistusers2(8)"),
];

const TEST_DESCRIPTION: &str = "\
testsaslauthd-rs sends one request (or -R of them) to a saslauthd (saslauthd-rs or Cyrus's) \
and prints its answer, 0: OK \"Success.\" or 0: NO \"authentication failed\", as Cyrus \
testsaslauthd does.";

const TEST_SECTIONS: &[(&str, &str)] = &[
    (
        "EXAMPLES",
        "  testsaslauthd-rs -u alice -p secret -r example.org -s smtp",
    ),
    (
        "EXIT STATUS",
        "0 when the last answer was OK, 255 otherwise, 1 for a usage error.",
    ),
    ("SEE ALSO", "saslauthd-rs(8), testsaslauthd(8)"),
];

const CTL_DESCRIPTION: &str = "\
saslauthd-rs-ctl asks a running saslauthd-rs over its admin socket (path/admin, mode \
0600: root or the daemon's user) for its metrics, a summary of them or a live view (top), \
to reload its configuration (as SIGHUP), to forget cached successes (cache flush, all or \
one user's), to list the client addresses and users the throttle delays and lift a delay \
(penalty: from the shared store when throttle_store names one), or to check a password \
through the daemon's own passdb (test). pw needs no daemon: it prints a password value in \
Dovecot's {SCHEME} notation for -a sql, as doveadm pw does (default ARGON2ID), or with -t \
says whether a password matches a value.";

const CTL_SECTIONS: &[(&str, &str)] = &[
    (
        "EXAMPLES",
        "  saslauthd-rs-ctl stats
  saslauthd-rs-ctl -m /var/spool/postfix/var/run/saslauthd penalty list
  saslauthd-rs-ctl test alice@example.org secret --service smtp
  saslauthd-rs-ctl pw -s SHA512-CRYPT
  saslauthd-rs-ctl pw -t '{SHA512-CRYPT}$6$...' -p secret",
    ),
    (
        "EXIT STATUS",
        "0 when the daemon answered (and test authenticated, and pw -t matched); 1 on a \
usage error, a refusal, a failed test or a value that does not match; 2 when the daemon \
cannot be reached.",
    ),
    ("SEE ALSO", "saslauthd-rs(8), doveadm-pw(1)"),
];

const TOML_DESCRIPTION: &str = "\
The configuration file of saslauthd-rs, named with --config (the units pass \
/etc/saslauthd-rs.toml). Every key is optional; flags on the command line override the \
file. An unknown key, or a value that cannot be used, is an error naming the key and its \
line, and the daemon does not start (saslauthd-rs --check-config tells before a start or \
a reload). SIGHUP reads the file again.";

const TOML_SECTIONS: &[(&str, &str)] = &[
    (
        "EXAMPLES",
        "  passdb = \"sasldb\"
  sasldb = \"/etc/sasldb2\"
  realm = \"example.org\"
  dovecot_socket = \"/var/spool/postfix/private/auth\"
  dovecot_socket_owner = \"postfix:postfix\"

  [[listener]]
  protocol = \"dovecot\"
  address = \"127.0.0.1:12345\"
  allow = [\"127.0.0.1\", \"192.0.2.0/24\"]",
    ),
    (
        "FILES",
        "/etc/saslauthd-rs.toml; a commented example ships with the package.",
    ),
    ("SEE ALSO", "saslauthd-rs(8)"),
];

/// Escapes text for roff: backslashes, hyphens (as minus signs, so they can be searched and
/// copied), and a leading `.` or `'` that would start a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Paragraphs and literal blocks as roff.
fn roff_body(text: &str) -> String {
    let mut out = String::new();
    for (i, block) in text.split("\n\n").enumerate() {
        if i > 0 {
            out += ".PP\n";
        }
        if block.lines().all(|l| l.starts_with("  ")) {
            out += ".nf\n.RS 4\n";
            for line in block.lines() {
                out += &roff(&line[2..]);
                out.push('\n');
            }
            out += ".RE\n.fi\n";
        } else {
            out += &roff(&block.split_whitespace().collect::<Vec<_>>().join(" "));
            out.push('\n');
        }
    }
    out
}

/// The page in roff (man(7)).
pub fn man(page: &Page) -> String {
    let mut out = format!(
        ".\\\" Generated by saslauthd-rs's crate::manual from the option tables; do not edit.\n\
         .TH {} {} \"\" \"saslauthd-rs {}\" \"{}\"\n",
        roff(&page.name.to_uppercase()),
        page.section,
        env!("CARGO_PKG_VERSION"),
        if page.section == "5" {
            "File Formats"
        } else {
            "System Administration"
        }
    );
    out += &format!(".SH NAME\n{} \\- {}\n", roff(page.name), roff(page.summary));
    out += ".SH SYNOPSIS\n";
    for line in page.synopsis {
        if page.is_command() {
            out += &format!(".B {}\n{}\n.br\n", roff(page.name), roff(line));
        } else {
            out += &format!("{}\n", roff(line));
        }
    }
    out += ".SH DESCRIPTION\n";
    out += &roff_body(page.description);
    if page.is_command() {
        out += ".SH OPTIONS\n";
        for o in page.options {
            let (names, arg) = option_words(o);
            let names: Vec<String> = names
                .iter()
                .map(|n| format!("\\fB{}\\fR", roff(n)))
                .collect();
            out += &format!(".TP\n{}", names.join(", "));
            if let Some(arg) = arg {
                out += &format!(" \\fI{}\\fR", roff(arg));
            }
            out += &format!("\n{}\n", roff(o.help));
        }
    }
    if !page.keys.is_empty() {
        out += ".SH KEYS\n";
        for key in page.keys {
            let restart = match key.reload {
                crate::config::Reload::Applies => "",
                crate::config::Reload::Restart => " A restart, not a reload, changes it.",
            };
            out += &format!(
                ".TP\n\\fB{}\\fR = \\fI{}\\fR\n{}{restart}\n",
                roff(key.name),
                roff(key.value),
                roff(key.about)
            );
        }
        for module in crate::passdb::MODULES {
            if let (Some(table), Some(_)) = (module.table, module.about) {
                out += &format!(
                    ".TP\n\\fB[{}]\\fR\n{}\n",
                    roff(module.kind.name),
                    roff(table.about)
                );
            }
        }
        for module in crate::passdb::TOKEN_MODULES {
            out += &format!(
                ".TP\n\\fB[{}]\\fR\n{}\n",
                roff(module.name),
                roff(module.table.about)
            );
        }
    }
    for (title, body) in page.sections {
        out += &format!(".SH {}\n", roff(title));
        out += &roff_body(body);
    }
    out
}

/// The first sentence of a help text, for completions' descriptions.
fn short_help(help: &str) -> &str {
    match help.find(". ") {
        Some(end) => &help[..end],
        None => help.trim_end_matches('.'),
    }
}

/// The options a shell offers: `?` is left out (a glob character, and `-h` says the same).
fn completable(page: &Page) -> impl Iterator<Item = &'static OptDef> {
    page.options.iter().filter(|o| o.short != Some('?'))
}

/// A bash completion script (`complete -F`).
pub fn bash(page: &Page) -> String {
    let function = format!("_{}", page.name.replace(['-', '.'], "_"));
    let mut cases = String::new();
    let mut words = Vec::new();
    for o in completable(page) {
        let (names, arg) = option_words(o);
        words.extend(names.iter().cloned());
        if arg.is_none() {
            continue;
        }
        let action = match o.kind {
            ArgKind::File => "COMPREPLY=($(compgen -f -- \"$cur\"))".to_string(),
            ArgKind::Dir => "COMPREPLY=($(compgen -d -- \"$cur\"))".to_string(),
            ArgKind::User => "COMPREPLY=($(compgen -u -- \"$cur\"))".to_string(),
            ArgKind::Group => "COMPREPLY=($(compgen -g -- \"$cur\"))".to_string(),
            ArgKind::OneOf(choices) => {
                format!(
                    "COMPREPLY=($(compgen -W \"{}\" -- \"$cur\"))",
                    choices().join(" ")
                )
            }
            ArgKind::Any => "COMPREPLY=()".to_string(),
        };
        cases += &format!(
            "        {})\n            {action}\n            return ;;\n",
            names.join("|")
        );
    }
    format!(
        "# bash completion for {name}; generated from its option table, do not edit.\n\
         {function}() {{\n    \
             local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}\n    \
             case $prev in\n{cases}    esac\n    \
             COMPREPLY=($(compgen -W \"{words}\" -- \"$cur\"))\n\
         }}\n\
         complete -F {function} {name}\n",
        name = page.name,
        words = words.join(" "),
    )
}

/// A zsh completion function (`#compdef`, `_arguments`).
pub fn zsh(page: &Page) -> String {
    let quote = |text: &str| {
        text.replace('\'', "'\\''")
            .replace('[', "\\[")
            .replace(']', "\\]")
            .replace(':', "\\:")
    };
    let mut specs = Vec::new();
    for o in completable(page) {
        let (names, arg) = option_words(o);
        let help = quote(short_help(o.help));
        let value = match arg {
            None => String::new(),
            Some(arg) => {
                let action = match o.kind {
                    ArgKind::File => "_files".to_string(),
                    ArgKind::Dir => "_files -/".to_string(),
                    ArgKind::User => "_users".to_string(),
                    ArgKind::Group => "_groups".to_string(),
                    ArgKind::OneOf(choices) => format!("({})", choices().join(" ")),
                    ArgKind::Any => " ".to_string(),
                };
                format!(":{}:{action}", quote(arg))
            }
        };
        for name in names {
            specs.push(format!("  '{name}[{help}]{value}'"));
        }
    }
    format!(
        "#compdef {name}\n# zsh completion for {name}; generated from its option table, do not edit.\n\
         _arguments -s \\\n{}\n",
        specs.join(" \\\n"),
        name = page.name,
    )
}

/// A fish completion file (`complete -c`).
pub fn fish(page: &Page) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut out = format!(
        "# fish completion for {}; generated from its option table, do not edit.\n",
        page.name
    );
    for o in completable(page) {
        let mut line = format!("complete -c {}", page.name);
        if let Some(c) = o.short {
            line += &format!(" -s {c}");
        }
        if let Some(l) = o.long {
            line += &format!(" -l {l}");
        }
        if o.arg.is_some() {
            line += match o.kind {
                ArgKind::File => " -r -F",
                _ => " -x",
            };
            match o.kind {
                ArgKind::Dir => line += " -a '(__fish_complete_directories)'",
                ArgKind::User => line += " -a '(__fish_complete_users)'",
                ArgKind::Group => line += " -a '(__fish_complete_groups)'",
                ArgKind::OneOf(choices) => line += &format!(" -a {}", quote(&choices().join(" "))),
                ArgKind::File | ArgKind::Any => {}
            }
        }
        line += &format!(" -d {}\n", quote(short_help(o.help)));
        out += &line;
    }
    out
}
