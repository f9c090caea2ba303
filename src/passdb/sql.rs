//! The SQL passdb (`-a sql -O /etc/dovecot/dovecot-sql.conf.ext`): Dovecot's SQL file as it
//! is — `driver` (`pgsql`, `mysql`, `sqlite`), `connect`, `default_pass_scheme`,
//! `password_query` — or the same keys in the configuration file's `[sql]` table; or
//! libsasl2's `sql` auxprop keys (`-O /etc/postfix/sasl/smtpd.conf`: `sql_engine`,
//! `sql_select`, ...), read as Dovecot's ([`SqlConf::apply_auxprop`]).
//!
//! The query's variables (`%u`, `%n`, `%d`, `%s`, `%r`, `%l`, their `%{user}` long forms,
//! and the `L`/`U` case modifiers, `%Lu`) are never pasted into the SQL text: each quoted
//! literal that holds a variable (`'%u'`, `'%n@%d'`), and each variable outside quotes,
//! becomes a parameter of a prepared statement, bound to its value per request. No user name
//! can change the query.
//!
//! Rows: the `password` column, any number of rows (several rows are several passwords, any
//! of which may match: Postfixadmin's app passwords); a `nologin` column that is set, or an
//! `allow_nets` column that does not hold the client's address, refuses the login after the
//! right password. No row: an unknown user, whose password is checked against a decoy of the
//! last value seen, or (before any) a value made in the default scheme, so it costs what a
//! known user costs; a user whose values are all NULL or empty too. A NULL or empty password
//! matches nothing; a password with TAB, CR, LF or `\x01` in it is refused before the query,
//! as Dovecot does. Values are in Dovecot's `{SCHEME}` notation ([`super::scheme`]); costly
//! schemes are checked on the `-n` pool. The mechanisms that compute with a stored secret
//! follow the stored scheme as Dovecot's do ([`scheme::credentials`]).
//!
//! With `-c`, a success is remembered under the user and the stored value it matched: the
//! query still runs every time, and only the hash check is skipped, so a changed or removed
//! password is refused at the next login.
//!
//! Several `host=` in `connect` are tried in order; each query has a deadline, a host that
//! fails is skipped, and the connection pools reconnect by themselves. A database that cannot
//! be asked is an error (a temporary failure on the wire), never a success. sqlx, one crate
//! for the three drivers, async on the runtime: no thread waits on the network. On
//! PostgreSQL and MySQL, the logins that arrive while a host's statement runs go out together
//! in one statement when it returns ([`batch`]), each login's variables still bound parameters.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use super::{scheme, Answer, Context, DefaultRealm, Module, Passdb, PassdbError, Query, Verified};
use crate::pool::Pool;
use crate::secret::{Credentials, Password};
use crate::verdict::{PassdbKind, PassdbResult, Replies, SuccessCache};
use batch::{Batched, Batcher};
use held::Held;

mod batch;
mod held;

/// `-a sql`.
pub(super) const MODULE: Module = Module {
    kind: PassdbKind {
        name: "sql",
        replies: Replies::BARE,
    },
    about: Some("PostgreSQL, MariaDB/MySQL or SQLite, as Dovecot's dovecot-sql.conf.ext (-O) or the [sql] table says"),
    open: |settings| Ok(Arc::new(Sql::new(SqlConf::from_settings(settings)?)?)),
    table: Some(super::Table {
        about: "For -a sql: dovecot-sql.conf.ext's keys (driver = \"pgsql\", connect = \"host=db1 dbname=mail user=postfix password=...\", password_query = \"...\", default_pass_scheme = \"SHA512-CRYPT\"), or libsasl2's sql auxprop keys (sql_engine, sql_hostnames, sql_user, sql_passwd, sql_database, sql_select, sql_usessl), over the file -O names.",
        check: |key, value| check_key(key, value).map_err(Into::into),
    }),
};

/// One query's deadline on one host: short enough that a second host can still answer
/// within the driver's reply deadline.
const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);

/// At most this many characters of a `reason` column reach the client.
const REASON_CHARS: usize = 200;

/// How long a host that failed is skipped while another answers.
const DOWN_FOR: Duration = Duration::from_secs(10);

/// Connections kept per host. A connection is not pinged before each query (sqlx's default):
/// that doubled the round trips, and a dead connection fails the query, which is then
/// asked of the next host (and the pool replaces the connection).
const CONNECTIONS: u32 = 16;

/// The keys a password check uses.
const KEYS: &[&str] = &["driver", "connect", "default_pass_scheme", "password_query"];

/// Keys Dovecot's file has that a password check does not need: accepted, named once in the
/// log.
const IGNORED: &[&str] = &["user_query", "iterate_query"];

/// libsasl2's `sql` auxprop plugin's keys (`smtpd.conf`: `sql_engine: mysql`), read as the
/// plugin reads them: `sql_statement` is `sql_select`'s older name.
const AUXPROP: &[&str] = &[
    "sql_engine",
    "sql_hostnames",
    "sql_user",
    "sql_passwd",
    "sql_database",
    "sql_select",
    "sql_statement",
    "sql_usessl",
];

/// Keys a libsasl2 application file has beside the plugin's, and the plugin's own that a
/// password check does not use: accepted, named once in the log.
const AUXPROP_IGNORED: &[&str] = &[
    "pwcheck_method",
    "auxprop_plugin",
    "mech_list",
    "log_level",
    "saslauthd_path",
    "sasldb_path",
    "sql_insert",
    "sql_update",
    "sql_verbose",
];

/// What is wrong with the SQL settings (a file, the `[sql]` table, `password_query`,
/// `connect`), or with what the database answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SqlError {
    /// A key neither Dovecot nor libsasl2 has.
    #[error("unknown key {key:?} (known: {known})")]
    UnknownKey {
        /// The key.
        key: String,
        /// The keys there are.
        known: String,
    },
    /// `driver` names no database.
    #[error("driver {0:?}: pgsql, mysql or sqlite")]
    Driver(String),
    /// A line that is not `key = value`.
    #[error("not key = value: {0:?}")]
    NotKeyValue(String),
    /// A problem on a line of the file.
    #[error("line {line}: {source}")]
    Line {
        /// The line (1-based).
        line: usize,
        /// The problem.
        source: Box<SqlError>,
    },
    /// `password_query` or `connect` cannot be read; the text says where.
    #[error("{0}")]
    Syntax(String),
    /// The database's answer cannot be used (a missing column, a value that is not text).
    #[error("{0}")]
    Answer(String),
}

/// Checks a `[sql]` key when the configuration file is read.
fn check_key(key: &str, _value: &str) -> Result<(), SqlError> {
    if [KEYS, IGNORED, AUXPROP, AUXPROP_IGNORED]
        .iter()
        .any(|keys| keys.contains(&key))
    {
        Ok(())
    } else {
        Err(SqlError::UnknownKey {
            key: key.to_owned(),
            known: [KEYS, IGNORED, AUXPROP].concat().join(", "),
        })
    }
}

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Driver {
    /// PostgreSQL.
    Pg,
    /// MariaDB or MySQL.
    MySql,
    /// SQLite.
    Sqlite,
}

/// The settings of `dovecot-sql.conf.ext`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SqlConf {
    /// `driver`.
    pub(super) driver: Option<Driver>,
    /// `connect`.
    pub(super) connect: String,
    /// `default_pass_scheme` (Dovecot's default: `MD5`).
    pub(super) default_pass_scheme: String,
    /// `password_query`.
    pub(super) password_query: String,
    /// Keys read and not used.
    pub(super) ignored: Vec<String>,
    /// libsasl2's `sql_*` keys, as given (key, value).
    pub(super) auxprop: Vec<(String, String)>,
    /// Whether the query's first column is the password, in cleartext (libsasl2's plugin),
    /// rather than a `password` column in Dovecot's notation.
    pub(super) cleartext_first_column: bool,
}

impl Default for SqlConf {
    fn default() -> Self {
        SqlConf {
            driver: None,
            connect: String::new(),
            default_pass_scheme: "MD5".into(),
            password_query: String::new(),
            ignored: Vec::new(),
            auxprop: Vec::new(),
            cleartext_first_column: false,
        }
    }
}

impl SqlConf {
    /// The file `-O` names, then the `[sql]` table over it.
    pub(super) fn from_settings(settings: &super::Settings) -> Result<SqlConf, PassdbError> {
        let mut conf = match settings.options.first() {
            Some(path) => SqlConf::read(Path::new(path))?,
            None => SqlConf::default(),
        };
        for (key, value) in &settings.table {
            conf.set(key, value).map_err(|e| {
                PassdbError::Settings(format!("[sql] in the configuration file: {e}"))
            })?;
        }
        conf.finish()?;
        Ok(conf)
    }

    /// Reads Dovecot's file: `key = value` lines, `#` comments, a `\` at a line's end joins
    /// the next line.
    pub(super) fn read(path: &Path) -> Result<SqlConf, PassdbError> {
        let text = std::fs::read_to_string(path).map_err(|source| PassdbError::Unreadable {
            path: path.to_owned(),
            source,
            hint: "",
        })?;
        SqlConf::parse(&text).map_err(|e| PassdbError::Settings(format!("{}: {e}", path.display())))
    }

    /// Parses a file's text.
    pub(super) fn parse(text: &str) -> Result<SqlConf, SqlError> {
        let mut conf = SqlConf::default();
        let mut lines = text.lines().enumerate();
        while let Some((n, line)) = lines.next() {
            let mut line = line.trim().to_string();
            while line.ends_with('\\') {
                line.pop();
                line.truncate(line.trim_end().len());
                match lines.next() {
                    Some((_, next)) => {
                        line.push(' ');
                        line.push_str(next.trim());
                    }
                    None => break,
                }
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Dovecot's `key = value`, or libsasl2's `key: value` (smtpd.conf).
            let colon = line.find(':');
            let equals = line.find('=');
            let split = match (colon, equals) {
                (Some(c), Some(e)) if c < e => line.split_once(':'),
                (Some(_), None) => line.split_once(':'),
                _ => line.split_once('='),
            };
            let at = |e: SqlError| SqlError::Line {
                line: n + 1,
                source: Box::new(e),
            };
            let Some((key, value)) = split else {
                return Err(at(SqlError::NotKeyValue(line)));
            };
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            conf.set(key.trim(), value).map_err(at)?;
        }
        Ok(conf)
    }

    /// Sets one key.
    pub(super) fn set(&mut self, key: &str, value: &str) -> Result<(), SqlError> {
        match key {
            "driver" => {
                self.driver = Some(match value {
                    "pgsql" => Driver::Pg,
                    "mysql" => Driver::MySql,
                    "sqlite" => Driver::Sqlite,
                    other => return Err(SqlError::Driver(other.to_owned())),
                })
            }
            "connect" => self.connect = value.to_string(),
            "default_pass_scheme" => self.default_pass_scheme = value.to_ascii_uppercase(),
            "password_query" => self.password_query = value.to_string(),
            key if IGNORED.contains(&key) || AUXPROP_IGNORED.contains(&key) => {
                self.ignored.push(key.to_string())
            }
            key if AUXPROP.contains(&key) => {
                self.auxprop.retain(|(k, _)| k != key);
                self.auxprop.push((key.to_string(), value.to_string()));
            }
            _ => check_key(key, value)?,
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), PassdbError> {
        if !self.auxprop.is_empty() {
            self.apply_auxprop()?;
        }
        let missing = |key: &str| PassdbError::Settings(format!("-a sql: {key} is not set"));
        if self.driver.is_none() {
            return Err(missing("driver"));
        }
        if self.connect.is_empty() {
            return Err(missing("connect"));
        }
        if self.password_query.is_empty() {
            return Err(missing("password_query"));
        }
        Ok(())
    }
}

impl SqlConf {
    /// libsasl2's `sql_*` keys as Dovecot's: `sql_engine` (`mysql` by default, `pgsql`,
    /// `sqlite`, `sqlite3`) the driver; `sql_hostnames` (`host[:port], ...`), `sql_user`,
    /// `sql_passwd`, `sql_database` and `sql_usessl` the connection; `sql_select` the query,
    /// with `%u` the user without the realm, `%r` the realm and `%p` the property
    /// (`userPassword`, pasted as a column name: it is no user's input); its first column is
    /// the password, in cleartext.
    fn apply_auxprop(&mut self) -> Result<(), PassdbError> {
        let bad = |m: String| PassdbError::Settings(format!("-a sql: {m}"));
        if self.driver.is_some() || !self.connect.is_empty() || !self.password_query.is_empty() {
            return Err(bad(
                "libsasl2's sql_* keys and Dovecot's driver/connect/password_query are two ways to say the same: use one".into(),
            ));
        }
        let get = |key: &str| {
            self.auxprop
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.trim().to_string())
        };
        let engine = get("sql_engine").unwrap_or_else(|| "mysql".into());
        let driver = match engine.to_ascii_lowercase().as_str() {
            "mysql" => Driver::MySql,
            "pgsql" => Driver::Pg,
            "sqlite" | "sqlite3" => Driver::Sqlite,
            other => {
                return Err(bad(format!(
                    "sql_engine {other:?}: mysql, pgsql, sqlite or sqlite3"
                )))
            }
        };
        let select = get("sql_select")
            .or_else(|| get("sql_statement"))
            .ok_or_else(|| bad("sql_select option missing".into()))?;
        let database = get("sql_database").unwrap_or_default();
        let quote = |v: &str| format!("'{v}'");
        let connect = if driver == Driver::Sqlite {
            database
        } else {
            let mut pairs = Vec::new();
            for host in get("sql_hostnames").unwrap_or_default().split(',') {
                let host = host.trim();
                if !host.is_empty() {
                    pairs.push(format!("host={}", quote(host)));
                }
            }
            for (key, name) in [("sql_user", "user"), ("sql_passwd", "password")] {
                if let Some(value) = get(key) {
                    if value.contains('\'') {
                        return Err(bad(format!("{key} with a ' in it")));
                    }
                    pairs.push(format!("{name}={}", quote(&value)));
                }
            }
            if !database.is_empty() {
                pairs.push(format!("dbname={}", quote(&database)));
            }
            let ssl = get("sql_usessl").is_some_and(|v| {
                matches!(v.to_ascii_lowercase().as_str(), "yes" | "on" | "1" | "true")
            });
            if ssl {
                pairs.push(
                    match driver {
                        Driver::MySql => "sslmode=required",
                        _ => "sslmode=require",
                    }
                    .into(),
                );
            }
            pairs.join(" ")
        };
        // %u and %r are the plugin's user and realm (Dovecot's %n and %d); %p the property.
        let mut query = String::new();
        let mut rest = select.as_str();
        while let Some(at) = rest.find('%') {
            query.push_str(&rest[..at]);
            let next = rest[at + 1..].chars().next();
            query.push_str(match next {
                Some('u') => "%n",
                Some('r') => "%d",
                Some('p') => "userPassword",
                Some('%') => "%%",
                _ => {
                    return Err(bad(format!(
                        "sql_select: %{} is not %u, %r or %p",
                        next.map(String::from).unwrap_or_default()
                    )))
                }
            });
            rest = &rest[at + 1 + next.map_or(0, char::len_utf8)..];
        }
        query.push_str(rest);
        self.driver = Some(driver);
        self.connect = connect;
        self.password_query = query;
        self.default_pass_scheme = "PLAIN".into();
        self.cleartext_first_column = true;
        Ok(())
    }
}

/// One host's connections ([`held`]).
#[derive(Debug, Clone)]
enum Db {
    Pg(Arc<Held<sqlx::Postgres>>),
    MySql(Arc<Held<sqlx::MySql>>),
    Sqlite(Arc<Held<sqlx::Sqlite>>),
}

/// How to connect to one host.
#[derive(Debug, Clone)]
enum Options {
    Pg(PgConnectOptions),
    MySql(MySqlConnectOptions),
    Sqlite(SqliteConnectOptions),
}

/// One host of `connect`: its pool, made on the first request (a pool needs the runtime,
/// which the passdb is opened before).
#[derive(Debug)]
struct Host {
    name: String,
    options: Options,
    pool: std::sync::OnceLock<Db>,
    /// The batching ([`batch`]) of PostgreSQL and MySQL, made with the pool.
    batcher: std::sync::OnceLock<Option<Batcher>>,
    /// Until when it is skipped, after a failure (tried again when every host is).
    down_until: Mutex<Option<Instant>>,
}

impl Host {
    /// The pool, made now if it is not yet (within the runtime).
    fn db(&self) -> &Db {
        self.pool.get_or_init(|| match &self.options {
            Options::Pg(o) => Db::Pg(held(o)),
            Options::MySql(o) => Db::MySql(held(o)),
            Options::Sqlite(o) => Db::Sqlite(held(o)),
        })
    }
}

/// A host's connections ([`held`]), with the pool settings of every driver: [`CONNECTIONS`],
/// a connection within the query's deadline, and no ping before each query.
fn held<DB: sqlx::Database>(
    options: &<DB::Connection as sqlx::Connection>::Options,
) -> Arc<Held<DB>> {
    let pool = sqlx::pool::PoolOptions::new()
        .max_connections(CONNECTIONS)
        .acquire_timeout(QUERY_TIMEOUT)
        .test_before_acquire(false)
        .connect_lazy_with(options.clone());
    Arc::new(Held::new(pool))
}

/// What a row says.
#[derive(Debug, Default)]
struct Found {
    password: Option<String>,
    nologin: bool,
    /// The `user` column: the name the OK names, as Dovecot's SQL passdb.
    user: Option<String>,
    /// The `allow_nets` column: the networks the user may log in from.
    allow_nets: Option<String>,
    /// The `reason` column: what the client is told when `nologin` refuses.
    reason: Option<String>,
}

/// The SQL passdb.
pub(super) struct Sql {
    conf: SqlConf,
    /// The hosts, in `connect`'s order.
    hosts: Vec<Host>,
    /// The query with placeholders, and what each placeholder is bound to.
    statement: String,
    params: Vec<Template>,
    /// PostgreSQL and MySQL: the statements that ask for several logins at once ([`batch`]),
    /// when the query has variables.
    batched: Option<Batched>,
    /// A value shaped like the last password value seen, which an unknown user's password
    /// is checked against.
    decoy: Mutex<Option<String>>,
}

impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql")
            .field("driver", &self.conf.driver)
            .field("statement", &self.statement)
            .finish_non_exhaustive()
    }
}

impl Sql {
    /// The passdb `conf` describes. Nothing is connected until the first request: a database
    /// that is down at start is a temporary failure per request, as it may come back.
    pub(super) fn new(conf: SqlConf) -> Result<Sql, PassdbError> {
        let driver = conf
            .driver
            .ok_or_else(|| PassdbError::Settings("-a sql: driver is not set".into()))?;
        let (statement, params) = prepare(&conf.password_query, &|n| placeholder(driver, n))?;
        let batched = match driver {
            _ if params.is_empty() => None,
            Driver::Pg => {
                let (inner, _) = prepare(&conf.password_query, &batch::placeholder)?;
                Some(Batched::Arrays(batch::statement(&inner, params.len())))
            }
            Driver::MySql => Some(Batched::Unions(batch::unions(&statement))),
            Driver::Sqlite => None,
        };
        let hosts = connect(driver, &conf.connect)?;
        Ok(Sql {
            conf,
            hosts,
            statement,
            params,
            batched,
            decoy: Mutex::new(None),
        })
    }

    /// The rows for `q`, from the first host that answers.
    async fn rows(&self, q: &Query<'_>) -> Result<Vec<Found>, PassdbError> {
        let vars = Vars::of(q);
        let values: batch::Values = self.params.iter().map(|t| t.expand(&vars)).collect();
        let mut last = None;
        for host in self.order() {
            let name = &host.name;
            let first_column = self.conf.cleartext_first_column;
            let db = host.db();
            let batcher = self.batched.as_ref().and_then(|batched| {
                host.batcher
                    .get_or_init(|| Batcher::new(db, &self.statement, batched, first_column))
                    .as_ref()
            });
            let asked = match batcher {
                Some(batcher) => batcher.rows(Arc::clone(&values)).await,
                None => {
                    let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
                    fetch_by(deadline, db, &self.statement, &values, first_column)
                        .await
                        .map_err(Arc::new)
                }
            };
            match asked {
                Ok(rows) => {
                    let mut down = host.down_until.lock().unwrap_or_else(|e| e.into_inner());
                    if down.take().is_some() {
                        tracing::info!("-a sql: {name} answers again");
                    }
                    return Ok(rows);
                }
                Err(e) => last = Some(format!("{name}: {e}")),
            }
            let mut down = host.down_until.lock().unwrap_or_else(|e| e.into_inner());
            if down.is_none() {
                let last = last.as_deref().unwrap_or_default();
                tracing::warn!("-a sql: {last}; skipping it for {DOWN_FOR:?}");
            }
            *down = Some(Instant::now() + DOWN_FOR);
        }
        Err(PassdbError::Sql(format!(
            "no database could be asked ({})",
            last.as_deref().unwrap_or("no host")
        )))
    }

    /// The hosts to try, in order: those not skipped, then (when every one is) all.
    fn order(&self) -> Vec<&Host> {
        let now = Instant::now();
        let up: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| {
                h.down_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none_or(|until| now >= until)
            })
            .collect();
        if up.is_empty() {
            self.hosts.iter().collect()
        } else {
            up
        }
    }

    /// Checks `password` against the rows, on the pool when a value's scheme is costly. With
    /// `-c`, a value the same password matched recently is not hashed again: the slot holds
    /// the stored value, so a changed or removed password misses.
    async fn check(
        &self,
        rows: Vec<Found>,
        login: Login,
        password: Password,
        cx: (Arc<Pool>, Option<Arc<dyn SuccessCache>>),
    ) -> Result<Verified, PassdbError> {
        let (pool, cache) = cx;
        let default = self.conf.default_pass_scheme.clone();
        let unknown = rows.is_empty();
        let values: Vec<Found> = rows
            .into_iter()
            .filter(|r| r.password.as_ref().is_some_and(|p| !p.is_empty()))
            .collect();
        if let Some(first) = values.first().and_then(|r| r.password.as_deref()) {
            let mut decoy = self.decoy.lock().unwrap_or_else(|e| e.into_inner());
            if decoy.as_ref().is_none_or(|d| d.len() != first.len()) {
                *decoy =
                    Some(String::from_utf8_lossy(&scheme::decoy(first.as_bytes())).into_owned());
            }
        }
        if let Some(cache) = &cache {
            let hit = values.iter().find(|r| {
                let value = r.password.as_deref().unwrap_or_default();
                cache.hit(&slot(&login.user, value), password.expose(), Instant::now())
            });
            if let Some(row) = hit {
                tracing::debug!("-a sql: cache hit for {}, hash not recomputed", login.user);
                return Ok(row.verdict(&login));
            }
        }
        // No value to check (no row, or only NULL and empty passwords): the decoy is checked
        // instead, or, before any value has been seen, one is made in the default scheme,
        // which costs what checking one does. Either way no answer comes cheaper.
        let decoy = values
            .is_empty()
            .then(|| self.decoy.lock().unwrap_or_else(|e| e.into_inner()).clone());
        let costly = match &decoy {
            Some(Some(value)) => scheme::is_costly(value.as_bytes(), &default),
            // Making a value: on the pool, whatever its scheme.
            Some(None) => true,
            None => values.iter().any(|r| {
                scheme::is_costly(
                    r.password.as_deref().unwrap_or_default().as_bytes(),
                    &default,
                )
            }),
        };
        let run = move || -> Verified {
            let checked = match decoy {
                None => values,
                Some(Some(value)) => vec![Found {
                    password: Some(value),
                    ..Found::default()
                }],
                Some(None) => {
                    let random = crate::secret::random_bytes::<16>();
                    let _ = scheme::generate(&default, &random, login.user.as_bytes());
                    Vec::new()
                }
            };
            for row in &checked {
                let value = row.password.as_deref().unwrap_or_default();
                match scheme::verify(
                    value.as_bytes(),
                    password.expose(),
                    login.user.as_bytes(),
                    &default,
                ) {
                    Ok(true) => {
                        if let Some(cache) = &cache {
                            cache.insert(
                                &slot(&login.user, value),
                                password.expose(),
                                Instant::now(),
                            );
                        }
                        return row.verdict(&login);
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("-a sql: {e}; that value matches nothing"),
                }
            }
            PassdbResult::PasswordMismatch.into()
        };
        let result = if costly { pool.run(run).await? } else { run() };
        Ok(if unknown {
            PassdbResult::UserUnknown.into()
        } else {
            result
        })
    }
}

/// The cache slot of a check: the user and the stored value the password matched.
fn slot<'a>(user: &'a str, value: &'a str) -> [&'a [u8]; 3] {
    [b"sql", user.as_bytes(), value.as_bytes()]
}

/// Who asks: the user as the query names them, and the client's address (`allow_nets`).
struct Login {
    user: String,
    ip: Option<IpAddr>,
}

impl Found {
    /// The verdict for a row whose password matched: its `nologin` and `allow_nets` fields
    /// still refuse (checked after the password, so they tell nothing to a client that does not
    /// know it).
    fn verdict(&self, login: &Login) -> Verified {
        if self.nologin {
            // The database's words go to the client: printable, and not a page of them.
            let reason = self.reason.as_deref().map(|r| {
                r.chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(REASON_CHARS)
                    .collect::<String>()
            });
            return Verified {
                result: PassdbResult::UserDisabled,
                user: None,
                reason: reason.filter(|r| !r.trim().is_empty()),
            };
        }
        if let Some(nets) = &self.allow_nets {
            if !allowed(nets, login.ip) {
                tracing::info!(
                    "-a sql: {}: allow_nets check failed: {} is not in {nets}",
                    login.user,
                    login
                        .ip
                        .map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string())
                );
                return PassdbResult::PasswordMismatch.into();
            }
        }
        Verified {
            result: PassdbResult::Ok,
            user: self.user.clone().map(String::into_bytes),
            reason: None,
        }
    }
}

/// Whether `ip` is in Dovecot's `allow_nets` list (networks and addresses separated by commas
/// or spaces; `local` stands for a client whose address is not known). An entry that is no
/// network matches nothing.
fn allowed(nets: &str, ip: Option<IpAddr>) -> bool {
    nets.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| !n.is_empty())
        .any(|net| match (net, ip) {
            ("local", None) => true,
            (_, None) | ("local", _) => false,
            (net, Some(ip)) => crate::request::Network::masked(net).is_ok_and(|n| n.contains(ip)),
        })
}

impl Passdb for Sql {
    fn kind(&self) -> PassdbKind {
        MODULE.kind
    }

    fn verify(
        self: Arc<Self>,
        q: &Query<'_>,
        password: Password,
        cx: &Context<'_>,
    ) -> Answer<PassdbResult> {
        self.verify_named(q, password, cx).map(|v| v.result)
    }

    /// The check, and the row's `user` column when the password matched (Postfix's
    /// `sasl_username` then is the name the database has, as with Dovecot).
    fn verify_named(
        self: Arc<Self>,
        q: &Query<'_>,
        password: Password,
        cx: &Context<'_>,
    ) -> Answer<Verified> {
        // As Dovecot: a password that the protocol could not have carried unescaped is
        // refused before the database is asked.
        if password.expose().iter().any(|b| b"\t\r\n\x01".contains(b)) {
            tracing::info!("-a sql: a password with TAB, CR, LF or \\x01 in it, refused");
            return Answer::Now(Ok(PassdbResult::PasswordMismatch.into()));
        }
        let q = q.to_owned();
        let cx = (Arc::clone(cx.pool), cx.cache.cloned());
        Answer::awaited(async move {
            let q = q.query();
            let rows = self.rows(&q).await?;
            let login = Login {
                user: Vars::of(&q).user,
                ip: q.peer.ip(),
            };
            self.check(rows, login, password, cx).await
        })
    }

    fn has_credentials(&self) -> bool {
        true
    }

    /// What the mechanisms that compute with a stored secret can use of the user's values
    /// ([`scheme::credentials`]): a cleartext value, a `{SCRAM-SHA-*}` or a `{DIGEST-MD5}` one;
    /// none for another hash. A row that `nologin` or `allow_nets` refuses gives nothing.
    fn credentials(self: Arc<Self>, q: &Query<'_>, _: &Context<'_>) -> Answer<Credentials> {
        let ip = q.peer.ip();
        let q = q.to_owned();
        Answer::awaited(async move {
            let rows = self.rows(&q.query()).await?;
            Ok(scheme::credentials(
                rows.iter()
                    .filter(|r| !r.nologin)
                    .filter(|r| r.allow_nets.as_deref().is_none_or(|nets| allowed(nets, ip)))
                    .filter_map(|r| r.password.as_deref().map(str::as_bytes)),
                &self.conf.default_pass_scheme,
            ))
        })
    }

    fn default_realm(&self) -> DefaultRealm {
        DefaultRealm::Own(None)
    }

    fn notices(&self) -> Vec<String> {
        self.conf
            .ignored
            .iter()
            .map(|key| format!("-a sql: {key} is not needed to check passwords; ignored"))
            .collect()
    }
}

/// The variables of one request.
struct Vars {
    /// The login, lowercased (Dovecot's default `auth_username_format = %Lu`), with
    /// `@realm` when there is a realm.
    user: String,
    service: String,
    rip: String,
}

impl Vars {
    fn of(q: &Query<'_>) -> Vars {
        let mut user = String::from_utf8_lossy(q.authid).to_ascii_lowercase();
        if !q.realm.is_empty() {
            user.push('@');
            user.push_str(&String::from_utf8_lossy(q.realm).to_ascii_lowercase());
        }
        Vars {
            user,
            service: String::from_utf8_lossy(q.service).into_owned(),
            rip: q
                .peer
                .text()
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .unwrap_or_default(),
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        let (n, d) = match self.user.rsplit_once('@') {
            Some((n, d)) => (n, d),
            None => (self.user.as_str(), ""),
        };
        Some(match name {
            "u" | "user" => self.user.clone(),
            "n" | "username" => n.to_string(),
            "d" | "domain" => d.to_string(),
            "s" | "service" => self.service.clone(),
            "r" | "rip" => self.rip.clone(),
            "l" | "lip" => String::new(),
            _ => return None,
        })
    }
}

/// A parameter's value: text with variables, expanded per request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var { name: String, case: Case },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Piece>);

impl Template {
    fn expand(&self, vars: &Vars) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var { name, case } => {
                    let value = vars.get(name).unwrap_or_default();
                    out.push_str(&match case {
                        Case::Keep => value,
                        Case::Lower => value.to_lowercase(),
                        Case::Upper => value.to_uppercase(),
                    });
                }
            }
        }
        out
    }
}

/// Reads the variable at the start of `s` (after its `%`): its piece and length.
fn variable(s: &str) -> Result<(Piece, usize), SqlError> {
    let mut case = Case::Keep;
    let mut used = 0;
    let mut rest = s;
    loop {
        match rest.chars().next() {
            Some('L') => case = Case::Lower,
            Some('U') => case = Case::Upper,
            _ => break,
        }
        rest = &rest[1..];
        used += 1;
    }
    if let Some(long) = rest.strip_prefix('{') {
        let end = long
            .find('}')
            .ok_or_else(|| SqlError::Syntax(format!("an unclosed %{{ in password_query: {s:?}")))?;
        let name = &long[..end];
        if Vars::known(name) {
            return Ok((
                Piece::Var {
                    name: name.to_string(),
                    case,
                },
                used + end + 2,
            ));
        }
        return Err(SqlError::Syntax(format!(
            "password_query: unknown variable %{{{name}}}"
        )));
    }
    match rest.chars().next() {
        Some(c) if Vars::known(&c.to_string()) => Ok((
            Piece::Var {
                name: c.to_string(),
                case,
            },
            used + 1,
        )),
        Some(c) => Err(SqlError::Syntax(format!(
            "password_query: unknown variable %{c}"
        ))),
        None => Err(SqlError::Syntax("password_query ends with %".into())),
    }
}

impl Vars {
    fn known(name: &str) -> bool {
        matches!(
            name,
            "u" | "user"
                | "n"
                | "username"
                | "d"
                | "domain"
                | "s"
                | "service"
                | "r"
                | "rip"
                | "l"
                | "lip"
        )
    }
}

/// Turns Dovecot's query into a prepared statement: every quoted literal with a variable in
/// it, and every variable outside quotes, becomes a placeholder (`$1` for PostgreSQL, `?`
/// for the others), with the template its value is made from.
fn prepare(
    query: &str,
    placeholder: &dyn Fn(usize) -> String,
) -> Result<(String, Vec<Template>), PassdbError> {
    let bad = PassdbError::Settings;
    let mut sql = String::new();
    let mut params = Vec::new();
    let mut rest = query;
    while let Some(c) = rest.chars().next() {
        match c {
            '\'' => {
                // A literal up to its closing quote ('' inside is a quote).
                let mut text = String::new();
                let mut pieces = Vec::new();
                let mut i = 1;
                let bytes = rest.as_bytes();
                let mut has_var = false;
                loop {
                    match bytes.get(i) {
                        None => return Err(bad("password_query: an unclosed quote".into())),
                        Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => {
                            text.push('\'');
                            i += 2;
                        }
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(b'%') if bytes.get(i + 1) == Some(&b'%') => {
                            text.push('%');
                            i += 2;
                        }
                        Some(b'%') => {
                            let (piece, len) =
                                variable(&rest[i + 1..]).map_err(|e| bad(e.to_string()))?;
                            if !text.is_empty() {
                                pieces.push(Piece::Text(std::mem::take(&mut text)));
                            }
                            pieces.push(piece);
                            has_var = true;
                            i += 1 + len;
                        }
                        Some(_) => {
                            let ch = rest[i..].chars().next().expect("in bounds");
                            text.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                if has_var {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(text));
                    }
                    params.push(Template(pieces));
                    sql.push_str(&placeholder(params.len()));
                } else {
                    // `%%` is a `%` here too, as Dovecot expands the whole query.
                    sql.push('\'');
                    sql.push_str(&text.replace('\'', "''"));
                    sql.push('\'');
                }
                rest = &rest[i..];
            }
            // A comment is copied as it is, to its end: a quote in it opens no literal
            // (`-- Postfixadmin's query`), a variable in it is nothing to bind.
            '-' if rest.starts_with("--") => {
                let end = rest.find('\n').unwrap_or(rest.len());
                sql.push_str(&rest[..end]);
                rest = &rest[end..];
            }
            '/' if rest.starts_with("/*") => {
                let Some(end) = rest[2..].find("*/").map(|at| at + 4) else {
                    return Err(bad("password_query: an unclosed /* comment".into()));
                };
                sql.push_str(&rest[..end]);
                rest = &rest[end..];
            }
            '%' if rest[1..].starts_with('%') => {
                sql.push('%');
                rest = &rest[2..];
            }
            '%' => {
                let (piece, len) = variable(&rest[1..]).map_err(|e| bad(e.to_string()))?;
                params.push(Template(vec![piece]));
                sql.push_str(&placeholder(params.len()));
                rest = &rest[1 + len..];
            }
            c => {
                sql.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    Ok((sql, params))
}

/// The `n`th placeholder of a prepared statement for `driver`.
fn placeholder(driver: Driver, n: usize) -> String {
    match driver {
        Driver::Pg => format!("${n}"),
        Driver::MySql | Driver::Sqlite => "?".to_string(),
    }
}

/// The hosts `connect` describes, not connected yet.
fn connect(driver: Driver, connect: &str) -> Result<Vec<Host>, PassdbError> {
    let bad = |m: String| PassdbError::Settings(format!("-a sql: connect: {m}"));
    if driver == Driver::Sqlite {
        let options = SqliteConnectOptions::new()
            .filename(connect.trim())
            .read_only(true);
        return Ok(vec![Host {
            name: connect.trim().to_string(),
            options: Options::Sqlite(options),
            pool: std::sync::OnceLock::new(),
            batcher: std::sync::OnceLock::new(),
            down_until: Mutex::new(None),
        }]);
    }
    let pairs = connect_pairs(connect).map_err(|e| bad(e.to_string()))?;
    let mut hosts = Vec::new();
    let mut rest = Vec::new();
    for (key, value) in pairs {
        if key == "host" {
            hosts.push(value);
        } else {
            rest.push((key, value));
        }
    }
    if hosts.is_empty() {
        hosts.push("localhost".into());
    }
    let mut dbs = Vec::new();
    for host in hosts {
        // `name:port` (libsasl2's sql_hostnames; `[v6]:port`): that host's own port.
        let (host, port) = match host.rsplit_once(':') {
            Some((name, port))
                if !host.starts_with('/')
                    && port.parse::<u16>().is_ok()
                    && (!name.contains(':') || name.starts_with('[')) =>
            {
                (
                    name.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    port.parse::<u16>().ok(),
                )
            }
            _ => (host, None),
        };
        let options = match driver {
            Driver::Pg => {
                let mut o = PgConnectOptions::new();
                o = if host.starts_with('/') {
                    o.socket(&host)
                } else {
                    o.host(&host)
                };
                for (key, value) in &rest {
                    o = match key.as_str() {
                        "port" => {
                            o.port(value.parse().map_err(|_| bad(format!("port {value:?}")))?)
                        }
                        "dbname" => o.database(value),
                        "user" => o.username(value),
                        "password" => o.password(value),
                        "sslmode" => o.ssl_mode(
                            value
                                .parse()
                                .map_err(|_| bad(format!("sslmode {value:?}")))?,
                        ),
                        "sslrootcert" | "ssl_ca" => o.ssl_root_cert(value),
                        "connect_timeout" | "application_name" => o,
                        other => return Err(bad(format!("unknown key {other:?} for pgsql"))),
                    };
                }
                Options::Pg(match port {
                    Some(port) => o.port(port),
                    None => o,
                })
            }
            Driver::MySql => {
                let mut o = MySqlConnectOptions::new().charset("utf8mb4");
                o = if host.starts_with('/') {
                    o.socket(&host)
                } else {
                    o.host(&host)
                };
                for (key, value) in &rest {
                    o = match key.as_str() {
                        "port" => {
                            o.port(value.parse().map_err(|_| bad(format!("port {value:?}")))?)
                        }
                        "dbname" => o.database(value),
                        "user" => o.username(value),
                        "password" => o.password(value),
                        "ssl_ca" => o
                            .ssl_ca(value)
                            .ssl_mode(sqlx::mysql::MySqlSslMode::VerifyIdentity),
                        "sslmode" => o.ssl_mode(
                            value
                                .parse()
                                .map_err(|_| bad(format!("sslmode {value:?}")))?,
                        ),
                        "client_flags" | "connect_timeout" | "read_timeout" | "write_timeout" => o,
                        other => return Err(bad(format!("unknown key {other:?} for mysql"))),
                    };
                }
                Options::MySql(match port {
                    Some(port) => o.port(port),
                    None => o,
                })
            }
            Driver::Sqlite => unreachable!("handled above"),
        };
        dbs.push(Host {
            name: host,
            options,
            pool: std::sync::OnceLock::new(),
            batcher: std::sync::OnceLock::new(),
            down_until: Mutex::new(None),
        });
    }
    Ok(dbs)
}

/// `key=value` pairs separated by spaces; a value may be in single or double quotes.
fn connect_pairs(text: &str) -> Result<Vec<(String, String)>, SqlError> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| SqlError::Syntax(format!("{rest:?} is not key=value")))?;
        let key = key.trim().to_string();
        let after = after.trim_start();
        let (value, next) = match after.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let end = after[1..]
                    .find(q)
                    .ok_or_else(|| SqlError::Syntax(format!("an unclosed quote in {key}")))?;
                (after[1..1 + end].to_string(), &after[end + 2..])
            }
            _ => match after.find(char::is_whitespace) {
                Some(end) => (after[..end].to_string(), &after[end..]),
                None => (after.to_string(), ""),
            },
        };
        pairs.push((key, value));
        rest = next.trim_start();
    }
    Ok(pairs)
}

/// Why a host gave no rows.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    /// The database could not be asked, or refused.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Its answer cannot be used.
    #[error(transparent)]
    Answer(#[from] SqlError),
    /// No answer by the query's deadline.
    #[error("no answer within {QUERY_TIMEOUT:?}")]
    Timeout,
}

/// [`fetch`], by `deadline`.
async fn fetch_by(
    deadline: tokio::time::Instant,
    db: &Db,
    statement: &str,
    values: &[String],
    first_column: bool,
) -> Result<Vec<Found>, FetchError> {
    tokio::time::timeout_at(deadline, fetch(db, statement, values, first_column))
        .await
        .unwrap_or(Err(FetchError::Timeout))
}

/// Runs the statement with `values` bound on one host.
async fn fetch(
    db: &Db,
    statement: &str,
    values: &[String],
    first_column: bool,
) -> Result<Vec<Found>, FetchError> {
    macro_rules! run {
        ($held:expr) => {{
            let rows = held::asked!($held, conn => {
                let mut query = sqlx::query(statement);
                for value in values {
                    query = query.bind(value.as_str());
                }
                query.fetch_all(conn)
            })?;
            Ok(rows
                .iter()
                .map(|row| read_row(row, first_column, 0))
                .collect::<Result<Vec<Found>, SqlError>>()?)
        }};
    }
    match db {
        Db::Pg(held) => run!(held),
        Db::MySql(held) => run!(held),
        Db::Sqlite(held) => run!(held),
    }
}

/// A row's `password` (which must be there), `user`, `nologin` and `allow_nets` columns; or,
/// for libsasl2's plugin (`first_column`), its first column as a cleartext password. The
/// query's columns start at `from` (a batch's rows have the login's number before them).
fn read_row<R>(row: &R, first_column: bool, from: usize) -> Result<Found, SqlError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use sqlx::Column;
    let column = |name: &str| {
        row.columns()
            .iter()
            .position(|c| c.name().eq_ignore_ascii_case(name))
    };
    if first_column {
        if row.columns().len() <= from {
            return Err(SqlError::Answer("the query returned no column".into()));
        }
        let password: Option<String> = row
            .try_get(from)
            .map_err(|e| SqlError::Answer(format!("the first column: {e}")))?;
        return Ok(Found {
            // Cleartext, whatever it looks like (libsasl2 compares it as it is).
            password: password
                .filter(|p| !p.is_empty())
                .map(|p| format!("{{PLAIN}}{p}")),
            ..Found::default()
        });
    }
    let Some(at) = column("password") else {
        return Err(SqlError::Answer(
            "the query returned no password column".into(),
        ));
    };
    let password: Option<String> = row
        .try_get(row.columns()[at].name())
        .map_err(|e| SqlError::Answer(format!("the password column: {e}")))?;
    let nologin = match column("nologin") {
        Some(at) => row
            .try_get::<Option<String>, _>(row.columns()[at].name())
            .ok()
            .flatten()
            .is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("n")),
        None => false,
    };
    let text = |name: &str| {
        column(name).and_then(|at| {
            row.try_get::<Option<String>, _>(row.columns()[at].name())
                .ok()
                .flatten()
        })
    };
    Ok(Found {
        password,
        nologin,
        user: text("user"),
        allow_nets: text("allow_nets"),
        reason: text("reason"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's placeholders.
    fn pg(n: usize) -> String {
        placeholder(Driver::Pg, n)
    }

    #[test]
    fn variables_become_bound_parameters() {
        let (sql, params) = prepare(
            "SELECT password FROM mailbox WHERE username = '%u' AND active = '1' AND domain = '%Ld' AND x LIKE '50%%' AND y = %n",
            &pg,
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT password FROM mailbox WHERE username = $1 AND active = '1' AND domain = $2 AND x LIKE '50%' AND y = $3"
        );
        let vars = Vars {
            user: "o'brien@example.org".into(),
            service: "smtp".into(),
            rip: String::new(),
        };
        let values: Vec<String> = params.iter().map(|t| t.expand(&vars)).collect();
        assert_eq!(values, ["o'brien@example.org", "example.org", "o'brien"]);
        let (sql, params) = prepare("SELECT password FROM u WHERE u = '%n@%{domain}'", &|n| {
            placeholder(Driver::MySql, n)
        })
        .unwrap();
        assert_eq!(sql, "SELECT password FROM u WHERE u = ?");
        assert_eq!(params[0].expand(&vars), "o'brien@example.org");
        assert!(prepare("SELECT '%x'", &pg).is_err());
        assert!(prepare("SELECT 'open", &pg).is_err());
        // Comments: a quote or a variable in one is neither a literal nor a parameter.
        let (sql, params) = prepare(
            "SELECT password FROM u /* it's %d */ WHERE u = '%u' -- Postfixadmin's, %n",
            &pg,
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT password FROM u /* it's %d */ WHERE u = $1 -- Postfixadmin's, %n"
        );
        assert_eq!(params.len(), 1);
        assert!(prepare("SELECT 1 /* open", &pg).is_err());
    }

    #[test]
    fn libsasl2s_sql_keys() {
        let mut conf = SqlConf::parse(
            "pwcheck_method: auxprop\nauxprop_plugin: sql\nmech_list: plain login\n\
             sql_engine: pgsql\nsql_hostnames: db1:5433, 127.0.0.1\nsql_user: postfix\n\
             sql_passwd: a b\nsql_database: mail\nsql_usessl: yes\n\
             sql_select: SELECT %p FROM users WHERE name = '%u' AND realm = '%r'\n",
        )
        .unwrap();
        conf.finish().unwrap();
        assert_eq!(conf.driver, Some(Driver::Pg));
        assert_eq!(
            conf.password_query,
            "SELECT userPassword FROM users WHERE name = '%n' AND realm = '%d'"
        );
        assert_eq!(
            connect_pairs(&conf.connect).unwrap(),
            [
                ("host", "db1:5433"),
                ("host", "127.0.0.1"),
                ("user", "postfix"),
                ("password", "a b"),
                ("dbname", "mail"),
                ("sslmode", "require")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(conf.cleartext_first_column);
        assert_eq!(conf.default_pass_scheme, "PLAIN");
        let hosts = connect(Driver::Pg, &conf.connect).unwrap();
        assert_eq!(hosts[0].name, "db1");
        assert!(matches!(&hosts[0].options, Options::Pg(o) if o.get_port() == 5433));
        // The plugin's own error text when the query is missing; Dovecot's keys and the
        // plugin's are not mixed.
        let mut missing = SqlConf::parse("sql_engine: mysql\n").unwrap();
        let err = missing.finish().unwrap_err().to_string();
        assert!(err.contains("sql_select option missing"), "{err}");
        let mut mixed = SqlConf::parse("driver = pgsql\nsql_select: SELECT 1\n").unwrap();
        assert!(mixed.finish().is_err());
        let mut bad = SqlConf::parse("sql_select: SELECT x WHERE u = '%x'\n").unwrap();
        assert!(bad.finish().is_err());
    }

    #[test]
    fn allow_nets_as_dovecot_reads_it() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let nets = "192.0.2.0/24, 2001:db8::/32 198.51.100.7,local";
        assert!(allowed(nets, ip("192.0.2.200")));
        assert!(allowed(nets, ip("::ffff:192.0.2.1")));
        assert!(allowed(nets, ip("2001:db8:1::5")));
        assert!(allowed(nets, ip("198.51.100.7")));
        assert!(allowed(nets, None));
        assert!(!allowed(nets, ip("192.0.3.1")));
        assert!(!allowed(nets, ip("198.51.100.8")));
        assert!(!allowed(nets, ip("2001:db9::1")));
        assert!(!allowed("192.0.2.0/24", None));
        assert!(allowed("0.0.0.0/0", ip("203.0.113.9")));
        assert!(!allowed("0.0.0.0/0", ip("::1")));
        assert!(!allowed("192.0.2.0/33, nonsense", ip("192.0.2.1")));
        assert!(!allowed("", ip("192.0.2.1")));
    }

    #[test]
    fn dovecots_file() {
        let conf = SqlConf::parse(
            "# Postfixadmin\ndriver = pgsql\nconnect = host=/run/pg host=db2 dbname=mail user=postfix password='a b'\n\
             default_pass_scheme = sha512-crypt\npassword_query = SELECT username AS user, password \\\n  FROM mailbox WHERE username = '%u'\n\
             user_query = SELECT 1\n",
        )
        .unwrap();
        assert_eq!(conf.driver, Some(Driver::Pg));
        assert_eq!(conf.default_pass_scheme, "SHA512-CRYPT");
        assert_eq!(
            conf.password_query,
            "SELECT username AS user, password FROM mailbox WHERE username = '%u'"
        );
        assert_eq!(conf.ignored, ["user_query"]);
        assert_eq!(
            connect_pairs(&conf.connect).unwrap()[4],
            ("password".to_string(), "a b".to_string())
        );
        let err = SqlConf::parse("driver = pgsql\npasword_query = x\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("line 2: unknown key \"pasword_query\""),
            "{err}"
        );
        assert!(SqlConf::parse("driver = oracle\n").is_err());
    }
}
