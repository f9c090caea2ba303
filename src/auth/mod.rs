//! The driver, one for both protocols (Dovecot's `auth-request.c` and
//! `auth-request-handler.c`): from a decoded request to a verdict, through the realm rules,
//! the credential cache, the passdb (inline when it never blocks, otherwise on the bounded
//! pool) and the failure delay, with one log line per authentication.
//!
//! - [`Authenticator::verify_plain`] is the one password check: the saslauthd protocol's only
//!   operation, and PLAIN's and LOGIN's over the Dovecot protocol. It answers at once when the
//!   passdb never blocks and otherwise hands back a [`Check`] to await.
//! - `handler` holds the Dovecot protocol's request table and runs the mechanisms: the
//!   mech ⇄ passdb loop, CONT, CANCEL, expiry. Key derivations (`Authenticator::derive`) run
//!   on the pool and are cached, and an unknown user's cost what a known user's do.
//! - `penalty`, `pool`, `cache` and `bounded` are the driver's own parts.

mod bounded;
mod cache;
pub(crate) mod handler;
pub(crate) mod penalty;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::mech::{self, Derivation, Keys, MechFailure, MechInfo};
use crate::metrics;
use crate::passdb::{
    self, Answer, CacheUse, DefaultRealm, Passdb, PassdbError, Query, TokenCheck, TokenVerdict,
};
use crate::pool::{JobLost, Pool};
use crate::request::{AuthRequest, Peer, Printable};
use crate::secret::{Credentials, Password};
use crate::verdict::{Outcome, PassdbKind, PassdbResult, Refusal, SuccessCache};

use bounded::BoundedMap;
pub use cache::Cache;
pub use penalty::{
    check_store, PenaltyList, StoreError, StoreSettings, StoreUrl, StoreUrlError, Throttle,
    DEFAULT_PREFIX as DEFAULT_STORE_PREFIX, DEFAULT_USER_THRESHOLD, DEFAULT_USER_WINDOW,
};
use penalty::{Attempt, PeerKey, Penalty, SharedFailure};

/// How long a passdb may take (time in the pool's queue included) before the request is
/// answered as an internal failure, unless [`Options::backend_timeout`] says otherwise. With
/// the failure delay's cap (4.5 s) every reply comes well inside Postfix's 10 s.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(4);

/// SCRAM's PBKDF2 iteration count unless configured (RFC 7677's minimum, Dovecot's default).
pub const DEFAULT_SCRAM_ITERATIONS: u32 = mech::scram::ITERATIONS;

/// The pool size for `-n 0` (Cyrus: a process per connection).
pub(crate) const UNBOUNDED_WORKERS: usize = 64;

/// Derived SCRAM keys remembered at most, and for how long.
const MAX_DERIVED_KEYS: usize = 16_384;
const DERIVED_KEYS_TTL: Duration = Duration::from_secs(3600);

/// How the driver runs.
#[derive(Debug)]
pub struct Options {
    /// Blocking backend calls and key derivations at once (`-n`; 0 means
    /// `UNBOUNDED_WORKERS`).
    pub workers: usize,
    /// The throttle: the base failure delay (0 = none), the user guard, the shared store.
    pub throttle: Throttle,
    /// SCRAM's PBKDF2 iteration count.
    pub scram_iterations: u32,
    /// The host name (CRAM-MD5 challenges), worked out once at start-up.
    pub host_name: String,
    /// The credential cache (`-c`), for passdbs whose checks are costly.
    pub cache: Option<Cache>,
    /// The mechanisms the Dovecot socket offers (canonical names from
    /// [`mech::parse_names`]); `None`: every one the passdb can serve but DIGEST-MD5.
    pub mechanisms: Option<Vec<&'static str>>,
    /// Whether the metrics count (`metrics = false`: they stay at zero). Fixed at start: a
    /// reload keeps the process's metrics.
    pub metrics: bool,
    /// How long the passdb may take to answer ([`BACKEND_TIMEOUT`]).
    pub backend_timeout: Duration,
    /// The check of OAuth 2.0 tokens (`[oauth2]`), when there is one: OAUTHBEARER and
    /// XOAUTH2 are offered then.
    pub tokens: Option<Arc<dyn TokenCheck>>,
}

/// How realms are chosen, as Cyrus's saslauthd does.
#[derive(Debug, Clone)]
pub struct RealmPolicy {
    /// Used when the request's realm is empty: `--realm`, else the host name.
    pub default_realm: Vec<u8>,
    /// Whether `--realm` named `default_realm`. The host name is no default for a passdb
    /// with a [default realm of its own](DefaultRealm::Own) (LDAP's `ldap_default_realm`):
    /// there, as in Cyrus's, an empty realm is that one, else `--realm`, else empty.
    pub named: bool,
    /// `-r`: a non-empty realm is appended to the login (`login@realm`), and still passed.
    pub combine: bool,
}

impl RealmPolicy {
    /// The realm that stands for a request's empty one, under `passdb`'s rule: the one
    /// place the realm rule is written.
    pub fn default_for(&self, passdb: &dyn Passdb) -> Vec<u8> {
        match passdb.default_realm() {
            DefaultRealm::Daemon => self.default_realm.clone(),
            DefaultRealm::Own(Some(own)) => own,
            DefaultRealm::Own(None) if self.named => self.default_realm.clone(),
            DefaultRealm::Own(None) => Vec::new(),
        }
    }
}

/// Which protocol a request came by, and which SASL mechanism it runs, for log lines.
#[derive(Debug, Clone, Copy)]
pub struct Via {
    protocol: metrics::Protocol,
    mechanism: Option<&'static str>,
    /// The mechanism carries an OAuth 2.0 token: the token check, not the passdb, answers.
    token: bool,
}

impl Via {
    /// The saslauthd protocol (no SASL mechanism: libsasl2 ran it).
    pub const SASLAUTHD: Via = Via {
        protocol: metrics::Protocol::Saslauthd,
        mechanism: None,
        token: false,
    };

    /// The admin socket's `test` command (as `doveadm auth test`).
    pub const ADMIN: Via = Via {
        protocol: metrics::Protocol::Admin,
        mechanism: None,
        token: false,
    };

    /// The Dovecot protocol, running `mechanism`.
    pub fn dovecot(mechanism: &'static str) -> Via {
        Via {
            protocol: metrics::Protocol::Dovecot,
            mechanism: Some(mechanism),
            token: false,
        }
    }

    /// The same, for a mechanism that carries a token (the token check's name in the log
    /// and the metrics, not the passdb's).
    pub(crate) fn carrying_token(self) -> Via {
        Via {
            token: true,
            ..self
        }
    }
}

/// A finished password check: the outcome, and how long to wait before telling it (the failure
/// delay; zero for a success).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What the check came to.
    pub outcome: Outcome,
    /// The failure delay still to wait.
    pub delay: Duration,
    /// The user's name as the passdb has it, after a success, when it said one.
    pub user: Option<Vec<u8>>,
    /// The passdb's words for a refused account, when it said some.
    pub reason: Option<String>,
    /// For a passdb that broke, what Cyrus's saslauthd answers after `NO` when it has a text
    /// of its own for it (rimap's `[ALERT] ...`): the saslauthd socket's reply only.
    pub alert: Option<&'static str>,
}

/// The answer to something the driver was asked: there already, or running (on the pool).
/// Await it; or take it [`Check::now`] when it is there, and spawn it when it is not.
pub struct Check<T>(Inner<T>);

type Running<T> = Pin<Box<dyn Future<Output = T> + Send>>;

enum Inner<T> {
    Ready(Option<T>),
    Running(Running<T>),
}

impl<T> Check<T> {
    fn ready(value: T) -> Check<T> {
        Check(Inner::Ready(Some(value)))
    }

    fn running(future: impl Future<Output = T> + Send + 'static) -> Check<T> {
        Check(Inner::Running(Box::pin(future)))
    }

    /// The answer, if it is there; otherwise the check itself, to be awaited or spawned.
    pub fn now(self) -> Result<T, Check<T>> {
        match self.0 {
            Inner::Ready(Some(value)) => Ok(value),
            other => Err(Check(other)),
        }
    }
}

impl<T: Send + Unpin + 'static> Check<Check<T>> {
    /// The inner answer: at once when both are there.
    fn flatten(self) -> Check<T> {
        match self.now() {
            Ok(inner) => inner,
            Err(outer) => Check::running(async move { outer.await.await }),
        }
    }
}

impl<T: Unpin> Future for Check<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        match &mut self.get_mut().0 {
            // Taken once: a future is not polled again after it is ready.
            Inner::Ready(value) => Poll::Ready(value.take().expect("polled after completion")),
            Inner::Running(future) => future.as_mut().poll(cx),
        }
    }
}

/// A derivation in flight, shared by the logins that wait for it.
type Deriving = Arc<tokio::sync::OnceCell<Result<Keys, Broken>>>;

/// The passdb (or the pool in front of it) broke; the driver has logged why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken;

/// Why a passdb gave no answer.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error(transparent)]
    Passdb(#[from] PassdbError),
    #[error("no answer from the {0} passdb within {1:?}")]
    Timeout(PassdbKind, Duration),
    #[error("the {0} check failed: {1}")]
    Lost(PassdbKind, JobLost),
}

impl CheckError {
    /// The metrics' word for it.
    fn kind(&self) -> &'static str {
        match self {
            CheckError::Passdb(PassdbError::Lost(_)) | CheckError::Lost(..) => "lost",
            CheckError::Passdb(_) => "error",
            CheckError::Timeout(..) => "timeout",
        }
    }
}

/// What a check came to, before it is logged.
enum Checked {
    Refused(Refusal),
    Verdict(PassdbResult),
    Failed(CheckError),
}

/// What one log line tells.
enum Logged<'a> {
    Success,
    Failure(&'a dyn fmt::Display),
    Error(&'a CheckError),
}

/// The credential cache as one check's user sees it, its lookups counted in the metrics.
struct Counted {
    cache: cache::UserCache,
    metrics: Arc<metrics::Metrics>,
}

impl SuccessCache for Counted {
    fn hit(&self, slot: &[&[u8]], password: &[u8], now: std::time::Instant) -> bool {
        let hit = self.cache.hit(slot, password, now);
        self.metrics.cache_lookup(hit);
        hit
    }

    fn insert(&self, slot: &[&[u8]], password: &[u8], now: std::time::Instant) {
        self.cache.insert(slot, password, now);
    }
}

/// Checks passwords against one passdb, and runs SASL mechanisms over it.
pub struct Authenticator {
    passdb: Arc<dyn Passdb>,
    /// Its name and reply texts, and its row in the metrics.
    kind: PassdbKind,
    row: metrics::PassdbRow,
    realms: RealmPolicy,
    /// The realm of a request that names none, under the passdb's rule.
    default_realm: Vec<u8>,
    /// The credential cache, when `-c` asked for one and the passdb has a use for it.
    cache: Option<Arc<Cache>>,
    pool: Arc<Pool>,
    backend_timeout: Duration,
    penalty: Penalty,
    /// The process's metrics (carried across reloads).
    metrics: Arc<metrics::Metrics>,
    /// Derived SCRAM keys, by [`Derivation::cache_id`].
    derived: Mutex<BoundedMap<[u8; 32], Keys>>,
    /// Derivations running now, by the same id: the first login runs PBKDF2 and the others
    /// for the same keys wait for it.
    deriving: Mutex<std::collections::HashMap<[u8; 32], Deriving>>,
    /// PBKDF2 rounds run so far (the work an exchange cost, for tests and, later, metrics).
    rounds: AtomicU64,
    /// Keys the attempt fingerprints and the derived-key ids.
    secret: Zeroizing<[u8; 32]>,
    mech_context: mech::Context,
    offered: Vec<MechInfo>,
    /// The check of OAuth 2.0 tokens, with an `[oauth2]` table, and its row in the metrics.
    tokens: Option<Arc<dyn TokenCheck>>,
    token_row: Option<(PassdbKind, metrics::PassdbRow)>,
}

/// The driver now in service, replaced whole by a reload (SIGHUP). A request takes the one
/// current when it starts and keeps it to the end, so a reload never changes the passdb
/// under a request in flight; the old driver goes when its last request does.
#[derive(Debug)]
pub struct Live(arc_swap::ArcSwap<Authenticator>);

impl Live {
    /// Puts `auth` in service.
    pub fn new(auth: Arc<Authenticator>) -> Live {
        Live(arc_swap::ArcSwap::new(auth))
    }

    /// The driver for a request starting now.
    pub fn current(&self) -> Arc<Authenticator> {
        self.0.load_full()
    }

    /// Puts `next` in service for the requests that start from now on.
    pub fn replace(&self, next: Authenticator) {
        self.0.store(Arc::new(next));
    }
}

/// What the Dovecot socket offers over `passdb`: the mechanisms `names` lists, or by default
/// every one it can serve but DIGEST-MD5.
fn offered_mechanisms(
    passdb: &dyn Passdb,
    names: Option<&[&'static str]>,
    tokens: bool,
) -> Result<Vec<MechInfo>, mech::MechListError> {
    mech::offered(
        names,
        passdb.has_credentials(),
        tokens,
        &passdb.kind().to_string(),
    )
}

/// Checks, before anything is bound, that `passdb` can serve the mechanisms `names` lists
/// (what [`Authenticator::new`] will check again); `tokens`: with a token check.
pub fn check_mechanisms(
    passdb: &dyn Passdb,
    names: Option<&[&'static str]>,
    tokens: bool,
) -> Result<(), mech::MechListError> {
    offered_mechanisms(passdb, names, tokens).map(drop)
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("passdb", &self.passdb)
            .field("realms", &self.realms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds a driver over `passdb`; fails when a mechanism named in `options` is unknown or
    /// needs a secret the passdb cannot hand out.
    pub fn new(
        passdb: Arc<dyn Passdb>,
        realms: RealmPolicy,
        options: Options,
    ) -> Result<Self, mech::MechListError> {
        let metrics = Arc::new(metrics::Metrics::new(options.metrics));
        Authenticator::counted_by(passdb, realms, options, metrics)
    }

    /// [`Authenticator::new`], counting in `metrics`.
    fn counted_by(
        passdb: Arc<dyn Passdb>,
        realms: RealmPolicy,
        options: Options,
        metrics: Arc<metrics::Metrics>,
    ) -> Result<Self, mech::MechListError> {
        let workers = if options.workers == 0 {
            UNBOUNDED_WORKERS
        } else {
            options.workers
        };
        let offered = offered_mechanisms(
            &*passdb,
            options.mechanisms.as_deref(),
            options.tokens.is_some(),
        )?;
        let oauth = options
            .tokens
            .as_ref()
            .map(|t| mech::oauth::ErrorInfo {
                scope: t.scope(),
                openid_configuration: t.openid_configuration(),
            })
            .unwrap_or_default();
        let kind = passdb.kind();
        let token_row = options
            .tokens
            .as_ref()
            .map(|t| (t.kind(), metrics.passdb(t.kind())));
        let cache = match passdb.cache_use() {
            CacheUse::Useful => options.cache.map(Arc::new),
            CacheUse::Useless(_) => None,
        };
        Ok(Authenticator {
            offered,
            kind,
            row: metrics.passdb(kind),
            default_realm: realms.default_for(&*passdb),
            cache,
            pool: Arc::new(Pool::new(workers, metrics.pool())),
            backend_timeout: options.backend_timeout,
            penalty: Penalty::new(&options.throttle, metrics.store()),
            metrics,
            derived: Mutex::new(BoundedMap::new(MAX_DERIVED_KEYS, DERIVED_KEYS_TTL)),
            deriving: Mutex::default(),
            rounds: AtomicU64::new(0),
            secret: Zeroizing::new(crate::secret::random_bytes()),
            mech_context: mech::Context {
                host: options.host_name,
                realm: String::from_utf8_lossy(&realms.default_realm).into_owned(),
                scram_iterations: options.scram_iterations,
                secret: crate::secret::random_bytes(),
                oauth,
            },
            token_row,
            tokens: options.tokens,
            realms,
            passdb,
        })
    }

    /// The driver that replaces this one on a reload: a new passdb and settings, the same
    /// throttle state (a reload forgives nobody) and attempt key; the credential cache and the
    /// derived keys start empty (what they hold may be stale under the new settings).
    pub fn reloaded(
        &self,
        passdb: Arc<dyn Passdb>,
        realms: RealmPolicy,
        options: Options,
    ) -> Result<Self, mech::MechListError> {
        let throttle = options.throttle.clone();
        let mut next =
            Authenticator::counted_by(passdb, realms, options, Arc::clone(&self.metrics))?;
        next.penalty = self.penalty.carried(&throttle, self.metrics.store());
        next.secret = self.secret.clone();
        Ok(next)
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.metrics
    }

    /// The metrics' OpenMetrics text, with the sizes of the credential cache and the
    /// throttle read now.
    pub fn encode_metrics(&self) -> String {
        let now = std::time::Instant::now();
        let list = self.penalty.local_list(now);
        self.metrics.set_sizes(
            self.cache.as_deref().map_or(0, Cache::len),
            list.peers.len(),
            list.users.len(),
        );
        self.metrics.encode()
    }

    /// Empties the credential cache, or drops `login`'s entries only (every realm): how
    /// many went; `None` without a cache (`-c`).
    pub fn flush_cache(&self, login: Option<&[u8]>) -> Option<usize> {
        self.cache.as_deref().map(|cache| cache.flush(login))
    }

    /// The addresses and users the throttle counts, from the shared store when there is
    /// one: address (an IPv6 /48 as its first address) and step, user and wrong guesses,
    /// with the time since the last failure; the most delayed first.
    pub async fn penalty_list(&self) -> PenaltyList {
        self.penalty.list().await
    }

    /// Lifts an address's delay (`Ok`) or forgets a user's guesses (`Err`), here and in the
    /// shared store: whether there was anything to forget.
    pub async fn penalty_reset(
        &self,
        who: Result<std::net::IpAddr, &[u8]>,
    ) -> Result<bool, StoreError> {
        self.penalty.reset(who).await
    }

    /// Which passdb answers.
    pub fn passdb_kind(&self) -> PassdbKind {
        self.kind
    }

    /// The mechanisms the passdb can serve (and that are advertised and accepted).
    pub(crate) fn offered(&self) -> &[MechInfo] {
        &self.offered
    }

    /// What mechanisms need to know about this server.
    pub(crate) fn mech_context(&self) -> &mech::Context {
        &self.mech_context
    }

    /// Checks a cleartext password. Refusals, cache hits and passdbs that answer at once
    /// (sasldb, memory) are answered at once; otherwise the check is handed back to await:
    /// on the pool (`-n` at once) or awaiting the network, within the backend deadline.
    pub fn verify_plain(
        self: &Arc<Self>,
        request: &AuthRequest,
        password: Password,
        via: Via,
    ) -> Check<Decision> {
        let started = Instant::now();
        let attempt = self.attempt(request, &password);
        if let Some(refusal) = refusal(request, Some(&password)) {
            let checked = Checked::Refused(refusal);
            let (decision, shared) = self.conclude(request, via, checked, attempt, started);
            return self.settle(decision, shared);
        }
        let authid = self.authid(request);
        let query = Query {
            authid: &authid,
            realm: self.realm_of(request),
            service: &request.service,
            peer: &request.peer,
        };
        let cache = self.cache_for(&authid);
        let cx = passdb::Context {
            cache: cache.as_ref(),
            pool: &self.pool,
        };
        let answer = Arc::clone(&self.passdb).verify_named(&query, password, &cx);
        self.ask(self.kind, answer, request, move |auth, request, asked| {
            let (checked, user, reason) = match asked {
                Ok(verified) => (
                    Checked::Verdict(verified.result),
                    verified.user,
                    verified.reason,
                ),
                Err(e) => (Checked::Failed(e), None, None),
            };
            let (mut decision, shared) = auth.conclude(request, via, checked, attempt, started);
            match decision.outcome {
                Outcome::Verdict(PassdbResult::Ok) => decision.user = user,
                Outcome::Verdict(PassdbResult::UserDisabled) => decision.reason = reason,
                _ => {}
            }
            auth.settle(decision, shared)
        })
        .flatten()
    }

    /// The decision now, or once the shared throttle store has counted the failure (its
    /// answer can only lengthen the delay).
    fn settle(&self, decision: Decision, shared: Option<SharedFailure>) -> Check<Decision> {
        let Some(shared) = shared else {
            if !decision.delay.is_zero() {
                self.metrics.delayed();
            }
            return Check::ready(decision);
        };
        let metrics = Arc::clone(&self.metrics);
        Check::running(async move {
            let delay = shared.delay().await;
            if !delay.is_zero() {
                metrics.delayed();
            }
            Decision { delay, ..decision }
        })
    }

    /// The stored secrets of a request's user (the realm rule applied; the login alone,
    /// whatever `-r` says), for mechanisms that compute with them. Only passdbs that [have
    /// credentials](Passdb::has_credentials) answer. A name that could not be looked up
    /// (empty, or with a NUL) has none.
    pub(crate) fn lookup_credentials(
        self: &Arc<Self>,
        request: &AuthRequest,
        via: Via,
    ) -> Check<Result<Credentials, Broken>> {
        if refusal(request, None).is_some() {
            return Check::ready(Ok(Credentials::default()));
        }
        let started = Instant::now();
        let query = Query {
            authid: &request.login,
            realm: self.realm_of(request),
            service: &request.service,
            peer: &request.peer,
        };
        let cx = passdb::Context {
            cache: None,
            pool: &self.pool,
        };
        let answer = Arc::clone(&self.passdb).credentials(&query, &cx);
        self.ask(self.kind, answer, request, move |auth, request, asked| {
            asked.map_err(|e| {
                auth.log(request, via, Logged::Error(&e), started.elapsed());
                Broken
            })
        })
    }

    /// Checks an OAuth 2.0 token (OAUTHBEARER, XOAUTH2) with the `[oauth2]` check, within the
    /// same deadline as a passdb: the user it proves, or why it was refused. `named`: who the
    /// client says it is. `Err`: the provider could not be asked (logged here); the exchange
    /// ends as a passdb's error does.
    pub(crate) fn verify_token(
        self: &Arc<Self>,
        request: &AuthRequest,
        named: Option<&[u8]>,
        token: Password,
        via: Via,
    ) -> Check<Result<TokenVerdict, Broken>> {
        let Some(check) = &self.tokens else {
            // Not offered without a check: a mechanism cannot get here.
            return Check::ready(Err(Broken));
        };
        let started = Instant::now();
        let cx = passdb::Context {
            cache: None,
            pool: &self.pool,
        };
        let kind = check.kind();
        let answer = Arc::clone(check).verify_token(named, token, &cx);
        self.ask(
            kind,
            answer,
            request,
            move |auth, request, asked| match asked {
                Ok(verdict) => {
                    if let Err(why) = verdict {
                        auth.metrics.token_refused(why);
                    }
                    Ok(verdict)
                }
                Err(e) => {
                    auth.log(request, via, Logged::Error(&e), started.elapsed());
                    Err(Broken)
                }
            },
        )
    }

    /// Takes a passdb's answer, the one way for every passdb: at once when it is there;
    /// otherwise run on the pool or awaited, within the backend deadline, a panic caught. A
    /// passdb error, a timeout and a panic each become a [`CheckError`], which `then` turns
    /// into what the caller wants, with `request`.
    fn ask<T, U>(
        self: &Arc<Self>,
        kind: PassdbKind,
        answer: Answer<T>,
        request: &AuthRequest,
        then: impl FnOnce(&Authenticator, &AuthRequest, Result<T, CheckError>) -> U + Send + 'static,
    ) -> Check<U>
    where
        T: Send + 'static,
        U: Send + 'static,
    {
        let work = match answer {
            Answer::Now(answered) => {
                return Check::ready(then(self, request, answered.map_err(CheckError::from)))
            }
            work => work,
        };
        let (auth, request) = (Arc::clone(self), request.clone());
        Check::running(async move {
            let asked = auth.wait(kind, work).await;
            then(&auth, &request, asked)
        })
    }

    /// Runs work a passdb handed back: a blocking call on the pool, awaited work here, with
    /// the deadline and a panic in it caught.
    async fn wait<T: Send + 'static>(
        &self,
        kind: PassdbKind,
        answer: Answer<T>,
    ) -> Result<T, CheckError> {
        let deadline = self.backend_timeout;
        let lost = |lost| CheckError::Lost(kind, lost);
        let answered = match answer {
            Answer::Now(answered) => Ok(answered.map_err(CheckError::from)),
            // A call that overruns keeps its worker until it returns, so a hung backend
            // cannot take more than `-n` threads.
            Answer::Blocking(call) => tokio::time::timeout(deadline, self.pool.run(call))
                .await
                .map(|ran| ran.map_err(lost).and_then(|r| r.map_err(CheckError::from))),
            // Polled here, in the request's own task (a task of its own per request cost a
            // spawn, a join and, with several runtime threads, a wakeup across them): dropped
            // at the deadline, which stops it; a panic in it is caught and lost, as a task's.
            Answer::Awaited(work) => {
                use futures_util::FutureExt;
                tokio::time::timeout(deadline, std::panic::AssertUnwindSafe(work).catch_unwind())
                    .await
                    .map(|caught| match caught {
                        Ok(answered) => answered.map_err(CheckError::from),
                        Err(_) => Err(lost(JobLost)),
                    })
            }
        };
        answered.unwrap_or_else(|_| Err(CheckError::Timeout(kind, deadline)))
    }

    /// The credential cache for a check of `authid`'s password, counted in the metrics.
    fn cache_for(&self, authid: &[u8]) -> Option<Arc<dyn SuccessCache>> {
        let cache = self.cache.as_ref()?;
        Some(Arc::new(Counted {
            cache: cache.for_user(authid),
            metrics: Arc::clone(&self.metrics),
        }))
    }

    /// Derives a mechanism's keys: from the cache of derived keys, or with PBKDF2 on the
    /// pool, never on the caller's thread. Known and unknown users go the same way. Logins
    /// that need the same keys at once share one derivation: the first runs it, the others
    /// wait for its result.
    pub(crate) fn derive(self: &Arc<Self>, derivation: Derivation) -> Check<Result<Keys, Broken>> {
        let id = derivation.cache_id(&self.secret);
        let cached = self.derived().get(&id, std::time::Instant::now()).cloned();
        if let Some(keys) = cached {
            return Check::ready(Ok(keys));
        }
        let running = Arc::clone(
            self.deriving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id)
                .or_default(),
        );
        let auth = Arc::clone(self);
        Check::running(async move {
            let keys = running
                .get_or_init(|| auth.derive_now(id, derivation))
                .await
                .clone();
            // The first to finish takes the entry away; later logins find the keys cached.
            let mut deriving = auth.deriving.lock().unwrap_or_else(|e| e.into_inner());
            if deriving.get(&id).is_some_and(|d| Arc::ptr_eq(d, &running)) {
                deriving.remove(&id);
            }
            keys
        })
    }

    /// Runs one derivation on the pool and caches its keys.
    async fn derive_now(&self, id: [u8; 32], derivation: Derivation) -> Result<Keys, Broken> {
        self.rounds
            .fetch_add(u64::from(derivation.iterations()), Ordering::Relaxed);
        match self.pool.run(move || derivation.run()).await {
            Ok(keys) => {
                self.derived()
                    .insert(id, keys.clone(), std::time::Instant::now());
                Ok(keys)
            }
            Err(lost) => {
                tracing::error!("key derivation failed: {lost}");
                Err(Broken)
            }
        }
    }

    fn derived(&self) -> std::sync::MutexGuard<'_, BoundedMap<[u8; 32], Keys>> {
        self.derived.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// PBKDF2 rounds run so far.
    #[cfg(test)]
    pub(crate) fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Records the failure of an exchange that a mechanism decided itself (a CRAM-MD5
    /// digest, a SCRAM proof, or data that makes no sense): the log line when the exchange
    /// had named a user, the throttle, and the delay to wait before telling it.
    pub(crate) fn exchange_failed(
        &self,
        request: Option<&AuthRequest>,
        peer: &Peer,
        via: Via,
        why: MechFailure,
        started: Instant,
    ) -> Check<Duration> {
        let elapsed = started.elapsed();
        let user = request.map(|r| self.guarded(r));
        if let Some(request) = request {
            self.log(request, via, Logged::Failure(&why), elapsed);
        }
        // No password to fingerprint: every such failure of a peer counts as the same attempt.
        let (delay, shared) = self.penalty.on_failure(
            peer.ip().map(PeerKey::of),
            user.as_deref(),
            Attempt::NONE,
            elapsed,
            std::time::Instant::now(),
            crate::secret::random_u64(),
        );
        let decision = Decision {
            outcome: Outcome::Error,
            delay,
            user: None,
            reason: None,
            alert: None,
        };
        match self.settle(decision, shared).now() {
            Ok(decision) => Check::ready(decision.delay),
            Err(running) => Check::running(async move { running.await.delay }),
        }
    }

    /// Records the success of an exchange a mechanism decided itself: the log line and the
    /// throttle's reset (the shared store is told from a task of its own: nothing waits).
    pub(crate) fn exchange_succeeded(
        &self,
        request: &AuthRequest,
        peer: &Peer,
        via: Via,
        started: Instant,
    ) {
        self.log(request, via, Logged::Success, started.elapsed());
        self.penalty
            .on_success(peer.ip().map(PeerKey::of), Some(&self.guarded(request)));
    }

    /// Who the user guard counts a request's guesses for: the login in its realm.
    fn guarded(&self, request: &AuthRequest) -> Vec<u8> {
        let realm = self.realm_of(request);
        if realm.is_empty() {
            request.login.clone()
        } else {
            [&request.login[..], b"@", realm].concat()
        }
    }

    /// The fingerprints of a request's attempt, for the throttle's repeated-password rule.
    fn attempt(&self, request: &AuthRequest, password: &Password) -> Attempt {
        if !self.penalty.enabled() {
            return Attempt::UNCOUNTED;
        }
        self.penalty
            .attempt(&self.secret, &self.guarded(request), password.expose())
    }

    /// Logs a check and feeds the throttle: the decision, with the delay before a failure is
    /// told.
    fn conclude(
        &self,
        request: &AuthRequest,
        via: Via,
        checked: Checked,
        attempt: Attempt,
        started: Instant,
    ) -> (Decision, Option<SharedFailure>) {
        let elapsed = started.elapsed();
        let key = request.peer.ip().map(PeerKey::of);
        let outcome = match &checked {
            Checked::Refused(refusal) => Outcome::Refused(*refusal),
            Checked::Verdict(result) => Outcome::Verdict(*result),
            Checked::Failed(_) => Outcome::Error,
        };
        // Named to the throttle only when there is one (no allocation per request without).
        let user = self.penalty.enabled().then(|| self.guarded(request));
        let (delay, shared) = match outcome {
            Outcome::Verdict(PassdbResult::Ok) => {
                self.penalty.on_success(key, user.as_deref());
                (Duration::ZERO, None)
            }
            // A name refused before any passdb saw it (empty, a NUL) is nobody's guess.
            Outcome::Verdict(_) | Outcome::Refused(_) => self.penalty.on_failure(
                key,
                user.as_deref()
                    .filter(|_| matches!(outcome, Outcome::Verdict(_))),
                attempt,
                elapsed,
                std::time::Instant::now(),
                crate::secret::random_u64(),
            ),
            // Internal errors are not delayed.
            Outcome::Error => (Duration::ZERO, None),
        };
        let logged = match &checked {
            Checked::Verdict(PassdbResult::Ok) => Logged::Success,
            Checked::Verdict(result) => Logged::Failure(result),
            Checked::Refused(refusal) => Logged::Failure(refusal),
            Checked::Failed(e) => Logged::Error(e),
        };
        self.log(request, via, logged, elapsed);
        let decision = Decision {
            outcome,
            delay,
            user: None,
            reason: None,
            alert: match &checked {
                Checked::Failed(CheckError::Passdb(e)) => e.reply(),
                _ => None,
            },
        };
        (decision, shared)
    }

    /// The realm a request is checked in: its own, or the default realm when it has none.
    fn realm_of<'a>(&'a self, request: &'a AuthRequest) -> &'a [u8] {
        if request.realm.is_empty() {
            &self.default_realm
        } else {
            &request.realm
        }
    }

    /// The name the passdb is asked for: the login, or with `-r` and a realm, `login@realm`.
    fn authid<'a>(&self, request: &'a AuthRequest) -> Cow<'a, [u8]> {
        if self.realms.combine && !request.realm.is_empty() {
            Cow::Owned([&request.login[..], b"@", &request.realm[..]].concat())
        } else {
            Cow::Borrowed(&request.login)
        }
    }

    /// The one log line of an authentication, in Cyrus's words (`auth failure: [user=..]
    /// [service=..] [realm=..] [mech=<passdb>] [reason=..]`), each part a structured field,
    /// then where the request came from and how long it took. Successes are logged at debug
    /// level (`-V`), as Cyrus does. Never a password, never a stored hash.
    fn log(&self, request: &AuthRequest, via: Via, logged: Logged<'_>, elapsed: Duration) {
        let (kind, row) = match (via.token, self.token_row) {
            (true, Some(token)) => token,
            _ => (self.kind, self.row),
        };
        macro_rules! event {
            ($level:expr, $verdict:literal, $message:literal $(, $name:ident = $value:expr)?) => {
                tracing::event!(
                    $level,
                    verdict = $verdict,
                    user = %Printable(&request.login),
                    service = %Printable(&request.service),
                    realm = %Printable(&request.realm),
                    mech = %kind,
                    $($name = %$value,)?
                    remote = request.peer.text().map(|t| tracing::field::display(Printable(t))),
                    protocol = %via.protocol.name(),
                    sasl = via.mechanism.map(tracing::field::display),
                    duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                    $message
                )
            };
        }
        let verdict = match logged {
            Logged::Success => metrics::Verdict::Success,
            Logged::Failure(_) => metrics::Verdict::Failure,
            Logged::Error(e) => {
                self.metrics.backend_error(row, e.kind());
                metrics::Verdict::Error
            }
        };
        self.metrics
            .observe(via.protocol, via.mechanism, row, verdict, elapsed);
        match logged {
            Logged::Success => event!(tracing::Level::DEBUG, "success", "auth success:"),
            Logged::Failure(reason) => {
                event!(
                    tracing::Level::INFO,
                    "failure",
                    "auth failure:",
                    reason = reason
                )
            }
            Logged::Error(error) => {
                event!(tracing::Level::ERROR, "error", "auth error:", error = error)
            }
        }
    }
}

/// The refusals that need no passdb (Cyrus's `NULL login received`, `NULL password received`,
/// and our refusal of a NUL byte in a name). `password` is `None` for a lookup of secrets.
fn refusal(request: &AuthRequest, password: Option<&Password>) -> Option<Refusal> {
    if request.login.is_empty() {
        return Some(Refusal::EmptyLogin);
    }
    if password.is_some_and(Password::is_empty) {
        return Some(Refusal::EmptyPassword);
    }
    if request.login.contains(&0) || request.realm.contains(&0) {
        return Some(Refusal::NulByte);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passdb::Memory;

    fn options(failure_delay: Duration) -> Options {
        Options {
            workers: 1,
            throttle: Throttle::local(failure_delay),
            scram_iterations: mech::scram::ITERATIONS,
            host_name: "myhost".into(),
            cache: None,
            mechanisms: None,
            metrics: true,
            backend_timeout: BACKEND_TIMEOUT,
            tokens: None,
        }
    }

    fn auth(combine: bool) -> Arc<Authenticator> {
        let memory = Memory::new()
            .with_user("alice", "example.org", "secret")
            .with_user("bob", "myhost", "builder")
            .with_user("carol@example.org", "example.org", "combined");
        Arc::new(
            Authenticator::new(
                Arc::new(memory),
                RealmPolicy {
                    default_realm: b"myhost".to_vec(),
                    named: true,
                    combine,
                },
                options(Duration::ZERO),
            )
            .unwrap(),
        )
    }

    fn check(a: &Arc<Authenticator>, login: &str, password: &str, realm: &str) -> String {
        let request = AuthRequest {
            login: login.as_bytes().to_vec(),
            service: b"smtp".to_vec(),
            realm: realm.as_bytes().to_vec(),
            peer: Peer::default(),
        };
        let password = Password::new(password.as_bytes().to_vec());
        // A passdb that never blocks answers at once.
        let decision = a
            .verify_plain(&request, password, Via::SASLAUTHD)
            .now()
            .ok()
            .unwrap();
        format!("{:?}", decision.outcome)
    }

    #[test]
    fn realms_and_refusals() {
        let a = auth(false);
        let rows = [
            ("alice", "secret", "example.org", "Verdict(Ok)"),
            ("alice", "wrong", "example.org", "Verdict(PasswordMismatch)"),
            ("alice", "secret", "", "Verdict(UserUnknown)"),
            ("alice@example.org", "secret", "", "Verdict(UserUnknown)"),
            ("bob", "builder", "", "Verdict(Ok)"),
            ("nobody", "x", "example.org", "Verdict(UserUnknown)"),
            ("", "x", "example.org", "Refused(EmptyLogin)"),
            ("alice", "", "example.org", "Refused(EmptyPassword)"),
            ("alice\0zz", "secret", "example.org", "Refused(NulByte)"),
        ];
        for (login, password, realm, want) in rows {
            assert_eq!(
                check(&a, login, password, realm),
                want,
                "{login:?}/{realm:?}"
            );
        }
    }

    #[test]
    fn combine_appends_a_non_empty_realm_only() {
        let a = auth(true);
        assert_eq!(check(&a, "carol", "combined", "example.org"), "Verdict(Ok)");
        assert_eq!(check(&a, "bob", "builder", ""), "Verdict(Ok)");
        assert_eq!(
            check(&a, "alice", "secret", "example.org"),
            "Verdict(UserUnknown)"
        );
    }

    fn delayed_auth() -> Arc<Authenticator> {
        let memory = Memory::new().with_user("alice", "example.org", "secret");
        Arc::new(
            Authenticator::new(
                Arc::new(memory),
                RealmPolicy {
                    default_realm: b"example.org".to_vec(),
                    named: true,
                    combine: false,
                },
                options(Duration::from_secs(2)),
            )
            .unwrap(),
        )
    }

    fn request(login: &str, addr: &str) -> AuthRequest {
        AuthRequest {
            login: login.as_bytes().to_vec(),
            service: b"smtp".to_vec(),
            realm: b"example.org".to_vec(),
            peer: Peer::new(Some(addr.as_bytes().to_vec())),
        }
    }

    /// A check as the saslauthd protocol runs it: the verdict, told after the delay.
    async fn told(auth: &Arc<Authenticator>, request: &AuthRequest, password: &str) -> Outcome {
        let password = Password::new(password.as_bytes().to_vec());
        let decision = auth.verify_plain(request, password, Via::SASLAUTHD).await;
        tokio::time::sleep(decision.delay).await;
        decision.outcome
    }

    #[tokio::test(start_paused = true)]
    async fn failures_wait_successes_do_not_and_others_are_not_slowed() {
        let auth = delayed_auth();
        let slow = {
            let auth = Arc::clone(&auth);
            tokio::spawn(async move {
                let start = Instant::now();
                let outcome = told(&auth, &request("alice", "192.0.2.7;1"), "wrong").await;
                (format!("{outcome:?}"), start.elapsed())
            })
        };
        tokio::task::yield_now().await;
        let start = Instant::now();
        let outcome = told(&auth, &request("alice", "198.51.100.1;2"), "secret").await;
        assert_eq!(format!("{outcome:?}"), "Verdict(Ok)");
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "not slowed by another's failure"
        );
        let (outcome, waited) = slow.await.unwrap();
        assert_eq!(outcome, "Verdict(PasswordMismatch)");
        let window = Duration::from_millis(1600)..=Duration::from_millis(2400);
        assert!(window.contains(&waited), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn every_reply_within_the_cap() {
        let auth = delayed_auth();
        let mut waits = Vec::new();
        for i in 0..6 {
            let start = Instant::now();
            told(
                &auth,
                &request("alice", "192.0.2.7;1"),
                &format!("guess{i}"),
            )
            .await;
            waits.push(start.elapsed());
        }
        assert!(waits[1] > waits[0], "{waits:?}");
        assert!(waits.iter().all(|w| *w <= penalty::MAX_REPLY), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), penalty::MAX_REPLY);
        // A success resets: the next failure waits the base delay again.
        told(&auth, &request("alice", "192.0.2.7;1"), "secret").await;
        let start = Instant::now();
        told(&auth, &request("alice", "192.0.2.7;1"), "again").await;
        assert!(start.elapsed() <= Duration::from_millis(2400));
    }
}
