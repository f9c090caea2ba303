//! The request table of one Dovecot-protocol connection, and the mech ⇄ passdb loop that runs
//! in it (Dovecot's `auth-request-handler.c`): `AUTH` starts a mechanism, `CONT` feeds it,
//! `CANCEL` drops it, and each [`Step`] is acted on — a challenge goes out, a password check or
//! a lookup of secrets goes to the passdb, a key derivation to the pool. Nothing here reads or
//! writes a socket: the connection hands in decoded requests and takes out [`Answer`]s.
//!
//! Work that has to wait (a blocking passdb, a key derivation, a failure's delay) runs in a task
//! of its own, so a slow request never holds up another; its result comes back through
//! [`Handler::completed`]. A result for a request that was cancelled, or whose id was reused
//! since, is dropped.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Authenticator, Broken, Decision, Live, Via};
use crate::mech::{Mechanism, Step};
use crate::request::{split_user, AuthRequest, Input, Peer, SaslStart};
use crate::verdict::{Answer, FailCode, FailReason, Outcome, PassdbResult};

/// How a connection's requests are handled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Split a user name at its last `@` into sasldb authid and realm (as libsasl2 does
    /// before it asks saslauthd). Off for sites whose authids hold `@`.
    pub(crate) split_realm: bool,
    /// When the passdb breaks, answer `FAIL ... code=temp_fail` instead of closing the
    /// connection (Postfix answers a closed connection with 454, a temporary error).
    pub(crate) temp_fail: bool,
    /// Requests in flight on one connection at most; more is a protocol violation.
    pub(crate) max_requests: usize,
    /// A request waiting for `CONT` is forgotten after this (Dovecot: 150 s).
    pub(crate) request_timeout: Duration,
}

/// A request that ends the connection, as Dovecot disconnects for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    /// `AUTH` with the id of a request still active.
    #[error("duplicate request id {0}")]
    DuplicateId(u32),
    /// More requests in flight than allowed.
    #[error("more than {0} requests in flight")]
    TooManyRequests(usize),
    /// A mechanism that is not offered.
    #[error("unsupported mechanism {0:?}")]
    UnsupportedMechanism(String),
    /// Requests in flight holding more of the client's data than one connection may.
    #[error("requests in flight hold more than {0} bytes")]
    TooMuchHeld(usize),
}

/// Bytes of the client's data one connection's requests in flight may hold (what their
/// mechanisms were fed: a LOGIN user name waiting for its password, say). Postfix has one
/// request in flight per connection, of a few hundred bytes.
pub(crate) const MAX_HELD_PER_CONNECTION: usize = 256 << 10;
/// The same for all connections together: beyond it a new request is answered
/// `FAIL code=temp_fail` at once.
pub(crate) const MAX_HELD_TOTAL: usize = 64 << 20;
/// What a request costs before any data: its entry in the table and its mechanism.
const REQUEST_COST: usize = 512;

static HELD_TOTAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The bytes one request holds, counted in its connection's and the process's totals until
/// it is dropped, whichever way it ends.
struct Held {
    bytes: usize,
    connection: Arc<std::sync::atomic::AtomicUsize>,
}

/// Which bound a request would cross.
enum Over {
    Connection,
    Process,
}

impl Held {
    /// Adds `n` bytes, unless that crosses a bound (then nothing is added).
    fn add(&mut self, n: usize) -> Result<(), Over> {
        use std::sync::atomic::Ordering;
        if self.connection.load(Ordering::Relaxed) + n > MAX_HELD_PER_CONNECTION {
            return Err(Over::Connection);
        }
        if HELD_TOTAL.fetch_add(n, Ordering::AcqRel) + n > MAX_HELD_TOTAL {
            HELD_TOTAL.fetch_sub(n, Ordering::AcqRel);
            return Err(Over::Process);
        }
        self.connection.fetch_add(n, Ordering::AcqRel);
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        HELD_TOTAL.fetch_sub(self.bytes, Ordering::AcqRel);
        self.connection.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The passdb broke and the client is to be told by closing the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Close;

/// Where an active request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's next `CONT`.
    Talking,
    /// Waiting for the passdb, the pool or a delay: a `CONT` now is unexpected.
    Busy,
    /// The exchange succeeded and its final data went out in a `CONT`: the client's next
    /// `CONT` (empty) gets the `OK`.
    Acknowledging,
}

/// A request between `AUTH` and its end.
struct Active {
    mech: Mechanism,
    /// The user, once the mechanism has named one.
    user: Option<Vec<u8>>,
    service: Vec<u8>,
    peer: Peer,
    /// The client takes the server's final data on `OK` (`final-resp-ok`).
    final_resp_ok: bool,
    phase: Phase,
    started: Instant,
    /// Tells a late result from an earlier request that reused the id.
    seq: u64,
    /// The client's data it holds, counted against the bounds.
    held: Held,
    /// Counted in the metrics' requests in flight while it lives.
    _in_flight: super::metrics::InFlight,
}

/// The result of work that had to wait, for [`Handler::finish`].
pub(crate) struct Done {
    id: u32,
    seq: u64,
    result: Finished,
    /// A failure held back by the failure delay is not answered before this.
    not_before: Option<tokio::time::Instant>,
}

enum Finished {
    /// The request's answer: it ends.
    Answer(Answer),
    /// A success whose final data goes out as a `CONT`; the request stays for the ack.
    FinalData(Vec<u8>),
    /// Derived keys for the mechanism.
    Keys(crate::mech::Keys),
    /// The user's stored secrets, for the mechanism.
    Credentials(crate::secret::Credentials),
    /// The token check's verdict, for the mechanism.
    Token(crate::passdb::TokenVerdict),
    /// The passdb, the pool or the token check broke while the mechanism waited for it:
    /// answered as its failure rule says (close, or `temp_fail`).
    Broken,
    /// The passdb broke: close the connection.
    Close,
}

impl Finished {
    /// A failure with the passdb's words for it, when it said some (a success, or no words,
    /// is left as it is).
    fn with_reason(self, words: Option<String>) -> Finished {
        match (self, words) {
            (Finished::Answer(Answer::Failure { id, user, code, .. }), Some(words)) => {
                Finished::Answer(Answer::Failure {
                    id,
                    user,
                    code,
                    reason: Some(FailReason::Passdb(words)),
                })
            }
            (finished, _) => finished,
        }
    }
}

/// The requests of one connection.
pub(crate) struct Handler {
    /// Where a reload puts the new driver.
    live: Arc<Live>,
    /// The driver the connection's requests run on: the current one, taken again at each
    /// `AUTH` that finds no other request in flight (so an exchange never changes drivers).
    auth: Arc<Authenticator>,
    settings: Settings,
    requests: HashMap<u32, Active>,
    seq: u64,
    /// Results of work that had to wait (the pool, a key derivation) come back here. Made on
    /// first use: a channel costs a few KiB, and most connections never need one (a PLAIN
    /// login over sasldb is answered at once).
    done: Option<(mpsc::UnboundedSender<Done>, mpsc::UnboundedReceiver<Done>)>,
    /// Password checks in flight, polled by the connection's own task while it waits
    /// ([`Handler::completed`]): no task, no channel per check.
    checking: FuturesUnordered<Pin<Box<dyn Future<Output = Done> + Send>>>,
    /// Results held back by the failure delay, kept here (not in sleeping tasks) so that a
    /// shutdown can answer them at once.
    delayed: Vec<Done>,
    /// Bytes this connection's requests hold ([`Held`]).
    held: Arc<std::sync::atomic::AtomicUsize>,
    answers: Vec<Answer>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// An empty request table over the driver `live` holds.
    pub(crate) fn new(live: Arc<Live>, settings: Settings) -> Handler {
        Handler {
            auth: live.current(),
            live,
            settings,
            requests: HashMap::new(),
            seq: 0,
            done: None,
            checking: FuturesUnordered::new(),
            delayed: Vec::new(),
            held: Arc::default(),
            answers: Vec::new(),
        }
    }

    /// The sender of the results channel, made on first use.
    fn done_tx(&mut self) -> mpsc::UnboundedSender<Done> {
        self.done
            .get_or_insert_with(mpsc::unbounded_channel)
            .0
            .clone()
    }

    /// The driver this table runs on.
    pub(crate) fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// The answers ready for the client, in order.
    pub(crate) fn answers(&mut self) -> std::vec::Drain<'_, Answer> {
        self.answers.drain(..)
    }

    /// `AUTH`: starts an exchange. The id must be new and the mechanism offered.
    pub(crate) fn begin(&mut self, start: SaslStart) -> Result<(), Violation> {
        if self.requests.contains_key(&start.id) {
            return Err(Violation::DuplicateId(start.id));
        }
        if self.requests.len() >= self.settings.max_requests {
            return Err(Violation::TooManyRequests(self.settings.max_requests));
        }
        if self.requests.is_empty() {
            self.auth = self.live.current();
        }
        let Some(mech) = Mechanism::start(
            &start.mech,
            self.auth.offered(),
            self.auth.mech_context(),
            &start.service,
        ) else {
            return Err(Violation::UnsupportedMechanism(start.mech));
        };
        let input = match start.initial {
            Input::Absent => None,
            Input::Data(data) => Some(data),
            Input::Undecodable => {
                self.answers.push(Answer::Failure {
                    id: start.id,
                    user: None,
                    code: Some(FailCode::InvalidBase64),
                    reason: Some(FailReason::InitialNotBase64),
                });
                return Ok(());
            }
        };
        let mut held = Held {
            bytes: 0,
            connection: Arc::clone(&self.held),
        };
        let cost = REQUEST_COST + start.service.len() + input.as_ref().map_or(0, Vec::len);
        match held.add(cost) {
            Ok(()) => {}
            Err(Over::Connection) => return Err(Violation::TooMuchHeld(MAX_HELD_PER_CONNECTION)),
            Err(Over::Process) => {
                tracing::warn!(
                    "dovecot: requests in flight hold {MAX_HELD_TOTAL} bytes; refusing new ones \
                     for now"
                );
                self.answers.push(Answer::Failure {
                    id: start.id,
                    user: None,
                    code: Some(FailCode::TempFail),
                    reason: None,
                });
                return Ok(());
            }
        }
        self.seq += 1;
        let active = Active {
            held,
            _in_flight: self
                .auth
                .metrics()
                .in_flight(super::metrics::Protocol::Dovecot),
            mech,
            user: None,
            service: start.service,
            peer: start.peer,
            final_resp_ok: start.final_resp_ok,
            phase: Phase::Talking,
            started: Instant::now(),
            seq: self.seq,
        };
        self.step(start.id, active, input.as_deref());
        Ok(())
    }

    /// `CONT`: the client's next step of an exchange.
    pub(crate) fn cont(&mut self, id: u32, input: Input) {
        let Some(mut active) = self.requests.remove(&id) else {
            self.answers.push(Answer::Failure {
                id,
                user: None,
                code: None,
                reason: Some(FailReason::TimedOut),
            });
            return;
        };
        match (active.phase, input) {
            (Phase::Acknowledging, _) => self.answers.push(Answer::Success {
                id,
                user: active.user.take().unwrap_or_default(),
                final_data: None,
            }),
            (Phase::Busy, _) => self.answers.push(Answer::Failure {
                id,
                user: None,
                code: None,
                reason: Some(FailReason::UnexpectedContinuation),
            }),
            (Phase::Talking, Input::Data(data)) => match active.held.add(data.len()) {
                Ok(()) => self.step(id, active, Some(&data)),
                // Over a bound: this request fails (and frees what it held).
                Err(over) => self.answers.push(Answer::Failure {
                    id,
                    user: None,
                    code: match over {
                        Over::Process => Some(FailCode::TempFail),
                        Over::Connection => None,
                    },
                    reason: None,
                }),
            },
            (Phase::Talking, Input::Absent) => self.step(id, active, None),
            (Phase::Talking, Input::Undecodable) => self.answers.push(Answer::Failure {
                id,
                user: None,
                code: Some(FailCode::InvalidBase64),
                reason: Some(FailReason::ContinuedNotBase64),
            }),
        }
    }

    /// Whether requests are in the table (waiting for a `CONT`, the passdb, or a delay).
    pub(crate) fn has_requests(&self) -> bool {
        !self.requests.is_empty()
    }

    /// `CANCEL`: the request is forgotten, without an answer.
    pub(crate) fn cancel(&mut self, id: u32) {
        self.requests.remove(&id);
    }

    /// Forgets requests that waited too long for a `CONT` (silently, as Dovecot).
    pub(crate) fn expire(&mut self) {
        let timeout = self.settings.request_timeout;
        self.requests
            .retain(|_, a| a.phase == Phase::Busy || a.started.elapsed() < timeout);
    }

    /// The next result of work that had to wait: from the pool, or a delayed failure whose
    /// time has come. Cancel-safe: nothing is lost when the future is dropped.
    pub(crate) async fn completed(&mut self) -> Done {
        loop {
            let next = self
                .delayed
                .iter()
                .enumerate()
                .min_by_key(|(_, d)| d.not_before)
                .map(|(i, d)| (i, d.not_before));
            let done = tokio::select! {
                biased;
                _ = async {
                    match next {
                        Some((_, Some(at))) => tokio::time::sleep_until(at).await,
                        Some((_, None)) => {}
                        None => std::future::pending().await,
                    }
                } => {
                    let (i, _) = next.expect("a delayed result");
                    return self.delayed.swap_remove(i);
                }
                done = async {
                    match self.done.as_mut() {
                        Some((_, rx)) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // The handler holds a sender itself, so the channel never closes.
                    done.expect("the handler keeps a sender of its own")
                }
                Some(done) = self.checking.next(), if !self.checking.is_empty() => done,
            };
            match done.not_before {
                Some(at) if at > tokio::time::Instant::now() => self.delayed.push(done),
                _ => return done,
            }
        }
    }

    /// Shutdown: every delayed failure is due now, and every exchange waiting for the
    /// client's next step (which will not come) fails at once; what waits for the passdb is
    /// still answered when it completes. [`Handler::has_requests`] says when all are.
    pub(crate) fn drain(&mut self) {
        for done in &mut self.delayed {
            done.not_before = None;
        }
        let waiting: Vec<u32> = self
            .requests
            .iter()
            .filter(|(_, a)| a.phase != Phase::Busy)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if let Some(active) = self.requests.remove(&id) {
                self.answers.push(match active.phase {
                    // It succeeded; only the client's ack of the final data was missing.
                    Phase::Acknowledging => Answer::Success {
                        id,
                        user: active.user.unwrap_or_default(),
                        final_data: None,
                    },
                    _ => Answer::failure(id, active.user),
                });
            }
        }
    }

    /// Applies a result of [`Handler::completed`]. `Err`: the passdb broke; close the
    /// connection.
    pub(crate) fn finish(&mut self, done: Done) -> Result<(), Close> {
        let Done {
            id, seq, result, ..
        } = done;
        let Some(active) = self.requests.remove(&id) else {
            // Cancelled: the result is dropped.
            return Ok(());
        };
        if active.seq != seq {
            // The id was reused by a newer request: the result is dropped.
            self.requests.insert(id, active);
            return Ok(());
        }
        self.apply(id, active, result)
    }

    /// Feeds the mechanism and acts on what it says.
    fn step(&mut self, id: u32, mut active: Active, input: Option<&[u8]>) {
        let step = active.mech.step(input);
        self.proceed(id, active, step);
    }

    /// Acts on the mechanism's steps until the exchange waits or ends. The request is held
    /// here by value; one that waits (for a `CONT`, the passdb, the pool, a delay) goes into
    /// the table, one that ends never does.
    fn proceed(&mut self, id: u32, mut active: Active, mut step: Step) {
        let (split, temp_fail) = (self.settings.split_realm, self.settings.temp_fail);
        let mut via = Via::dovecot(active.mech.name());
        if active.mech.carries_token() {
            via = via.carrying_token();
        }
        loop {
            step = match step {
                // Nothing follows a challenge on the line: the client answers with CONT.
                Step::Challenge(data) => {
                    self.answers.push(Answer::Continue { id, data });
                    active.phase = Phase::Talking;
                    self.requests.insert(id, active);
                    return;
                }
                Step::Fail(why) => {
                    tracing::debug!("dovecot: request {id}: {why}");
                    let request = active
                        .user
                        .as_deref()
                        .map(|u| auth_request(split, &active, u));
                    let delay = self.auth.exchange_failed(
                        request.as_ref(),
                        &active.peer,
                        via,
                        why,
                        active.started,
                    );
                    let answer = Finished::Answer(Answer::failure(id, active.user.take()));
                    match delay.now() {
                        Ok(delay) => return self.deliver(id, active, delay, answer),
                        Err(counting) => {
                            // The shared throttle store counts the failure first.
                            let (seq, tx) = (active.seq, self.done_tx());
                            tokio::spawn(async move {
                                let delay = counting.await;
                                let _ = tx.send(Done {
                                    id,
                                    seq,
                                    result: answer,
                                    not_before: Some(tokio::time::Instant::now() + delay),
                                });
                            });
                            return self.wait(id, active);
                        }
                    }
                }
                Step::Success { final_data } => {
                    let user = active.user.take().unwrap_or_default();
                    let request = auth_request(split, &active, &user);
                    self.auth
                        .exchange_succeeded(&request, &active.peer, via, active.started);
                    let result = match (final_data, active.final_resp_ok) {
                        (final_data @ None, _) | (final_data @ Some(_), true) => {
                            Finished::Answer(Answer::Success {
                                id,
                                user,
                                final_data,
                            })
                        }
                        // Postfix never sends final-resp-ok: the final data is one more CONT,
                        // and the OK answers the client's empty CONT.
                        (Some(data), false) => {
                            active.user = Some(user);
                            Finished::FinalData(data)
                        }
                    };
                    return self.deliver(id, active, Duration::ZERO, result);
                }
                // Only passdbs that never block hand out secrets: asked here and now.
                Step::LookupCredentials { user, realm } => {
                    // A realm apart from the user (DIGEST-MD5) is reported as user@realm,
                    // as Dovecot does, and looked up as given.
                    let (request, user) = match realm {
                        Some(realm) => {
                            let full = [&user[..], b"@", &realm[..]].concat();
                            let request = AuthRequest {
                                login: user,
                                realm,
                                ..auth_request(split, &active, b"")
                            };
                            (request, full)
                        }
                        None => (auth_request(split, &active, &user), user),
                    };
                    active.user = Some(user);
                    match self.auth.lookup_credentials(&request, via).now() {
                        Ok(Ok(credentials)) => active.mech.resume_credentials(&credentials),
                        // Answered as its failure rule says (close, or temp_fail).
                        Ok(Err(Broken)) => {
                            return self.deliver(id, active, Duration::ZERO, Finished::Broken)
                        }
                        Err(running) => {
                            // The passdb reads a changed file (or asks a directory) first.
                            let done = Finished::Credentials;
                            return self.resume_later(id, active, running, done, Finished::Broken);
                        }
                    }
                }
                Step::VerifyToken { user, token } => {
                    let request = auth_request(split, &active, user.as_deref().unwrap_or_default());
                    active.user = user;
                    let named = active.user.as_deref();
                    match self.auth.verify_token(&request, named, token, via).now() {
                        Ok(Ok(verdict)) => resume_token(&mut active, verdict),
                        // Answered as its failure rule says (close, or temp_fail).
                        Ok(Err(Broken)) => {
                            return self.deliver(id, active, Duration::ZERO, Finished::Broken)
                        }
                        Err(running) => {
                            return self.resume_later(
                                id,
                                active,
                                running,
                                Finished::Token,
                                Finished::Broken,
                            )
                        }
                    }
                }
                Step::Derive(derivation) => match self.auth.derive(derivation).now() {
                    Ok(Ok(keys)) => active.mech.resume_keys(keys),
                    Ok(Err(Broken)) => {
                        return self.deliver(id, active, Duration::ZERO, Finished::Broken)
                    }
                    Err(running) => {
                        return self.resume_later(
                            id,
                            active,
                            running,
                            Finished::Keys,
                            Finished::Close,
                        )
                    }
                },
                Step::VerifyPlain { user, password } => {
                    // The exchange ends with this check: its service and client go to it.
                    let (login, realm) = split_user(&user, split);
                    let request = AuthRequest {
                        login,
                        realm,
                        service: std::mem::take(&mut active.service),
                        peer: std::mem::take(&mut active.peer),
                    };
                    active.user = Some(user);
                    match self.auth.verify_plain(&request, password, via).now() {
                        Ok(decision) => {
                            let user = decision.user.or(active.user.take());
                            let result = answer_for(id, user, decision.outcome, temp_fail)
                                .with_reason(decision.reason);
                            return self.deliver(id, active, decision.delay, result);
                        }
                        Err(running) => {
                            let seq = active.seq;
                            let user = active.user.clone();
                            self.checking.push(Box::pin(async move {
                                let Decision {
                                    outcome,
                                    delay,
                                    user: named,
                                    reason,
                                    ..
                                } = running.await;
                                let result = answer_for(id, named.or(user), outcome, temp_fail)
                                    .with_reason(reason);
                                let not_before =
                                    (!delay.is_zero()).then(|| tokio::time::Instant::now() + delay);
                                Done {
                                    id,
                                    seq,
                                    result,
                                    not_before,
                                }
                            }));
                            return self.wait(id, active);
                        }
                    }
                }
            };
        }
    }

    /// The step's work goes on in a task of its own; its value, made a result by `done` (or
    /// `broken` when the passdb broke), comes back through the channel, and the request
    /// waits meanwhile.
    fn resume_later<T: Send + Unpin + 'static>(
        &mut self,
        id: u32,
        active: Active,
        running: super::Check<Result<T, Broken>>,
        done: fn(T) -> Finished,
        broken: Finished,
    ) {
        let (seq, tx) = (active.seq, self.done_tx());
        tokio::spawn(async move {
            let result = match running.await {
                Ok(value) => done(value),
                Err(Broken) => broken,
            };
            let _ = tx.send(Done {
                id,
                seq,
                result,
                not_before: None,
            });
        });
        self.wait(id, active);
    }

    /// The request waits for work in flight: a `CONT` now is unexpected.
    fn wait(&mut self, id: u32, mut active: Active) {
        active.phase = Phase::Busy;
        self.requests.insert(id, active);
    }

    /// Applies a result now, or after `delay` in a task of its own (so that it holds up
    /// nothing else). A broken passdb goes through the channel, so that the connection closes
    /// from its loop.
    fn deliver(&mut self, id: u32, active: Active, delay: Duration, result: Finished) {
        let seq = active.seq;
        match result {
            Finished::Close => {
                let _ = self.done_tx().send(Done {
                    id,
                    seq,
                    result,
                    not_before: None,
                });
                self.wait(id, active);
            }
            // Only a Close makes apply fail, and that went the other way.
            result if delay.is_zero() => drop(self.apply(id, active, result)),
            result => {
                self.delayed.push(Done {
                    id,
                    seq,
                    result,
                    not_before: Some(tokio::time::Instant::now() + delay),
                });
                self.wait(id, active);
            }
        }
    }

    /// A result for a request, now: an answer ends it, final data makes it wait for the
    /// client's ack, keys go to its mechanism.
    fn apply(&mut self, id: u32, mut active: Active, result: Finished) -> Result<(), Close> {
        match result {
            Finished::Answer(answer) => self.answers.push(answer),
            Finished::FinalData(data) => {
                active.phase = Phase::Acknowledging;
                self.requests.insert(id, active);
                self.answers.push(Answer::Continue { id, data });
            }
            Finished::Keys(keys) => {
                let step = active.mech.resume_keys(keys);
                self.proceed(id, active, step);
            }
            Finished::Credentials(credentials) => {
                let step = active.mech.resume_credentials(&credentials);
                self.proceed(id, active, step);
            }
            Finished::Token(verdict) => {
                let step = resume_token(&mut active, verdict);
                self.proceed(id, active, step);
            }
            Finished::Broken => {
                let result = answer_for(
                    id,
                    active.user.take(),
                    Outcome::Error,
                    self.settings.temp_fail,
                );
                return self.apply(id, active, result);
            }
            Finished::Close => return Err(Close),
        }
        Ok(())
    }
}

/// Hands the token check's verdict to the mechanism; the user a valid token proves is the
/// exchange's user from then on (what the `OK` names).
fn resume_token(active: &mut Active, verdict: crate::passdb::TokenVerdict) -> Step {
    match verdict {
        Ok(proven) => {
            active.user = Some(proven);
            active.mech.resume_token(Ok(()))
        }
        Err(why) => active.mech.resume_token(Err(why)),
    }
}

/// The request a user name stands for: split at the last `@` into login and realm (unless
/// `split` is off), with the exchange's service and client.
fn auth_request(split: bool, active: &Active, user: &[u8]) -> AuthRequest {
    let (login, realm) = split_user(user, split);
    AuthRequest {
        login,
        realm,
        service: active.service.clone(),
        peer: active.peer.clone(),
    }
}

/// The answer to a password check: `OK`, `FAIL` with Dovecot's `code=` for disabled and
/// expired accounts, or closing the connection when the passdb broke (unless `temp_fail`).
fn answer_for(id: u32, user: Option<Vec<u8>>, outcome: Outcome, temp_fail: bool) -> Finished {
    let code = match outcome {
        Outcome::Verdict(PassdbResult::Ok) => {
            return Finished::Answer(Answer::Success {
                id,
                user: user.unwrap_or_default(),
                final_data: None,
            })
        }
        Outcome::Verdict(PassdbResult::UserDisabled) => Some(FailCode::UserDisabled),
        Outcome::Verdict(PassdbResult::PassExpired) => Some(FailCode::PassExpired),
        Outcome::Verdict(_) | Outcome::Refused(_) => None,
        Outcome::Error if temp_fail => Some(FailCode::TempFail),
        Outcome::Error => return Finished::Close,
    };
    Finished::Answer(Answer::Failure {
        id,
        user,
        code,
        reason: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Options, RealmPolicy};
    use crate::mech::{ScramClient, ScramHash};
    use crate::passdb::Memory;

    const ITERATIONS: u32 = 4096;

    fn handler() -> (Arc<Authenticator>, Handler) {
        handler_offering(None)
    }

    fn handler_offering(mechanisms: Option<Vec<&'static str>>) -> (Arc<Authenticator>, Handler) {
        let memory = Memory::new().with_user("alice", "example.org", "secret");
        let auth = Arc::new(
            Authenticator::new(
                Arc::new(memory),
                RealmPolicy {
                    default_realm: b"example.org".to_vec(),
                    named: true,
                    combine: false,
                },
                Options {
                    workers: 1,
                    throttle: crate::auth::Throttle::local(Duration::ZERO),
                    scram_iterations: ITERATIONS,
                    host_name: "test.host".into(),
                    cache: None,
                    mechanisms,
                    metrics: true,
                    backend_timeout: crate::auth::BACKEND_TIMEOUT,
                    tokens: None,
                },
            )
            .unwrap(),
        );
        let settings = Settings {
            split_realm: true,
            temp_fail: false,
            max_requests: 64,
            request_timeout: Duration::from_secs(150),
        };
        (
            Arc::clone(&auth),
            Handler::new(Arc::new(Live::new(auth)), settings),
        )
    }

    /// The next answer, waiting for work in flight as the connection would.
    async fn answer(handler: &mut Handler) -> Answer {
        loop {
            if let Some(answer) = handler.answers().next() {
                return answer;
            }
            let done = handler.completed().await;
            handler.finish(done).unwrap();
        }
    }

    /// Starts a SCRAM-SHA-256 exchange `id` as `user` with its client-first message; the
    /// client, for the rest of the exchange.
    fn scram_start(handler: &mut Handler, id: u32, user: &str, password: &str) -> ScramClient {
        let mut client = ScramClient::new(ScramHash::Sha256, user, password);
        let first = client.first(&format!("nonce{id}"));
        handler
            .begin(SaslStart {
                id,
                mech: "SCRAM-SHA-256".into(),
                service: b"smtp".to_vec(),
                peer: Peer::default(),
                final_resp_ok: true,
                initial: Input::Data(first.into_bytes()),
            })
            .unwrap();
        client
    }

    /// A whole SCRAM-SHA-256 exchange with final-resp-ok; the PBKDF2 rounds the server ran
    /// for it, and whether it ended in OK.
    async fn scram(
        auth: &Authenticator,
        handler: &mut Handler,
        id: u32,
        user: &str,
        password: &str,
    ) -> (u64, bool) {
        let before = auth.rounds();
        let mut client = scram_start(handler, id, user, password);
        let Answer::Continue { data, .. } = answer(handler).await else {
            panic!("no server-first")
        };
        let rounds = auth.rounds() - before;
        let (last, _) = client.last(&String::from_utf8(data).unwrap()).unwrap();
        handler.cont(id, Input::Data(last.into_bytes()));
        let ok = matches!(answer(handler).await, Answer::Success { .. });
        (rounds, ok)
    }

    #[tokio::test]
    async fn an_unknown_users_scram_exchange_costs_what_a_known_users_does() {
        let (auth, mut handler) = handler();
        let iterations = u64::from(ITERATIONS);
        // Cold: both derive their keys once, with the configured iteration count.
        assert_eq!(
            scram(&auth, &mut handler, 1, "alice", "secret").await,
            (iterations, true)
        );
        assert_eq!(
            scram(&auth, &mut handler, 2, "ghost", "secret").await,
            (iterations, false)
        );
        // Warm: neither derives again.
        assert_eq!(
            scram(&auth, &mut handler, 3, "alice", "secret").await,
            (0, true)
        );
        assert_eq!(
            scram(&auth, &mut handler, 4, "ghost", "secret").await,
            (0, false)
        );
        // A wrong password costs nothing more either: the keys come from the stored secret.
        assert_eq!(
            scram(&auth, &mut handler, 5, "alice", "wrong").await,
            (0, false)
        );
    }

    /// Forty first SCRAM logins of one user at once (a client pool reconnecting after a
    /// restart) derive her keys once: the first runs PBKDF2, the others wait for its keys.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_scram_logins_of_one_user_derive_once() {
        let (auth, mut handler) = handler();
        let mut clients = Vec::new();
        for id in 1..=40u32 {
            clients.push(scram_start(&mut handler, id, "alice", "secret"));
        }
        let mut firsts = std::collections::HashMap::new();
        while firsts.len() < 40 {
            match answer(&mut handler).await {
                Answer::Continue { id, data } => firsts.insert(id, data),
                other => panic!("{other:?}"),
            };
        }
        assert_eq!(auth.rounds(), u64::from(ITERATIONS), "one derivation");
        for (id, data) in firsts {
            let client = &mut clients[id as usize - 1];
            let (last, _) = client.last(&String::from_utf8(data).unwrap()).unwrap();
            handler.cont(id, Input::Data(last.into_bytes()));
        }
        // The proofs are checked at once, with the keys: every answer is there now.
        let answers: Vec<Answer> = handler.answers().collect();
        assert_eq!(answers.len(), 40);
        for answer in answers {
            assert!(matches!(answer, Answer::Success { .. }), "{answer:?}");
        }
        assert_eq!(auth.rounds(), u64::from(ITERATIONS));
    }

    /// A whole DIGEST-MD5 exchange without final-resp-ok, as Postfix runs it: the answer to
    /// the response, and the last answer.
    async fn digest(
        handler: &mut Handler,
        id: u32,
        user: &str,
        realm: Option<&str>,
        password: &str,
    ) -> (Answer, Option<Answer>) {
        handler
            .begin(SaslStart {
                id,
                mech: "digest-md5".into(),
                service: b"smtp".to_vec(),
                peer: Peer::default(),
                final_resp_ok: false,
                initial: Input::Absent,
            })
            .unwrap();
        let Answer::Continue { data, .. } = answer(handler).await else {
            panic!("no challenge")
        };
        let (response, rspauth) = crate::mech::digest_md5::client_response(
            &data,
            user,
            realm,
            password.as_bytes(),
            "smtp/mail.example.org",
        )
        .unwrap();
        handler.cont(id, Input::Data(response));
        let first = answer(handler).await;
        match &first {
            Answer::Continue { data, .. } => {
                assert_eq!(*data, rspauth, "the server proves it knows the password");
                handler.cont(id, Input::Data(Vec::new()));
                (first, Some(answer(handler).await))
            }
            _ => (first, None),
        }
    }

    #[tokio::test]
    async fn digest_md5_when_offered_with_the_realm_the_client_names() {
        let (_auth, mut handler) = handler_offering(Some(vec!["PLAIN", "DIGEST-MD5"]));
        let success = |id, user: &str| {
            Some(Answer::Success {
                id,
                user: user.as_bytes().to_vec(),
                final_data: None,
            })
        };
        // The default realm is example.org: offered in the challenge, used when none is named.
        let (_, last) = digest(&mut handler, 1, "alice", None, "secret").await;
        assert_eq!(last, success(1, "alice@example.org"));
        let (_, last) = digest(&mut handler, 2, "alice", Some("example.org"), "secret").await;
        assert_eq!(last, success(2, "alice@example.org"));
        for (id, user, realm, password) in [
            (3, "alice", Some("other.org"), "secret"),
            (4, "alice", None, "wrong"),
            (5, "ghost", None, "secret"),
        ] {
            let (first, last) = digest(&mut handler, id, user, realm, password).await;
            assert!(
                matches!(first, Answer::Failure { .. }) && last.is_none(),
                "{user} {realm:?} {password}: {first:?}"
            );
        }
    }

    #[tokio::test]
    async fn requests_and_violations() {
        let (_auth, mut handler) = handler();
        let start = |id, mech: &str| SaslStart {
            id,
            mech: mech.into(),
            service: b"smtp".to_vec(),
            peer: Peer::default(),
            final_resp_ok: false,
            initial: Input::Absent,
        };
        handler.begin(start(1, "login")).unwrap();
        assert_eq!(
            handler.answers().collect::<Vec<_>>(),
            [Answer::Continue {
                id: 1,
                data: b"Username:".to_vec()
            }]
        );
        assert_eq!(
            handler.begin(start(1, "PLAIN")),
            Err(Violation::DuplicateId(1))
        );
        assert_eq!(
            handler.begin(start(2, "DIGEST-MD5")),
            Err(Violation::UnsupportedMechanism("DIGEST-MD5".into()))
        );
        handler.cont(1, Input::Data(b"alice@example.org".to_vec()));
        handler.cont(1, Input::Data(b"secret".to_vec()));
        let answers: Vec<Answer> = handler.answers().collect();
        assert_eq!(
            answers[1],
            Answer::Success {
                id: 1,
                user: b"alice@example.org".to_vec(),
                final_data: None
            }
        );
        handler.cancel(9);
        handler.cont(9, Input::Data(vec![]));
        assert_eq!(
            handler.answers().collect::<Vec<_>>(),
            [Answer::Failure {
                id: 9,
                user: None,
                code: None,
                reason: Some(FailReason::TimedOut)
            }]
        );
    }
}
