//! The driver: from a decoded request to a verdict, through realm rules, the passdb (inline,
//! or on the bounded blocking pool), and the failure delay, with one log line per failure in
//! Cyrus's format (`auth failure: [user=..] [service=..] ...`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::passdb::{Passdb, PassdbError, PassdbResult, Query};
use crate::penalty::{attempt_fingerprint, PeerKey, Penalty};
use crate::pool::Pool;
use crate::request::{AuthRequest, Printable};
use crate::secret::Password;

/// How long a blocking backend may take before the request is answered as an internal
/// failure. With the failure delay's cap ([`crate::penalty::MAX_REPLY`]) every reply comes
/// well inside Postfix's 10 s.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(4);

/// The pool size for `-n 0` (Cyrus: a process per connection).
pub const UNBOUNDED_WORKERS: usize = 64;

fn verdict_of(result: Result<PassdbResult, PassdbError>) -> Outcome {
    match result {
        Ok(result) => Outcome::Verdict(result),
        Err(e) => Outcome::Error(e),
    }
}

/// How the driver runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Blocking backend calls at once (`-n`; 0 means [`UNBOUNDED_WORKERS`]).
    pub workers: usize,
    /// The base failure delay (0 = none).
    pub failure_delay: Duration,
}

/// How realms are chosen, as Cyrus's saslauthd does.
#[derive(Debug, Clone)]
pub struct RealmPolicy {
    /// Used when the request's realm is empty: `--realm`, else the host name.
    pub default_realm: Vec<u8>,
    /// `-r`: a non-empty realm is appended to the login (`login@realm`), and still passed.
    pub combine: bool,
}

/// The result of one password check.
#[derive(Debug)]
pub enum Outcome {
    /// The request was refused before any lookup.
    Refused(Refusal),
    /// The passdb's verdict.
    Verdict(PassdbResult),
    /// The passdb broke.
    Error(PassdbError),
}

/// Requests refused without asking the passdb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An empty login (`NO NULL login received`).
    EmptyLogin,
    /// An empty password (`NO NULL password received`).
    EmptyPassword,
    /// A NUL byte in the login or realm. Cyrus truncates at it (so `alice\0zz` is accepted
    /// as `alice`); we refuse, as an ordinary authentication failure.
    NulByte,
}

/// Checks passwords against one passdb.
#[derive(Debug)]
pub struct Authenticator {
    passdb: Arc<Passdb>,
    realms: RealmPolicy,
    pool: Option<Pool>,
    penalty: Penalty,
    attempt_key: [u8; 32],
}

impl Authenticator {
    /// Builds a driver over `passdb`.
    pub fn new(passdb: Passdb, realms: RealmPolicy, options: Options) -> Self {
        let workers = if options.workers == 0 {
            UNBOUNDED_WORKERS
        } else {
            options.workers
        };
        let mut attempt_key = [0u8; 32];
        crate::random::fill(&mut attempt_key);
        Authenticator {
            realms,
            // Only blocking passdbs need threads.
            pool: passdb.is_blocking().then(|| Pool::new(workers)),
            penalty: Penalty::new(options.failure_delay),
            attempt_key,
            passdb: Arc::new(passdb),
        }
    }

    /// The passdb in use.
    pub fn passdb(&self) -> &Passdb {
        &self.passdb
    }

    /// Checks a cleartext password (the saslauthd protocol's only operation). A failure is
    /// answered after the failure delay; this future sleeps, never the thread.
    pub async fn verify_plain(&self, request: &AuthRequest, password: Password) -> Outcome {
        let started = Instant::now();
        let attempt = self.attempt(request, &password);
        let outcome = match self.prepare(request, password) {
            Ok(query) if self.passdb.is_blocking() => {
                let result = match self.passdb.verify_cached(&query) {
                    Some(verdict) => Ok(verdict),
                    None => self.run_blocking(query).await,
                };
                verdict_of(result)
            }
            Ok(query) => verdict_of(self.passdb.verify_plain(&query)),
            Err(refused) => refused,
        };
        let delay = self.conclude(request, &outcome, attempt, started.elapsed());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        outcome
    }

    /// The same check, done now, for a passdb that never blocks (sasldb, memory): the
    /// outcome and how long to wait before answering it (the failure delay; zero for a
    /// success). `None` for a blocking passdb: use [`Authenticator::verify_plain`]. Lets a
    /// connection answer at once without a task per request.
    pub fn verify_plain_now(
        &self,
        request: &AuthRequest,
        password: Password,
    ) -> Option<(Outcome, Duration)> {
        if self.passdb.is_blocking() {
            return None;
        }
        let started = Instant::now();
        let attempt = self.attempt(request, &password);
        let outcome = match self.prepare(request, password) {
            Ok(query) => verdict_of(self.passdb.verify_plain(&query)),
            Err(refused) => refused,
        };
        let delay = self.conclude(request, &outcome, attempt, started.elapsed());
        Some((outcome, delay))
    }

    /// A fingerprint of (user, password) for the throttle's repeated-password rule, when
    /// the throttle will need it.
    fn attempt(&self, request: &AuthRequest, password: &Password) -> [u8; 32] {
        let peer = request.client_addr.as_deref().and_then(PeerKey::parse);
        match (self.penalty.enabled(), peer) {
            (true, Some(_)) => {
                attempt_fingerprint(&self.attempt_key, &request.login, password.expose())
            }
            _ => [0; 32],
        }
    }

    /// Logs an outcome and feeds the throttle; returns the delay before a failure is told.
    fn conclude(
        &self,
        request: &AuthRequest,
        outcome: &Outcome,
        attempt: [u8; 32],
        elapsed: Duration,
    ) -> Duration {
        self.log(request, outcome);
        let peer = request.client_addr.as_deref().and_then(PeerKey::parse);
        match outcome {
            Outcome::Verdict(PassdbResult::Ok) => {
                self.penalty.on_success(peer);
                Duration::ZERO
            }
            Outcome::Verdict(_) | Outcome::Refused(_) => self.penalty.on_failure(
                peer,
                attempt,
                elapsed,
                std::time::Instant::now(),
                crate::random::u64(),
            ),
            Outcome::Error(_) => Duration::ZERO,
        }
    }

    /// The stored secrets of a request's user (realm rules applied), for mechanisms that
    /// compute with them (CRAM-MD5, SCRAM). Only passdbs with [`Passdb::has_plaintext`]
    /// answer; those never block.
    pub fn lookup_credentials(
        &self,
        request: &AuthRequest,
    ) -> Result<crate::mech::Credentials, PassdbError> {
        if request.login.is_empty() || request.login.contains(&0) || request.realm.contains(&0) {
            return Ok(crate::mech::Credentials::default());
        }
        self.passdb
            .lookup_credentials(&request.login, self.realm_of(request))
    }

    /// Records the end of an exchange that a mechanism decided itself (CRAM-MD5): the log
    /// line, the throttle, and for a failure the failure delay.
    pub async fn mech_verdict(&self, request: &AuthRequest, mech: &str, ok: bool) {
        let user = Printable(&request.login);
        let (service, realm) = (Printable(&request.service), Printable(&request.realm));
        if ok {
            tracing::debug!(
                "auth success: [user={user}] [service={service}] [realm={realm}] [mech={mech}]"
            );
            self.penalty
                .on_success(request.client_addr.as_deref().and_then(PeerKey::parse));
        } else {
            tracing::info!(
                "auth failure: [user={user}] [service={service}] [realm={realm}] [mech={mech}] [reason=wrong response]"
            );
            self.failure_pause(request.client_addr.as_deref()).await;
        }
    }

    /// Waits the failure delay for a failure that never reached the passdb (SASL data that
    /// makes no sense), so it looks like any other failure.
    pub async fn failure_pause(&self, client_addr: Option<&[u8]>) {
        let peer = client_addr.and_then(PeerKey::parse);
        let delay = self.penalty.on_failure(
            peer,
            [0xff; 32],
            Duration::ZERO,
            std::time::Instant::now(),
            crate::random::u64(),
        );
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// The realm a request is checked in: its own, or the default realm when it has none.
    fn realm_of<'a>(&'a self, request: &'a AuthRequest) -> &'a [u8] {
        if request.realm.is_empty() {
            &self.realms.default_realm
        } else {
            &request.realm
        }
    }

    /// The refusals that need no passdb, and the query with realm rules applied.
    fn prepare(&self, request: &AuthRequest, password: Password) -> Result<Query, Outcome> {
        if request.login.is_empty() {
            return Err(Outcome::Refused(Refusal::EmptyLogin));
        }
        if password.is_empty() {
            return Err(Outcome::Refused(Refusal::EmptyPassword));
        }
        if request.login.contains(&0) || request.realm.contains(&0) {
            return Err(Outcome::Refused(Refusal::NulByte));
        }
        let authid = if self.realms.combine && !request.realm.is_empty() {
            [&request.login[..], b"@", &request.realm[..]].concat()
        } else {
            request.login.clone()
        };
        let realm = self.realm_of(request).to_vec();
        Ok(Query {
            authid,
            realm,
            service: request.service.clone(),
            remote: request.client_addr.clone(),
            password,
        })
    }

    /// Runs a blocking check on the pool: at most `-n` at once, answered within
    /// [`BACKEND_TIMEOUT`] (time in the queue included). A call that overruns keeps its
    /// worker until it returns, so a hung backend cannot take more than `-n` threads.
    async fn run_blocking(&self, query: Query) -> Result<PassdbResult, PassdbError> {
        let passdb = Arc::clone(&self.passdb);
        let kind = passdb.kind();
        let Some(pool) = &self.pool else {
            return passdb.verify_plain(&query);
        };
        let call = pool.run(move || passdb.verify_plain(&query));
        match tokio::time::timeout(BACKEND_TIMEOUT, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(lost)) => Err(PassdbError::Backend(format!(
                "the {kind} check failed: {lost}"
            ))),
            Err(_) => Err(PassdbError::Timeout(kind, BACKEND_TIMEOUT)),
        }
    }

    fn log(&self, request: &AuthRequest, outcome: &Outcome) {
        let user = Printable(&request.login);
        let service = Printable(&request.service);
        let realm = Printable(&request.realm);
        let mech = self.passdb.kind();
        let remote = request.client_addr.as_deref().map(Printable);
        let remote = remote
            .as_ref()
            .map(|r| format!(" [remote={r}]"))
            .unwrap_or_default();
        match outcome {
            Outcome::Verdict(PassdbResult::Ok) => tracing::debug!(
                "auth success: [user={user}] [service={service}] [realm={realm}] [mech={mech}]{remote}"
            ),
            Outcome::Verdict(result) => tracing::info!(
                "auth failure: [user={user}] [service={service}] [realm={realm}] [mech={mech}] \
                 [reason={}]{remote}",
                result.log_reason()
            ),
            Outcome::Refused(refusal) => tracing::info!(
                "auth failure: [user={user}] [service={service}] [realm={realm}] [mech={mech}] \
                 [reason={refusal:?}]{remote}"
            ),
            Outcome::Error(e) => tracing::error!(
                "auth error: [user={user}] [service={service}] [realm={realm}] [mech={mech}] \
                 [error={e}]{remote}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passdb::Memory;

    fn auth(combine: bool) -> Authenticator {
        let memory = Memory::new()
            .with_user("alice", "example.org", "secret")
            .with_user("bob", "myhost", "builder")
            .with_user("carol@example.org", "example.org", "combined");
        Authenticator::new(
            Passdb::Memory(memory),
            RealmPolicy {
                default_realm: b"myhost".to_vec(),
                combine,
            },
            Options {
                workers: 1,
                failure_delay: Duration::ZERO,
            },
        )
    }

    fn check(a: &Authenticator, login: &str, password: &str, realm: &str) -> String {
        let request = AuthRequest {
            login: login.as_bytes().to_vec(),
            service: b"smtp".to_vec(),
            realm: realm.as_bytes().to_vec(),
            client_addr: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let password = Password::new(password.as_bytes().to_vec());
        format!("{:?}", rt.block_on(a.verify_plain(&request, password)))
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
        Arc::new(Authenticator::new(
            Passdb::Memory(memory),
            RealmPolicy {
                default_realm: b"example.org".to_vec(),
                combine: false,
            },
            Options {
                workers: 1,
                failure_delay: Duration::from_secs(2),
            },
        ))
    }

    fn request(login: &str, addr: &str) -> AuthRequest {
        AuthRequest {
            login: login.as_bytes().to_vec(),
            service: b"smtp".to_vec(),
            realm: b"example.org".to_vec(),
            client_addr: Some(addr.as_bytes().to_vec()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_wait_successes_do_not_and_others_are_not_slowed() {
        let auth = delayed_auth();
        let slow = {
            let auth = Arc::clone(&auth);
            tokio::spawn(async move {
                let start = Instant::now();
                let pw = Password::new(b"wrong".to_vec());
                let outcome = auth
                    .verify_plain(&request("alice", "192.0.2.7;1"), pw)
                    .await;
                (format!("{outcome:?}"), start.elapsed())
            })
        };
        tokio::task::yield_now().await;
        let start = Instant::now();
        let good = Password::new(b"secret".to_vec());
        let outcome = auth
            .verify_plain(&request("alice", "198.51.100.1;2"), good)
            .await;
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
            let pw = Password::new(format!("guess{i}").into_bytes());
            auth.verify_plain(&request("alice", "192.0.2.7;1"), pw)
                .await;
            waits.push(start.elapsed());
        }
        assert!(waits[1] > waits[0], "{waits:?}");
        assert!(
            waits.iter().all(|w| *w <= crate::penalty::MAX_REPLY),
            "{waits:?}"
        );
        assert_eq!(*waits.last().unwrap(), crate::penalty::MAX_REPLY);
        // A success resets: the next failure waits the base delay again.
        let good = Password::new(b"secret".to_vec());
        auth.verify_plain(&request("alice", "192.0.2.7;1"), good)
            .await;
        let start = Instant::now();
        let pw = Password::new(b"again".to_vec());
        auth.verify_plain(&request("alice", "192.0.2.7;1"), pw)
            .await;
        assert!(start.elapsed() <= Duration::from_millis(2400));
    }
}
