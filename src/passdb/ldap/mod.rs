//! The LDAP passdb (`-a ldap`, Cyrus's `saslauthd.conf`): a search for the user's entry on a
//! pooled connection bound as `ldap_bind_dn`, then a bind as the entry's DN with the password
//! on a connection kept for user binds only (`bind`); a bind at once as the DN `ldap_filter`
//! makes (`fastbind`); or the entry's `ldap_password_attr` compared here (`custom`). Optional
//! group membership after a success, as Cyrus checks it.
//!
//! Unlike Cyrus's one libldap handle per worker process, which keeps a stale bound state (a
//! login goes on succeeding with the directory down, cyrus-sasl #550): every request asks the
//! directory; a connection that fails is dropped, never trusted again; the servers are tried
//! in order, a dead one skipped and probed in the background until it answers again; and
//! every operation has a deadline short enough that a second server can still answer within
//! the driver's reply deadline. A directory that cannot be reached is an error (never a
//! wrong password, never a success). All of it on the runtime (ldap3 over tokio): no
//! blocking thread waits on the network. Where the directory offers its changes (RFC 4533),
//! they are followed (`follow`), and what a search found is used until something changes.

pub mod conf;
pub mod filter;
mod follow;
pub mod guard;
mod servers;
mod tls;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ldap3::{LdapConnSettings, SearchEntry, SearchOptions};

use self::conf::{AuthMethod, Deref, GroupMatch, LdapConf, Scope};
use self::filter::{expand, Tokens};
use self::servers::{rc, Conn, Failure};
use super::failover::Servers;
use super::scheme;
use super::{Answer, Context, DefaultRealm, Module, Passdb, PassdbError, Query};
use crate::pool::Pool;
use crate::secret::{Credentials, Password};
use crate::verdict::{PassdbKind, PassdbResult, Replies, SuccessCache};

/// `-a ldap`.
pub(super) const MODULE: Module = Module {
    kind: PassdbKind {
        name: "ldap",
        replies: Replies::BARE,
    },
    about: Some("a directory, as Cyrus's saslauthd.conf (-O) or the [ldap] table says"),
    open: |settings| {
        Ok(Arc::new(Ldap::new(conf::LdapConf::from_settings(
            settings,
        )?)?))
    },
    table: Some(super::Table {
        about: "For -a ldap: saslauthd.conf's keys (ldap_servers = \"ldap://ldap1/\", ...), over the file -O names.",
        check: |key, value| conf::check_key(key, value).map_err(Into::into),
    }),
};

/// One operation's deadline at most (`ldap_timeout` when shorter): short enough that after a
/// server that does not answer, the next one still can within the driver's 4 s.
const OP_TIMEOUT: Duration = Duration::from_millis(1500);

/// Connections bound as users kept for reuse (each serves one bind at a time).
const IDLE_BIND_CONNECTIONS: usize = 16;

/// What searches found, remembered while the directory's changes are followed: at most this
/// many filters (then all are forgotten at once).
const FOUND_ENTRIES: usize = 65_536;

/// The directory passdb.
pub struct Ldap {
    conf: LdapConf,
    servers: Servers,
    settings: LdapConnSettings,
    op_timeout: Duration,
    /// Connections bound as `ldap_bind_dn` (or anonymous), for searches and compares only.
    searchers: Mutex<Vec<Conn>>,
    next_searcher: AtomicUsize,
    /// Connections last bound as some user: for the next user bind only, never a search.
    binders: Mutex<Vec<Conn>>,
    /// The RDN an unknown user's password is bound as (`bind`): an entry nobody has, random
    /// per process, so that an unknown user costs the directory the same round trip as a
    /// wrong password.
    decoy_rdn: String,
    /// A value shaped like the last `ldap_password_attr` value seen (`custom`: same scheme,
    /// cost and salt, no secret), which an unknown user's password is checked against.
    decoy_value: Mutex<Option<Vec<u8>>>,
    /// The generation of the directory's content, when its changes are followed (`bind`
    /// method, `ldap_follow_changes`, a search base without tokens).
    changes: Option<Arc<follow::Changes>>,
    /// Whether the stream that follows them was started (on the first request: it needs the
    /// runtime), and what ends it when the passdb is dropped.
    following: OnceLock<tokio::sync::oneshot::Sender<()>>,
    /// Which entry (none, or several: `None`) a search found, by filter (the base and scope
    /// are fixed while changes are followed), with the generation it was found in.
    found: Mutex<HashMap<String, (u64, Option<String>)>>,
}

impl std::fmt::Debug for Ldap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ldap")
            .field("conf", &self.conf)
            .finish_non_exhaustive()
    }
}

impl Ldap {
    /// The passdb `conf` describes (nothing is connected until the first request; a server
    /// list that cannot be reached is an error per request, as the directory may come back).
    pub fn new(conf: LdapConf) -> Result<Ldap, PassdbError> {
        let op_timeout = conf.timeout.min(OP_TIMEOUT);
        // What a search finds can be remembered only when every change to it is seen: one
        // base to follow, no alias leading out of it.
        let follows = conf.follow_changes
            && conf.auth_method == AuthMethod::Bind
            && !conf.search_base.contains('%')
            && conf.deref == Deref::Never;
        let changes = follows.then(|| Arc::new(follow::Changes::new(&conf.filter)));
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(op_timeout)
            .set_starttls(conf.start_tls);
        if conf.uses_tls() {
            let tls = tls::client_config(&conf).map_err(|e| PassdbError::Ldap {
                server: conf.servers.join(" "),
                message: e.to_string(),
            })?;
            settings = settings.set_config(Arc::new(tls));
        }
        let servers = Servers::new("LDAP server", conf.servers.iter().cloned());
        Ok(Ldap {
            conf,
            servers,
            settings,
            op_timeout,
            searchers: Mutex::new(Vec::new()),
            next_searcher: AtomicUsize::new(0),
            binders: Mutex::new(Vec::new()),
            decoy_rdn: format!("cn=saslauthd-rs decoy {:016x}", crate::secret::random_u64()),
            decoy_value: Mutex::new(None),
            changes,
            following: OnceLock::new(),
            found: Mutex::new(HashMap::new()),
        })
    }

    /// Starts following the directory's changes (once; on the runtime).
    fn follow(&self) {
        let Some(changes) = &self.changes else {
            return;
        };
        if self.following.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.following.get_or_init(|| {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let follow = follow::Follow {
                servers: self.servers.clone(),
                settings: self.settings.clone(),
                op_timeout: self.op_timeout,
                bind_dn: self.conf.bind_dn.clone(),
                bind_pw: self.conf.bind_pw.clone(),
                base: self.conf.search_base.clone(),
                changes: Arc::clone(changes),
            };
            runtime.spawn(follow.run(stopped));
            stop
        });
    }

    /// The entry's DN a search for `key` found in `generation`, if it is known.
    fn found(&self, key: &str, generation: u64) -> Option<Option<String>> {
        let found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        match found.get(key) {
            Some((g, dn)) if *g == generation => Some(dn.clone()),
            _ => None,
        }
    }

    fn remember(&self, key: String, generation: u64, dn: Option<String>) {
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        if found.len() >= FOUND_ENTRIES {
            found.clear();
        }
        found.insert(key, (generation, dn));
    }

    /// The entry a `bind` request's filter finds (`None`: none, or several), and what its
    /// cache slot is stamped with. While the directory's changes are followed, what a search
    /// found in this generation is still what it would find: no search, and the stamp is the
    /// generation. Otherwise the search, which with the cache (`cached`) returns the entry's
    /// change stamps.
    async fn locate(
        &self,
        tokens: &Tokens<'_>,
        cached: bool,
    ) -> Result<(Option<String>, String), PassdbError> {
        let followed = self.changes.as_ref().and_then(|c| Some((c, c.now()?)));
        let Some((changes, generation)) = followed else {
            let attrs = match cached {
                true => vec!["entryCSN".into(), "modifyTimestamp".into()],
                false => vec!["1.1".into()],
            };
            let Some(entry) = self.find(tokens, attrs).await? else {
                return Ok((None, String::new()));
            };
            let stamp = [
                lookup_attr(&entry, "entryCSN"),
                lookup_attr(&entry, "modifyTimestamp"),
            ]
            .iter()
            .flatten()
            .flat_map(|values| values.iter())
            .cloned()
            .collect::<Vec<String>>()
            .join(" ");
            return Ok((Some(entry.dn), stamp));
        };
        // Followed only with a base without tokens and one scope: the filter alone says
        // what a search finds.
        let filter = expand(&self.conf.filter, tokens);
        let dn = match self.found(&filter, generation) {
            Some(dn) => dn,
            None => {
                let dn = self
                    .find_by(&filter, tokens, vec!["1.1".into()])
                    .await?
                    .map(|e| e.dn);
                if let Some(dn) = &dn {
                    changes.found_user(dn);
                }
                self.remember(filter, generation, dn.clone());
                dn
            }
        };
        // The entry's own changes count for its cached success too (follow's doc).
        let own = dn.as_deref().map_or(0, |dn| changes.own(dn));
        Ok((dn, format!("generation {generation} {own}")))
    }

    /// The settings.
    pub fn conf(&self) -> &LdapConf {
        &self.conf
    }

    /// The user's entry: its DN and the attributes asked for; `None` for no entry or several.
    async fn find(
        &self,
        tokens: &Tokens<'_>,
        attrs: Vec<String>,
    ) -> Result<Option<SearchEntry>, PassdbError> {
        self.find_by(&expand(&self.conf.filter, tokens), tokens, attrs)
            .await
    }

    /// [`Ldap::find`] with `ldap_filter` already expanded for these tokens.
    async fn find_by(
        &self,
        filter: &str,
        tokens: &Tokens<'_>,
        attrs: Vec<String>,
    ) -> Result<Option<SearchEntry>, PassdbError> {
        let base = expand(&self.conf.search_base, tokens);
        let scope = ldap_scope(self.conf.scope);
        let options = SearchOptions::new()
            .sizelimit(2)
            .timelimit(self.conf.time_limit.try_into().unwrap_or(i32::MAX))
            .deref(match self.conf.deref {
                Deref::Never => ldap3::DerefAliases::Never,
                Deref::Searching => ldap3::DerefAliases::Searching,
                Deref::Finding => ldap3::DerefAliases::Finding,
                Deref::Always => ldap3::DerefAliases::Always,
            });
        let (base, attrs) = (&base, &attrs);
        let found = self
            .with_searcher(|mut conn| {
                let options = options.clone();
                async move {
                    let result = self
                        .op(conn.ldap.with_search_options(options).search(
                            base,
                            scope,
                            filter,
                            attrs.clone(),
                        ))
                        .await?;
                    let ldap3::SearchResult(entries, done) = result;
                    match done.rc {
                        rc::SUCCESS | rc::SIZE_LIMIT_EXCEEDED | rc::NO_SUCH_OBJECT => {
                            guard::unpanicked(|| {
                                entries
                                    .into_iter()
                                    .map(SearchEntry::construct)
                                    .collect::<Vec<_>>()
                            })
                            .map_err(|panic| Failure::Broken(panic.to_string()))
                        }
                        code => Err(Failure::Answer(format!(
                            "search {filter} under {base:?}: {} ({code})",
                            done.text
                        ))),
                    }
                }
            })
            .await?;
        match found.len() {
            1 => Ok(found.into_iter().next()),
            0 => Ok(None),
            n => {
                tracing::info!(filter = %filter, "LDAP: {n} entries match; no user is chosen");
                Ok(None)
            }
        }
    }

    /// A bind as `dn` with `password` on a connection that serves user binds only.
    async fn bind_as(&self, dn: &str, password: &str) -> Result<PassdbResult, PassdbError> {
        let (mut skip, mut fresh) = (None, false);
        for _ in 0..3 {
            let pooled = {
                let mut idle = self.binders.lock().unwrap_or_else(|e| e.into_inner());
                let at = idle
                    .iter()
                    .position(|c| Some(c.server) != skip && self.servers.get(c.server).alive());
                at.filter(|_| !fresh).map(|i| idle.swap_remove(i))
            };
            let was_pooled = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => self.on_first_server(skip, |i| self.connect(i)).await?,
            };
            let server = conn.server;
            // The password policy control: a server with ppolicy says why a bind failed.
            conn.ldap.with_controls(ldap3::controls::RawControl {
                ctype: PPOLICY_OID.into(),
                crit: false,
                val: None,
            });
            match self.op(conn.ldap.simple_bind(dn, password)).await {
                Ok(result) => {
                    let policy = result
                        .ctrls
                        .iter()
                        .find(|c| c.1.ctype == PPOLICY_OID)
                        .and_then(|c| c.1.val.as_deref())
                        .and_then(ppolicy_error);
                    let verdict = match (result.rc, policy) {
                        // ppolicy: accountLocked(1); passwordExpired(0) and changeAfterReset(2)
                        // come only after a right password.
                        (rc::INVALID_CREDENTIALS, Some(1)) => Some(PassdbResult::UserDisabled),
                        (rc::INVALID_CREDENTIALS, Some(0 | 2)) => Some(PassdbResult::PassExpired),
                        (rc, _) => match rc {
                            rc::SUCCESS => Some(PassdbResult::Ok),
                            // AD says why in the text; anyone else: a wrong password.
                            rc::INVALID_CREDENTIALS => Some(active_directory_verdict(&result.text)),
                            rc::INSUFFICIENT_ACCESS => Some(PassdbResult::PasswordMismatch),
                            rc::NO_SUCH_OBJECT | rc::INVALID_DN_SYNTAX => {
                                Some(PassdbResult::UserUnknown)
                            }
                            // A locked or inactivated account (ppolicy, 389 DS's nsAccountLock).
                            rc::UNWILLING_TO_PERFORM => Some(PassdbResult::UserDisabled),
                            _ => None,
                        },
                    };
                    let mut idle = self.binders.lock().unwrap_or_else(|e| e.into_inner());
                    if idle.len() < IDLE_BIND_CONNECTIONS {
                        idle.push(conn);
                    }
                    drop(idle);
                    return verdict.ok_or_else(|| {
                        self.error(server, format!("bind: {} ({})", result.text, result.rc))
                    });
                }
                Err(Failure::Broken(why)) if was_pooled => {
                    tracing::debug!(server = %self.servers.get(server).name, "LDAP: a pooled bind connection broke ({why}); reconnecting");
                    self.binders
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|c| c.server != server);
                    fresh = true;
                }
                Err(Failure::Server(why) | Failure::Broken(why) | Failure::Answer(why)) => {
                    self.mark_dead(server, &why);
                    (skip, fresh) = (Some(server), false);
                }
            }
        }
        Err(PassdbError::Ldap {
            server: self.conf.servers.join(" "),
            message: "every LDAP server tried failed".into(),
        })
    }

    /// Whether `dn` is in the group the settings name.
    async fn member(&self, tokens: &Tokens<'_>) -> Result<bool, PassdbError> {
        match self.conf.group_match {
            GroupMatch::Attr => {
                let group = expand(&self.conf.group_dn, tokens);
                let (group, attr, dn) = (&group, &self.conf.group_attr, tokens.dn);
                self.with_searcher(|mut conn| async move {
                    let result = self.op(conn.ldap.compare(group, attr, dn)).await?;
                    match result.0.rc {
                        rc::COMPARE_TRUE => Ok(true),
                        rc::COMPARE_FALSE | rc::NO_SUCH_OBJECT => Ok(false),
                        code => Err(Failure::Answer(format!(
                            "compare {attr} of {group}: {} ({code})",
                            result.0.text
                        ))),
                    }
                })
                .await
            }
            GroupMatch::Filter => {
                let filter = expand(&self.conf.group_filter, tokens);
                let base = expand(&self.conf.group_search_base, tokens);
                let scope = ldap_scope(self.conf.group_scope);
                let (filter, base) = (&filter, &base);
                self.with_searcher(|mut conn| async move {
                    let result = self
                        .op(conn.ldap.search(base, scope, filter, vec!["1.1"]))
                        .await?;
                    match result.1.rc {
                        rc::SUCCESS | rc::SIZE_LIMIT_EXCEEDED => Ok(!result.0.is_empty()),
                        rc::NO_SUCH_OBJECT => Ok(false),
                        code => Err(Failure::Answer(format!(
                            "group search {filter}: {} ({code})",
                            result.1.text
                        ))),
                    }
                })
                .await
            }
        }
    }

    fn grouped(&self) -> bool {
        match self.conf.group_match {
            GroupMatch::Attr => !self.conf.group_dn.is_empty(),
            GroupMatch::Filter => !self.conf.group_filter.is_empty(),
        }
    }

    /// Checks `password` for the query's user (the realm and service for `%r`, `%d`, `%s`).
    ///
    /// With the credential cache (`-c`, `bind` method), a success is remembered with the
    /// entry's DN and its change stamps (`entryCSN`, `modifyTimestamp`), which the search
    /// that finds the entry returns on every request: the same password for an entry that has
    /// not changed is a success without the bind; any change to the entry (a new password) or
    /// another password goes to the directory again, and a directory that cannot be searched
    /// is an error, cached or not.
    ///
    /// While the directory's changes are followed ([`follow`]), the search itself is skipped
    /// for a filter already searched in the current generation, and the cache's slot carries
    /// the generation instead of the stamps: any change under the base sends the next request
    /// to the directory again.
    async fn check(
        &self,
        q: &Query<'_>,
        password: &Password,
        cache: Option<&(dyn SuccessCache + '_)>,
        pool: &Pool,
    ) -> Result<PassdbResult, PassdbError> {
        // The directory speaks UTF-8; a name that is not cannot be anyone there.
        let (Ok(user), Ok(realm), Ok(service), Ok(secret)) = (
            std::str::from_utf8(q.authid),
            std::str::from_utf8(q.realm),
            std::str::from_utf8(q.service),
            std::str::from_utf8(password.expose()),
        ) else {
            return Ok(PassdbResult::UserUnknown);
        };
        if secret.is_empty() {
            // An empty password is an unauthenticated bind, which succeeds: never that.
            return Ok(PassdbResult::PasswordMismatch);
        }
        let mut tokens = Tokens {
            user,
            realm,
            service,
            dn: "",
        };
        let (verdict, dn) = match self.conf.auth_method {
            AuthMethod::Fastbind => {
                let dn = expand(&self.conf.filter, &tokens);
                (self.bind_as(&dn, secret).await?, dn)
            }
            AuthMethod::Bind => {
                self.follow();
                let (dn, stamp) = self.locate(&tokens, cache.is_some()).await?;
                match dn {
                    None => {
                        // The same bind a wrong password costs, as an entry nobody has.
                        let base = expand(&self.conf.search_base, &tokens);
                        let decoy = match base.is_empty() {
                            true => self.decoy_rdn.clone(),
                            false => format!("{},{base}", self.decoy_rdn),
                        };
                        self.bind_as(&decoy, secret).await?;
                        (PassdbResult::UserUnknown, String::new())
                    }
                    Some(dn) => {
                        let slot: [&[u8]; 4] =
                            [b"ldap", dn.as_bytes(), stamp.as_bytes(), service.as_bytes()];
                        let now = std::time::Instant::now();
                        let cached = match cache {
                            Some(cache) if !stamp.is_empty() => Some(cache),
                            _ => None,
                        };
                        if cached.is_some_and(|c| c.hit(&slot, password.expose(), now)) {
                            (PassdbResult::Ok, dn)
                        } else {
                            let verdict = self.bind_as(&dn, secret).await?;
                            if let (PassdbResult::Ok, Some(cache)) = (verdict, cached) {
                                cache.insert(&slot, password.expose(), now);
                            }
                            (verdict, dn)
                        }
                    }
                }
            }
            AuthMethod::Custom => {
                let attr = self.conf.password_attr.clone();
                let entry = self.find(&tokens, vec![attr.clone()]).await?;
                let decoy = |values: &[String]| values.first().map(|v| scheme::decoy(v.as_bytes()));
                let values: Vec<Vec<u8>> = match &entry {
                    Some(entry) => {
                        let values = lookup_attr(entry, &attr).cloned().unwrap_or_default();
                        if let Some(shape) = decoy(&values) {
                            *self.decoy_value.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(shape);
                        }
                        values.into_iter().map(String::into_bytes).collect()
                    }
                    // An unknown user's password is checked as a known one's would be.
                    None => vec![self
                        .decoy_value
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()
                        .unwrap_or_else(|| b"\0no such user\0".to_vec())],
                };
                // {CRYPT} runs libxcrypt, which may take milliseconds: on the pool, never on
                // the runtime's threads.
                let given = zeroize::Zeroizing::new(password.expose().to_vec());
                let matched = pool
                    .run(move || values.iter().any(|v| scheme::check(v, &given)))
                    .await?;
                match (entry, matched) {
                    (None, _) => (PassdbResult::UserUnknown, String::new()),
                    (Some(entry), true) => (PassdbResult::Ok, entry.dn),
                    (Some(entry), false) => (PassdbResult::PasswordMismatch, entry.dn),
                }
            }
        };
        if verdict == PassdbResult::Ok && self.grouped() {
            tokens.dn = &dn;
            if !self.member(&tokens).await? {
                tracing::info!(user = %user, "LDAP: not a member of the group the settings name");
                return Ok(PassdbResult::UserDisabled);
            }
        }
        Ok(verdict)
    }
}

impl Ldap {
    /// The user's cleartext secret: the first `ldap_password_attr` value without a `{scheme}`
    /// prefix (none for a user whose values are all hashed, or who does not exist).
    async fn cleartext(&self, q: &Query<'_>) -> Result<Credentials, PassdbError> {
        let none = Credentials::default();
        let (Ok(user), Ok(realm), Ok(service)) = (
            std::str::from_utf8(q.authid),
            std::str::from_utf8(q.realm),
            std::str::from_utf8(q.service),
        ) else {
            return Ok(none);
        };
        let tokens = Tokens {
            user,
            realm,
            service,
            dn: "",
        };
        let attr = self.conf.password_attr.clone();
        let Some(entry) = self.find(&tokens, vec![attr.clone()]).await? else {
            return Ok(none);
        };
        let plaintext = lookup_attr(&entry, &attr)
            .and_then(|values| values.iter().find(|v| !v.starts_with('{')))
            .map(|v| zeroize::Zeroizing::new(v.as_bytes().to_vec()));
        Ok(Credentials {
            plaintext,
            auth_password: None,
            digest_md5: None,
            cram_md5: None,
        })
    }
}

/// Every check awaits the directory on the runtime (ldap3 over tokio): no thread waits on
/// the network; a `{CRYPT}` value of `custom` is checked on the pool.
impl Passdb for Ldap {
    fn kind(&self) -> PassdbKind {
        MODULE.kind
    }

    fn verify(
        self: Arc<Self>,
        q: &Query<'_>,
        password: Password,
        cx: &Context<'_>,
    ) -> Answer<PassdbResult> {
        let (q, cache, pool) = (q.to_owned(), cx.cache.cloned(), Arc::clone(cx.pool));
        Answer::awaited(async move {
            self.check(&q.query(), &password, cache.as_deref(), &pool)
                .await
        })
    }

    /// With `custom`, whose password attribute the administrator keeps in cleartext for
    /// CRAM-MD5 and SCRAM, the Dovecot socket offers those mechanisms too.
    fn has_credentials(&self) -> bool {
        self.conf.auth_method == AuthMethod::Custom
    }

    fn credentials(self: Arc<Self>, q: &Query<'_>, _: &Context<'_>) -> Answer<Credentials> {
        if !self.has_credentials() {
            return Answer::Now(Ok(Credentials::default()));
        }
        let q = q.to_owned();
        Answer::awaited(async move { self.cleartext(&q.query()).await })
    }

    /// `ldap_default_realm`, else `--realm`: never the host name, as Cyrus's `lak.c`.
    fn default_realm(&self) -> DefaultRealm {
        let own = &self.conf.default_realm;
        DefaultRealm::Own((!own.is_empty()).then(|| own.as_bytes().to_vec()))
    }
}

/// The password policy control (draft-behera-ldap-password-policy).
const PPOLICY_OID: &str = "1.3.6.1.4.1.42.2.27.8.5.1";

/// What an Active Directory (or Samba AD) bind refusal says, from the Win32 code in its text
/// (`80090308: LdapErr: DSID-..., comment: AcceptSecurityContext error, data 775, v4563`).
/// The server names a disabled account (533) or a password that must change (532, 773) only
/// after the right password, and a locked (775) or expired (701) account whatever the
/// password; any other text, or none, is a wrong password.
fn active_directory_verdict(text: &str) -> PassdbResult {
    let code = text
        .split(", ")
        .find_map(|part| part.strip_prefix("data "))
        .unwrap_or_default();
    match code {
        "533" | "701" | "775" => PassdbResult::UserDisabled,
        "532" | "773" => PassdbResult::PassExpired,
        _ => PassdbResult::PasswordMismatch,
    }
}

/// The `error` of a password policy response control's value (`SEQUENCE { warning [0]
/// OPTIONAL, error [1] ENUMERATED OPTIONAL }`), when it has one.
fn ppolicy_error(value: &[u8]) -> Option<u8> {
    // A short-form length only: the value is a few bytes.
    let (&tag, rest) = value.split_first()?;
    let (&len, mut rest) = rest.split_first()?;
    if tag != 0x30 || len & 0x80 != 0 || rest.len() < usize::from(len) {
        return None;
    }
    rest = &rest[..usize::from(len)];
    while let [tag, len, body @ ..] = rest {
        let len = usize::from(*len);
        if len & 0x80 != 0 || body.len() < len {
            return None;
        }
        if *tag == 0x81 && len == 1 {
            return Some(body[0]);
        }
        rest = &body[len..];
    }
    None
}

/// An attribute's values, its name matched without regard to case.
fn lookup_attr<'a>(entry: &'a SearchEntry, name: &str) -> Option<&'a Vec<String>> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn ldap_scope(scope: Scope) -> ldap3::Scope {
    match scope {
        Scope::Subtree => ldap3::Scope::Subtree,
        Scope::OneLevel => ldap3::Scope::OneLevel,
        Scope::Base => ldap3::Scope::Base,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn active_directory_refusals() {
        use super::active_directory_verdict as verdict;
        use crate::verdict::PassdbResult;
        let text = |code: &str| {
            format!("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {code}, v1db1")
        };
        assert_eq!(verdict(&text("52e")), PassdbResult::PasswordMismatch);
        assert_eq!(verdict(&text("533")), PassdbResult::UserDisabled);
        assert_eq!(verdict(&text("775")), PassdbResult::UserDisabled);
        assert_eq!(verdict(&text("701")), PassdbResult::UserDisabled);
        assert_eq!(verdict(&text("532")), PassdbResult::PassExpired);
        assert_eq!(verdict(&text("773")), PassdbResult::PassExpired);
        assert_eq!(verdict(&text("530")), PassdbResult::PasswordMismatch);
        // OpenLDAP's and 389 DS's texts: no code, a wrong password.
        assert_eq!(verdict(""), PassdbResult::PasswordMismatch);
        assert_eq!(
            verdict("Invalid credentials"),
            PassdbResult::PasswordMismatch
        );
    }

    #[test]
    fn ppolicy_errors() {
        // error: accountLocked (1), after a warning [0] { timeBeforeExpiration [0] 5 }.
        assert_eq!(
            super::ppolicy_error(&[0x30, 0x03, 0x81, 0x01, 0x01]),
            Some(1)
        );
        assert_eq!(
            super::ppolicy_error(&[0x30, 0x08, 0xa0, 0x03, 0x80, 0x01, 0x05, 0x81, 0x01, 0x00]),
            Some(0)
        );
        assert_eq!(super::ppolicy_error(&[0x30, 0x00]), None);
        assert_eq!(super::ppolicy_error(&[0x30, 0x05, 0x81]), None, "truncated");
        assert_eq!(super::ppolicy_error(&[]), None);
    }
}
