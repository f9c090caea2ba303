//! Connections of Dovecot's auth-client protocol (`--dovecot-socket`): the handshake on
//! accept, then `AUTH` / `CONT` / `CANCEL` lines, many requests multiplexed on one long-lived
//! connection (Postfix keeps one per smtpd process). Each request that reaches the passdb runs
//! in its own task, so a slow or delayed one never holds up another; replies come back to the
//! connection through a channel and are written in the order they finish.
//!
//! Disconnects, as Dovecot: a bad or missing `VERSION`, `CPID`, an unknown command or
//! mechanism, a missing `service=`, id 0, a duplicate active id, parameters after `resp=`, a
//! line over 16 KiB. Everything about the user's data (bad base64, a wrong password, garbage
//! SASL input) is a `FAIL`, never a disconnect.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Outcome};
use crate::mech::{self, Mechanism, Step};
use crate::passdb::PassdbResult;
use crate::protocol::dovecot::{self, ClientLine, MAX_LINE};
use crate::request::AuthRequest;

/// How a Dovecot-protocol listener behaves.
#[derive(Debug, Clone, Copy)]
pub struct DovecotOptions {
    /// Split a user name at its last `@` into sasldb authid and realm (as libsasl2 does
    /// before it asks saslauthd). Off for sites whose authids hold `@`.
    pub split_realm: bool,
    /// When the passdb breaks, answer `FAIL ... code=temp_fail` instead of closing the
    /// connection (Postfix answers a closed connection with 454, a temporary error).
    pub temp_fail: bool,
    /// Requests in flight on one connection at most; more is a protocol error.
    pub max_requests: usize,
    /// A request waiting for `CONT` is forgotten after this (Dovecot: 150 s).
    pub request_timeout: Duration,
    /// The client must finish `VERSION` and `CPID` within this.
    pub handshake_timeout: Duration,
    /// SCRAM's PBKDF2 iteration count.
    pub scram_iterations: u32,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        DovecotOptions {
            split_realm: true,
            temp_fail: false,
            max_requests: 4096,
            request_timeout: Duration::from_secs(150),
            handshake_timeout: Duration::from_secs(10),
            scram_iterations: mech::scram::ITERATIONS,
        }
    }
}

/// A request between `AUTH` and its end.
struct Active {
    mech: Mechanism,
    /// The mechanism's name, for log lines.
    mech_name: String,
    /// The user, once the mechanism has named one.
    user: Option<Vec<u8>>,
    service: Vec<u8>,
    rip: Option<Vec<u8>>,
    /// The client takes the server's final data on `OK` (`final-resp-ok`).
    final_resp_ok: bool,
    /// The exchange succeeded and its final data went out in a `CONT`: the client's next
    /// `CONT` (empty) gets the `OK`.
    final_ack: bool,
    started: Instant,
    /// Waiting for the passdb (a `CONT` now is unexpected).
    busy: bool,
    /// Tells a late result from an earlier request that reused the id.
    seq: u64,
}

/// A finished check, sent back to the connection.
enum Done {
    Reply {
        id: u32,
        seq: u64,
        line: Vec<u8>,
    },
    /// A success whose final data goes out as a `CONT`; the request stays for the ack.
    FinalData {
        id: u32,
        seq: u64,
        line: Vec<u8>,
    },
    /// A looked-up secret for a mechanism that asked for one.
    Secret {
        id: u32,
        seq: u64,
        credentials: mech::Credentials,
    },
    /// The passdb broke and the connection is to be closed.
    Close {
        id: u32,
        seq: u64,
    },
}

/// What the connection does after a line.
enum Next {
    Continue,
    Disconnect(String),
}

/// What every connection of a listener shares, worked out once when it starts.
#[derive(Debug)]
pub struct Listener {
    /// The mechanisms advertised (and accepted): what the passdb can serve.
    pub offered: &'static [dovecot::MechInfo],
    /// What mechanisms need to know about this server.
    pub mech_context: mech::Context,
}

impl Listener {
    /// The settings for a listener in front of `auth`.
    pub fn new(auth: &Authenticator, options: &DovecotOptions) -> Listener {
        let host = crate::request::host_name().unwrap_or_else(|_| b"localhost".to_vec());
        Listener {
            offered: mech::offered(auth.passdb().has_plaintext()),
            mech_context: mech::Context {
                host: String::from_utf8_lossy(&host).into_owned(),
                scram_iterations: options.scram_iterations,
            },
        }
    }
}

/// Serves one connection until the client leaves, breaks the protocol, or shutdown. `cuid`
/// numbers the connection in the handshake.
pub async fn handle_connection(
    mut stream: UnixStream,
    auth: Arc<Authenticator>,
    options: DovecotOptions,
    listener: Arc<Listener>,
    cuid: u32,
    token: CancellationToken,
) {
    if stream
        .write_all(&handshake(cuid, listener.offered))
        .await
        .is_err()
    {
        return;
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut conn = Connection {
        auth,
        options,
        client_minor: None,
        has_cpid: false,
        requests: HashMap::new(),
        seq: 0,
        out: Vec::new(),
        done_tx,
        listener,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = vec![0u8; 4096];
    let handshake_deadline = Instant::now() + options.handshake_timeout;
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    loop {
        if !conn.out.is_empty() {
            let out = std::mem::take(&mut conn.out);
            // A client that never reads its replies is dropped, not waited for.
            match tokio::time::timeout(Duration::from_secs(30), stream.write_all(&out)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let handshaken = conn.has_cpid;
        tokio::select! {
            biased;
            _ = token.cancelled() => return,
            done = done_rx.recv() => match done {
                Some(done) => if !conn.finish(done) {
                    tracing::warn!("dovecot: passdb failure; closing the connection (the client will report a temporary error)");
                    return;
                },
                None => return,
            },
            read = stream.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    if line.len() > MAX_LINE {
                        tracing::info!("dovecot: disconnecting a client: a line over {MAX_LINE} bytes");
                        return;
                    }
                    if let Next::Disconnect(why) = conn.handle_line(&line[..line.len() - 1]) {
                        tracing::info!("dovecot: disconnecting a client: {why}");
                        let _ = stream.write_all(&conn.out).await;
                        return;
                    }
                }
                if buf.len() >= MAX_LINE {
                    tracing::info!("dovecot: disconnecting a client: a line over {MAX_LINE} bytes");
                    return;
                }
            },
            _ = tokio::time::sleep_until(handshake_deadline), if !handshaken => {
                tracing::info!("dovecot: no VERSION and CPID within {:?}; closing", options.handshake_timeout);
                return;
            },
            _ = sweep.tick() => conn.expire(),
        }
    }
}

struct Connection {
    auth: Arc<Authenticator>,
    options: DovecotOptions,
    client_minor: Option<u32>,
    has_cpid: bool,
    requests: HashMap<u32, Active>,
    seq: u64,
    out: Vec<u8>,
    done_tx: mpsc::UnboundedSender<Done>,
    listener: Arc<Listener>,
}

impl Connection {
    fn handle_line(&mut self, line: &[u8]) -> Next {
        let minor = self.client_minor.unwrap_or(0);
        let parsed = match dovecot::parse_line(line, minor) {
            Ok(parsed) => parsed,
            Err(e) => return Next::Disconnect(e.0),
        };
        match (self.client_minor, self.has_cpid, parsed) {
            (None, _, ClientLine::Version(1, minor)) => {
                self.client_minor = Some(minor);
                Next::Continue
            }
            (None, _, ClientLine::Version(major, _)) => {
                Next::Disconnect(format!("protocol major version {major} is not 1"))
            }
            (None, _, _) => Next::Disconnect("the first line is not VERSION".into()),
            (Some(_), false, ClientLine::Cpid(_)) => {
                self.has_cpid = true;
                Next::Continue
            }
            (Some(_), false, _) => Next::Disconnect("CPID expected after VERSION".into()),
            (Some(_), true, ClientLine::Auth(a)) => self.auth_begin(a),
            (Some(_), true, ClientLine::Cont(id, data)) => {
                self.cont(id, &data);
                Next::Continue
            }
            (Some(_), true, ClientLine::Cancel(id)) => {
                self.requests.remove(&id);
                Next::Continue
            }
            (Some(_), true, _) => Next::Disconnect("handshake command after the handshake".into()),
        }
    }

    fn auth_begin(&mut self, a: dovecot::Auth) -> Next {
        if self.requests.contains_key(&a.id) {
            return Next::Disconnect(format!("duplicate request id {}", a.id));
        }
        if self.requests.len() >= self.options.max_requests {
            return Next::Disconnect(format!(
                "more than {} requests in flight",
                self.options.max_requests
            ));
        }
        let Some(mech) =
            Mechanism::start(&a.mech, self.listener.offered, &self.listener.mech_context)
        else {
            return Next::Disconnect(format!("unsupported mechanism {:?}", a.mech));
        };
        let input = match a.resp.as_deref().map(|r| BASE64.decode(r)) {
            None => None,
            Some(Ok(data)) => Some(data),
            Some(Err(_)) => {
                self.out.extend(dovecot::fail(
                    a.id,
                    None,
                    Some("invalid_base64"),
                    Some("Invalid base64 data in initial response"),
                ));
                return Next::Continue;
            }
        };
        self.seq += 1;
        self.requests.insert(
            a.id,
            Active {
                mech,
                mech_name: a.mech.to_ascii_uppercase(),
                user: None,
                service: a.service,
                rip: a.rip,
                final_resp_ok: a.final_resp_ok,
                final_ack: false,
                started: Instant::now(),
                busy: false,
                seq: self.seq,
            },
        );
        self.step(a.id, input.as_deref());
        Next::Continue
    }

    fn cont(&mut self, id: u32, data: &[u8]) {
        let Some(active) = self.requests.get_mut(&id) else {
            self.out.extend(dovecot::fail(
                id,
                None,
                None,
                Some("Authentication request timed out"),
            ));
            return;
        };
        if active.final_ack {
            let user = active.user.clone().unwrap_or_default();
            self.requests.remove(&id);
            self.out.extend(dovecot::ok(id, &user, None));
            return;
        }
        if active.busy {
            self.requests.remove(&id);
            self.out.extend(dovecot::fail(
                id,
                None,
                None,
                Some("Unexpected continuation"),
            ));
            return;
        }
        match BASE64.decode(data) {
            Ok(input) => self.step(id, Some(&input)),
            Err(_) => {
                self.requests.remove(&id);
                self.out.extend(dovecot::fail(
                    id,
                    None,
                    Some("invalid_base64"),
                    Some("Invalid base64 data in continued response"),
                ));
            }
        }
    }

    /// Feeds the mechanism and acts on its step.
    fn step(&mut self, id: u32, input: Option<&[u8]>) {
        let Some(active) = self.requests.get_mut(&id) else {
            return;
        };
        let step = active.mech.step(input);
        self.act(id, step);
    }

    /// The request a mechanism's user name stands for: split at the last `@` into login and
    /// realm, with the request's service and client address.
    fn auth_request(&self, active: &Active, user: &[u8]) -> AuthRequest {
        let (login, realm) = split_user(user, self.options.split_realm);
        AuthRequest {
            login,
            realm,
            service: active.service.clone(),
            client_addr: active.rip.clone(),
        }
    }

    fn act(&mut self, id: u32, step: Step) {
        let Some(active) = self.requests.get(&id) else {
            return;
        };
        let (auth, seq, tx, temp_fail) = (
            Arc::clone(&self.auth),
            active.seq,
            self.done_tx.clone(),
            self.options.temp_fail,
        );
        match step {
            Step::Challenge(challenge) => {
                // Nothing follows a challenge on the line: the client answers with CONT.
                self.out
                    .extend(dovecot::cont(id, &BASE64.encode(challenge)));
                return;
            }
            Step::Fail(why) => {
                tracing::debug!("dovecot: request {id}: {why}");
                let user = active.user.clone();
                let request = user.as_deref().map(|u| self.auth_request(active, u));
                let (rip, mech) = (active.rip.clone(), active.mech_name.clone());
                tokio::spawn(async move {
                    match &request {
                        Some(request) => auth.mech_verdict(request, &mech, false).await,
                        None => auth.failure_pause(rip.as_deref()).await,
                    }
                    let line = dovecot::fail(id, user.as_deref(), None, None);
                    let _ = tx.send(Done::Reply { id, seq, line });
                });
            }
            Step::Success { final_data } => {
                let user = active.user.clone().unwrap_or_default();
                let request = self.auth_request(active, &user);
                let mech = active.mech_name.clone();
                let final_data = final_data.map(|d| BASE64.encode(d));
                let done = match (final_data, active.final_resp_ok) {
                    (None, _) => Done::Reply {
                        id,
                        seq,
                        line: dovecot::ok(id, &user, None),
                    },
                    (Some(data), true) => Done::Reply {
                        id,
                        seq,
                        line: dovecot::ok(id, &user, Some(&data)),
                    },
                    // Postfix never sends final-resp-ok: the final data is one more CONT,
                    // and the OK answers the client's empty CONT.
                    (Some(data), false) => Done::FinalData {
                        id,
                        seq,
                        line: dovecot::cont(id, &data),
                    },
                };
                tokio::spawn(async move {
                    auth.mech_verdict(&request, &mech, true).await;
                    let _ = tx.send(done);
                });
            }
            Step::LookupPlaintext { user } => {
                let request = self.auth_request(active, &user);
                let given = user.clone();
                tokio::spawn(async move {
                    let done = match auth.lookup_credentials(&request) {
                        Ok(credentials) => Done::Secret {
                            id,
                            seq,
                            credentials,
                        },
                        Err(e) => {
                            tracing::error!("dovecot: secret lookup failed: {e}");
                            if temp_fail {
                                let line = dovecot::fail(id, Some(&user), Some("temp_fail"), None);
                                Done::Reply { id, seq, line }
                            } else {
                                Done::Close { id, seq }
                            }
                        }
                    };
                    let _ = tx.send(done);
                });
                if let Some(active) = self.requests.get_mut(&id) {
                    active.user = Some(given);
                }
            }
            Step::VerifyPlain { user, password } => {
                let request = self.auth_request(active, &user);
                if let Some(active) = self.requests.get_mut(&id) {
                    active.user = Some(user.clone());
                }
                // A passdb that never blocks is asked here and now; only a failure's delay
                // needs a task of its own (so it holds up nothing else).
                if !auth.passdb().is_blocking() {
                    // verify_plain_now answers for every passdb that does not block.
                    let Some((outcome, delay)) = auth.verify_plain_now(&request, password) else {
                        return;
                    };
                    let done = verdict_reply(id, seq, &user, &outcome, temp_fail);
                    if delay.is_zero() {
                        if let Done::Reply { line, .. } = done {
                            self.requests.remove(&id);
                            self.out.extend(line);
                            return;
                        }
                        let _ = tx.send(done);
                    } else {
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(done);
                        });
                    }
                } else {
                    tokio::spawn(async move {
                        let outcome = auth.verify_plain(&request, password).await;
                        let _ = tx.send(verdict_reply(id, seq, &user, &outcome, temp_fail));
                    });
                }
            }
        }
        // Everything but a challenge waits for a task: a CONT now is unexpected.
        if let Some(active) = self.requests.get_mut(&id) {
            active.busy = true;
        }
    }

    /// Applies a finished task; `false` means close the connection.
    fn finish(&mut self, done: Done) -> bool {
        let (id, seq) = match &done {
            Done::Reply { id, seq, .. }
            | Done::FinalData { id, seq, .. }
            | Done::Secret { id, seq, .. }
            | Done::Close { id, seq } => (*id, *seq),
        };
        // Cancelled, or the id was reused by a newer request: the result is dropped.
        if self.requests.get(&id).is_none_or(|a| a.seq != seq) {
            return true;
        }
        match done {
            Done::Reply { line, .. } => {
                self.requests.remove(&id);
                self.out.extend(line);
                true
            }
            Done::FinalData { line, .. } => {
                if let Some(active) = self.requests.get_mut(&id) {
                    active.busy = false;
                    active.final_ack = true;
                }
                self.out.extend(line);
                true
            }
            Done::Secret { credentials, .. } => {
                let Some(active) = self.requests.get_mut(&id) else {
                    return true;
                };
                active.busy = false;
                let step = active.mech.resume(&credentials);
                self.act(id, step);
                true
            }
            Done::Close { .. } => false,
        }
    }

    /// Forgets requests that waited too long for a CONT (silently, as Dovecot).
    fn expire(&mut self) {
        let timeout = self.options.request_timeout;
        self.requests
            .retain(|_, a| a.busy || a.started.elapsed() < timeout);
    }
}

/// The reply to a password check: `OK`, `FAIL` with Dovecot's `code=` for disabled and
/// expired accounts, or closing the connection when the passdb broke (unless `temp_fail`).
fn verdict_reply(id: u32, seq: u64, user: &[u8], outcome: &Outcome, temp_fail: bool) -> Done {
    let fail = |code: Option<&str>| Done::Reply {
        id,
        seq,
        line: dovecot::fail(id, Some(user), code, None),
    };
    match outcome {
        Outcome::Verdict(PassdbResult::Ok) => Done::Reply {
            id,
            seq,
            line: dovecot::ok(id, user, None),
        },
        Outcome::Verdict(PassdbResult::UserDisabled) => fail(Some("user_disabled")),
        Outcome::Verdict(PassdbResult::PassExpired) => fail(Some("pass_expired")),
        Outcome::Verdict(_) | Outcome::Refused(_) => fail(None),
        Outcome::Error(_) if temp_fail => fail(Some("temp_fail")),
        Outcome::Error(_) => Done::Close { id, seq },
    }
}

/// Splits a user name at its last `@` into (authid, realm), as libsasl2 does before it asks
/// saslauthd; without `@` (or with `split` off) the realm is empty, meaning the default realm.
pub fn split_user(user: &[u8], split: bool) -> (Vec<u8>, Vec<u8>) {
    match user.iter().rposition(|&b| b == b'@') {
        Some(at) if split => (user[..at].to_vec(), user[at + 1..].to_vec()),
        _ => (user.to_vec(), Vec::new()),
    }
}

/// Serves Dovecot's auth-client protocol on `listener` until `shutdown` completes.
pub async fn serve_dovecot(
    listener: tokio::net::UnixListener,
    auth: Arc<Authenticator>,
    limits: crate::server::Limits,
    options: DovecotOptions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let cuid = std::sync::atomic::AtomicU32::new(0);
    let shared = Arc::new(Listener::new(&auth, &options));
    crate::server::serve(listener, limits, shutdown, move |stream, token| {
        let n = cuid.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        handle_connection(
            stream,
            Arc::clone(&auth),
            options,
            Arc::clone(&shared),
            n,
            token,
        )
    })
    .await
}

/// The handshake advertising `offered`, with a fresh cookie.
pub fn handshake(cuid: u32, offered: &[dovecot::MechInfo]) -> Vec<u8> {
    let mut cookie = [0u8; 16];
    crate::random::fill(&mut cookie);
    dovecot::handshake(offered, std::process::id(), cuid, &cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_split_at_the_last_at() {
        let s = |u: &str, split| {
            let (a, r) = split_user(u.as_bytes(), split);
            (String::from_utf8(a).unwrap(), String::from_utf8(r).unwrap())
        };
        assert_eq!(
            s("alice@example.org", true),
            ("alice".into(), "example.org".into())
        );
        assert_eq!(s("a@b@c", true), ("a@b".into(), "c".into()));
        assert_eq!(s("alice", true), ("alice".into(), "".into()));
        assert_eq!(
            s("alice@example.org", false),
            ("alice@example.org".into(), "".into())
        );
    }
}
