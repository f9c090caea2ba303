//! The throttle's state shared by several daemons, in Redis or Valkey (`throttle_store`).
//!
//! - A failure is one call: a Lua script (EVALSHA) that counts the client address's failure
//!   and the user's distinct wrong password, and answers both counts. A success costs the
//!   request nothing: its reset is sent from a task of its own.
//! - Every call has the deadline `throttle_store_timeout`. A timeout or an error makes the
//!   store *down*: it is logged once, counted, and the daemon throttles from its own memory
//!   (which it keeps up to date all along) while a task reconnects in the background.
//! - Keys are `{PREFIX}:peer:ADDR` (a hash), `{PREFIX}:user:USER` (the user's wrong-password
//!   fingerprints, a sorted set), `{PREFIX}:home:USER` (the user's usual address),
//!   `{PREFIX}:peers` and `{PREFIX}:users` (indexes for `penalty list`), and `{PREFIX}:key`:
//!   the key every daemon fingerprints passwords with, agreed at the first connection (`SET
//!   NX`). The braces keep every key in one Redis Cluster slot. A `{PREFIX}:key` that is not
//!   ours means another application uses the prefix: the store is not used.
//! - No password reaches Redis: only 32 bits of a keyed hash of (user, password), too few to
//!   confirm a guess offline, enough to tell a new guess from a repeated one.
//! - What Redis answers is not trusted: counts are clamped, and a reply of the wrong shape
//!   is an error. A lying store can delay a failure up to the cap; it never makes a success.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use zeroize::Zeroizing;

use super::settings::{Login, StoreError, StoreSettings, Target};
use super::{Counted, PeerKey, MAX_STEPS};
use crate::metrics::StoreCounts;

/// What marks `{PREFIX}:key` as ours.
const KEY_MARK: &str = "saslauthd-rs throttle key v1 ";

/// Sorted-set entries kept at most: per user, and in each index.
const MAX_GUESSES: u32 = 64;
const MAX_INDEX: u32 = 100_000;

/// How long successes gather before they are sent (a reset is that much late at most).
const GATHER: Duration = Duration::from_millis(5);

/// Failures counted in one call at most.
const MAX_BATCH: usize = 256;

/// Successes waiting to be sent at most.
const MAX_PENDING: usize = 65_536;

/// The deadline of the calls nobody waits for (a batch of successes) and of the admin's.
const LIST_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a user's usual address is remembered.
const HOME_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Reconnection attempts: the first after this, doubling up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A connection's deadline (connect, authenticate, agree on the key): longer than a call's,
/// as it runs in the background.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

// A peer's state is a string "STEPS LAST-ATTEMPT" with the peer's time to live; a user's
// guesses a sorted set (fingerprint -> when). One call counts every failure that arrived
// while the one before was out (a batch): per failure, the peer's step before it and the
// user's distinct guesses, or -1 for a key whose value is not ours (left alone). The
// indexes that `penalty list` reads are written only when a peer or user is new, so that
// once the state exists a failure costs four commands (GET, SET, ZADD, ZCARD; PEXPIRE too for
// a new guess); a user's old guesses are dropped only when the count passes the threshold
// (only then do they matter).
// KEYS: 1 the peers' index, 2 the users', then each failure's peer and user keys.
// ARGV: 1 peer ttl, 2 window, 3 guesses kept at most, 4 last step, 5 index size at most,
// 6 now (ms, the daemon's clock), 7 threshold; then each failure's attempt, peer ('' none)
// and user ('' none).
const FAILURE: &str = r#"
local ttl, window, cap, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local icap, now, threshold = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local function index(key, member)
  if type(redis.pcall('ZADD', key, now, member)) ~= 'number' then return end
  redis.call('PEXPIRE', key, 86400000)
  local n = redis.call('ZCARD', key)
  if n > icap then redis.call('ZREMRANGEBYRANK', key, 0, n - icap - 1) end
end
local function one(pkey, ukey, attempt, peer, user)
  local steps = 0
  if peer ~= '' then
    local v = redis.pcall('GET', pkey)
    if type(v) == 'table' then return -1, -1 end
    local last = ''
    if v then
      local s, l = string.match(v, '^(%d+) (%d+)$')
      if not s then return -1, -1 end
      steps = math.min(tonumber(s), max)
      last = l
    else
      index(KEYS[1], peer)
    end
    local next = steps
    if last ~= attempt then next = math.min(steps + 1, max) end
    redis.call('SET', pkey, next .. ' ' .. attempt, 'PX', ttl)
  end
  local guesses = 0
  if user ~= '' then
    local added = redis.pcall('ZADD', ukey, now, attempt)
    if type(added) ~= 'number' then return -1, -1 end
    guesses = redis.call('ZCARD', ukey)
    if added == 1 then
      if guesses == 1 then index(KEYS[2], user) end
      redis.call('PEXPIRE', ukey, window)
    end
    if guesses > threshold then
      redis.call('ZREMRANGEBYSCORE', ukey, '-inf', now - window)
      guesses = redis.call('ZCARD', ukey)
      if guesses > cap then
        redis.call('ZREMRANGEBYRANK', ukey, 0, guesses - cap - 1)
        guesses = cap
      end
    end
  end
  return steps, guesses
end
local out = {}
for i = 1, (#ARGV - 7) / 3 do
  local s, g = one(KEYS[1 + 2 * i], KEYS[2 + 2 * i], ARGV[5 + 3 * i], ARGV[6 + 3 * i], ARGV[7 + 3 * i])
  out[#out + 1] = s
  out[#out + 1] = g
end
return out
"#;

// The peers and users the indexes name whose state is still there (the others leave the
// index): each with its step or its guesses in the window, and how long ago its last
// failure was. ARGV: 1 key prefix, 2 peer ttl, 3 window, 4 how many, 5 now.
const LIST: &str = r#"
local ttl, window, limit, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local peers, users = {}, {}
for _, p in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, limit - 1)) do
  local key = ARGV[1] .. 'peer:' .. p
  local v = redis.call('GET', key)
  local steps = v and string.match(v, '^(%d+) ')
  if steps then
    peers[#peers + 1] = p
    peers[#peers + 1] = steps
    peers[#peers + 1] = tostring(math.max(0, ttl - redis.call('PTTL', key)))
  elseif not v then
    redis.call('ZREM', KEYS[1], p)
  end
end
for _, u in ipairs(redis.call('ZREVRANGE', KEYS[2], 0, limit - 1)) do
  local key = ARGV[1] .. 'user:' .. u
  local n = redis.call('ZCOUNT', key, now - window, '+inf')
  if n > 0 then
    local last = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
    users[#users + 1] = u
    users[#users + 1] = tostring(n)
    users[#users + 1] = tostring(math.max(0, now - tonumber(last[2])))
  elseif redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[2], u)
  end
end
return {peers, users}
"#;

// Forgets peers (KEYS[2..], strings of ours) or users (sorted sets) and their entries in the
// index KEYS[1]; ARGV: 1 the type, 2.. the members. A key of another type is left alone.
const RESET: &str = r#"
local n = 0
for i = 2, #KEYS do
  local ty = redis.call('TYPE', KEYS[i])['ok']
  if ty == ARGV[1] then
    n = n + redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[1], ARGV[i])
  elseif ty ~= 'none' then
    return redis.error_reply('FOREIGN ' .. KEYS[i] .. ' is a ' .. ty .. ' saslauthd-rs did not write')
  end
end
return n
"#;

/// One row of `penalty list`: who, the step or count, how long ago.
pub(crate) type Row = (String, u32, Duration);

/// A connection of either kind (both multiplex: cloned per call).
#[derive(Clone)]
enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Failures and successes still to send, and whether a task is sending each.
#[derive(Default)]
struct Pending {
    failures: Vec<Failure>,
    sending_failures: bool,
    /// (peer, user).
    successes: Vec<(Option<String>, Option<Vec<u8>>)>,
    flushing: bool,
}

/// A failure waiting to be counted, and where its counts go.
struct Failure {
    peer: Option<String>,
    user: Option<Vec<u8>>,
    attempt: u32,
    reply: tokio::sync::oneshot::Sender<Option<Counted>>,
}

enum State {
    Up {
        conn: Conn,
        key: Arc<Zeroizing<[u8; 32]>>,
    },
    Down {
        reconnecting: bool,
    },
}

/// The shared store: its settings, its connection (or the lack of one), its scripts.
pub(crate) struct Store {
    settings: StoreSettings,
    /// How long a peer's failures are remembered, and the user guard's window and
    /// threshold (what the daemon's own throttle uses).
    peer_ttl: Duration,
    window: Duration,
    threshold: u32,
    state: Mutex<State>,
    counts: StoreCounts,
    failure: redis::Script,
    list: redis::Script,
    reset: redis::Script,
    /// Failures and successes still to send.
    pending: Mutex<Pending>,
    /// Whether it was ever connected (a store never reached is logged by the reconnection).
    ever_up: std::sync::atomic::AtomicBool,
    /// When a script error about foreign values was last logged (once a minute at most).
    foreign_logged: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.settings.url)
            .finish()
    }
}

impl Store {
    /// A store, down until the background task (started now, when there is a runtime, or at
    /// the first call) connects.
    pub(crate) fn new(
        settings: StoreSettings,
        (peer_ttl, window, threshold): (Duration, Duration, u32),
        counts: StoreCounts,
    ) -> Arc<Store> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        counts.up.set(0);
        let store = Arc::new(Store {
            settings,
            peer_ttl,
            window,
            threshold,
            state: Mutex::new(State::Down {
                reconnecting: false,
            }),
            counts,
            failure: redis::Script::new(FAILURE),
            list: redis::Script::new(LIST),
            reset: redis::Script::new(RESET),
            pending: Mutex::default(),
            ever_up: std::sync::atomic::AtomicBool::new(false),
            foreign_logged: Mutex::new(None),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            store.ensure_reconnecting();
        }
        store
    }

    pub(crate) fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Whether this store counts as `settings` and the guard say (else a reload makes a new
    /// one).
    pub(crate) fn serves(
        &self,
        settings: &StoreSettings,
        window: Duration,
        threshold: u32,
    ) -> bool {
        self.settings == *settings && self.window == window && self.threshold == threshold
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection and the agreed key, when the store is up (else the reconnection is
    /// under way).
    fn up(self: &Arc<Self>) -> Option<(Conn, Arc<Zeroizing<[u8; 32]>>)> {
        match &*self.state() {
            State::Up { conn, key } => return Some((conn.clone(), Arc::clone(key))),
            State::Down { .. } => {}
        }
        self.ensure_reconnecting();
        None
    }

    /// The key passwords are fingerprinted with, when the store is up.
    pub(crate) fn key(self: &Arc<Self>) -> Option<Arc<Zeroizing<[u8; 32]>>> {
        self.up().map(|(_, key)| key)
    }

    fn key_name(&self, kind: &str, member: &str) -> String {
        format!("{{{}}}:{kind}{member}", self.settings.prefix)
    }

    /// Marks the store down after `error` (logged when it was up) and reconnects.
    fn went_down(self: &Arc<Self>, error: &StoreError) {
        let was_up = {
            let mut state = self.state();
            let was_up = matches!(*state, State::Up { .. });
            if was_up {
                *state = State::Down {
                    reconnecting: false,
                };
            }
            was_up
        };
        if was_up {
            self.counts.up.set(0);
            tracing::warn!(
                "{error}: the throttle store {} is down; throttling locally, reconnecting",
                self.settings.url
            );
        }
        self.ensure_reconnecting();
    }

    /// Starts the reconnection task unless it runs (or there is no runtime to run it).
    fn ensure_reconnecting(self: &Arc<Self>) {
        {
            let mut state = self.state();
            match &mut *state {
                State::Down { reconnecting } if !*reconnecting => *reconnecting = true,
                _ => return,
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            *self.state() = State::Down {
                reconnecting: false,
            };
            return;
        };
        let weak = Arc::downgrade(self);
        runtime.spawn(reconnect(weak));
    }

    /// Connects once and agrees on the key: what a reconnection does.
    async fn connect(&self) -> Result<(Conn, Zeroizing<[u8; 32]>), StoreError> {
        connect(&self.settings).await
    }

    /// Runs `call` on the connection within `deadline`; a timeout or a connection error
    /// takes the store down, a foreign value is logged (once a minute) and left alone.
    async fn call<T>(
        self: &Arc<Self>,
        conn: Conn,
        deadline: Duration,
        call: impl AsyncFnOnce(Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.call_n(conn, deadline, 1, call).await
    }

    /// [`Store::call`] for `n` requests in one call (a batch), counted as `n`.
    async fn call_n<T>(
        self: &Arc<Self>,
        conn: Conn,
        deadline: Duration,
        n: u64,
        call: impl AsyncFnOnce(Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(deadline, call(conn)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(deadline)),
        };
        match &result {
            Ok(_) => self.counts.calls_n("ok", n),
            Err(e @ (StoreError::NotOurs { .. } | StoreError::Shape(_))) => {
                self.counts.calls_n("foreign", n);
                self.log_foreign(e);
            }
            Err(e) => {
                let kind = if matches!(e, StoreError::Timeout(_)) {
                    "timeout"
                } else {
                    "error"
                };
                self.counts.calls_n(kind, n);
                self.went_down(e);
            }
        }
        result
    }

    /// Logs a value that is not ours, once a minute at most.
    fn log_foreign(&self, e: &StoreError) {
        let mut logged = self
            .foreign_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *logged = Some(Instant::now());
            tracing::warn!("{e}; such failures are throttled locally");
        }
    }

    /// Counts a failure: the address's (`peer`, when known) and the user's (`user`, when
    /// known), both under the fingerprint `attempt`. `None` when the store is down, did not
    /// answer in time, or holds a value that is not ours where this failure's would be.
    pub(crate) async fn failed(
        self: &Arc<Self>,
        peer: Option<PeerKey>,
        user: Option<&[u8]>,
        attempt: u32,
    ) -> Option<Counted> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return None;
        };
        if !matches!(*self.state(), State::Up { .. }) {
            self.counts.calls("skipped");
            self.ensure_reconnecting();
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let failure = Failure {
            peer: peer.map(|p| p.to_string()),
            user: user.map(<[u8]>::to_vec),
            attempt,
            reply: tx,
        };
        let start = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.failures.push(failure);
            !std::mem::replace(&mut pending.sending_failures, true)
        };
        if start {
            runtime.spawn(send_failures(Arc::clone(self)));
        }
        // The batch's call has the deadline (a failure that arrived while the call before
        // was out waits for that one too: twice the deadline at most); a call that fails or
        // overruns drops the senders.
        let asked = Instant::now();
        let counted = rx.await.ok().flatten();
        self.counts.wait.observe(asked.elapsed());
        counted
    }

    /// Counts a batch of failures in one call, and tells each its counts.
    async fn count_failures(
        &self,
        conn: &mut Conn,
        batch: &[Failure],
    ) -> Result<Vec<Option<Counted>>, StoreError> {
        let mut invocation = self.failure.prepare_invoke();
        invocation
            .key(self.key_name("peers", ""))
            .key(self.key_name("users", ""))
            .arg(millis(self.peer_ttl))
            .arg(millis(self.window))
            .arg(MAX_GUESSES)
            .arg(MAX_STEPS)
            .arg(MAX_INDEX)
            .arg(now_millis())
            .arg(self.threshold);
        for failure in batch {
            let peer = failure.peer.as_deref().unwrap_or_default();
            let user = failure.user.as_deref().unwrap_or_default();
            invocation
                .key(self.key_name("peer:", peer))
                .key(user_key(self, "user:", user))
                .arg(failure.attempt)
                .arg(peer)
                .arg(user);
        }
        let reply: redis::Value = invocation.invoke_async(conn).await.map_err(foreign_or)?;
        let redis::Value::Array(counts) = &reply else {
            return Err(StoreError::Shape(format!(
                "{reply:?} to a batch of failures"
            )));
        };
        if counts.len() != 2 * batch.len() {
            return Err(StoreError::Shape(format!(
                "{} counts for {} failures",
                counts.len(),
                batch.len()
            )));
        }
        Ok(counts
            .chunks(2)
            .map(|pair| match (count(&pair[0]), count(&pair[1])) {
                (Some(steps), Some(guesses)) => Some(Counted {
                    peer_steps: steps.min(MAX_STEPS),
                    guesses: guesses.min(MAX_GUESSES),
                }),
                // -1: a value that is not ours.
                _ => None,
            })
            .collect())
    }

    /// Forgets the address's failures and, when this is the user's usual address (where
    /// their last success came from), the user's wrong guesses; this address becomes the
    /// usual one. A success waits for nothing: it joins the next batch, which a task of its
    /// own sends (one round trip for every success that arrived meanwhile, and a second only
    /// when there is something to forget).
    pub(crate) fn succeeded(self: &Arc<Self>, peer: Option<PeerKey>, user: Option<&[u8]>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !matches!(*self.state(), State::Up { .. }) {
            return;
        }
        let success = (peer.map(|p| p.to_string()), user.map(<[u8]>::to_vec));
        let start = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // A store that falls behind loses resets, not memory: they only end penalties
            // early, and the penalties expire by themselves.
            if pending.successes.len() < MAX_PENDING {
                pending.successes.push(success);
            }
            !std::mem::replace(&mut pending.flushing, true)
        };
        if start {
            runtime.spawn(flush_successes(Arc::clone(self)));
        }
    }

    /// Sends one batch of successes: swaps each user's usual address and asks whether there
    /// is anything to forget, then forgets it.
    async fn send_successes(
        &self,
        conn: &mut Conn,
        batch: &[(Option<String>, Option<Vec<u8>>)],
    ) -> Result<(), StoreError> {
        // Each peer once; each user once, with the addresses of their successes in order
        // (the usual address of a client that gave none is "-").
        let mut peers: indexmap::IndexSet<&str> = indexmap::IndexSet::new();
        let mut users: indexmap::IndexMap<&[u8], Vec<&str>> = indexmap::IndexMap::new();
        for (peer, user) in batch {
            if let Some(peer) = peer.as_deref() {
                peers.insert(peer);
            }
            if let Some(user) = user {
                let home = peer.as_deref().unwrap_or("-");
                users.entry(user.as_slice()).or_default().push(home);
            }
        }
        let mut look = redis::pipe();
        for peer in &peers {
            look.cmd("EXISTS").arg(self.key_name("peer:", peer));
        }
        for (user, homes) in &users {
            look.cmd("SET")
                .arg(user_key(self, "home:", user))
                .arg(*homes.last().expect("a user here has a success"))
                .arg("PX")
                .arg(millis(HOME_TTL))
                .arg("GET")
                .cmd("EXISTS")
                .arg(user_key(self, "user:", user));
        }
        let seen: Vec<redis::Value> = look.query_async(conn).await.map_err(foreign_or)?;
        if seen.len() != peers.len() + 2 * users.len() {
            return Err(StoreError::Shape(format!(
                "{} replies to a batch",
                seen.len()
            )));
        }
        let (peer_replies, user_replies) = seen.split_at(peers.len());
        let forget_peers: Vec<&[u8]> = peers
            .iter()
            .zip(peer_replies)
            .filter(|(_, exists)| count(exists).unwrap_or(0) > 0)
            .map(|(peer, _)| peer.as_bytes())
            .collect();
        // A user's guesses go when a success came from the address of the one before it.
        let forget_users: Vec<&[u8]> = users
            .iter()
            .zip(user_replies.chunks(2))
            .filter(|((_, homes), replies)| {
                let before = match &replies[0] {
                    redis::Value::BulkString(old) => std::str::from_utf8(old).ok(),
                    _ => None,
                };
                let from_home = before == Some(homes[0]) || homes.windows(2).any(|w| w[0] == w[1]);
                from_home && count(&replies[1]).unwrap_or(0) > 0
            })
            .map(|((user, _), _)| *user)
            .collect();
        if !forget_peers.is_empty() {
            self.forget(conn, &forget_peers, "peer:", "peers", "string")
                .await?;
        }
        if !forget_users.is_empty() {
            self.forget(conn, &forget_users, "user:", "users", "zset")
                .await?;
        }
        Ok(())
    }

    /// Deletes the state of `members` (peers, or users) and their index entries, unless a
    /// key holds a value that is not ours: how many there were.
    async fn forget(
        &self,
        conn: &mut Conn,
        members: &[&[u8]],
        kind: &str,
        index: &str,
        ty: &str,
    ) -> Result<u32, StoreError> {
        let mut invocation = self.reset.prepare_invoke();
        invocation.key(self.key_name(index, "")).arg(ty);
        for member in members {
            invocation.key(user_key(self, kind, member)).arg(*member);
        }
        let n: i64 = invocation.invoke_async(conn).await.map_err(foreign_or)?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    /// The addresses (step, time since the last failure) and users (distinct wrong
    /// passwords in the window, time since the last) the store holds, most recent first.
    pub(crate) async fn list(
        self: &Arc<Self>,
        peer_ttl: Duration,
        window: Duration,
        limit: usize,
    ) -> Result<(Vec<Row>, Vec<Row>), StoreError> {
        let Some((conn, _)) = self.up() else {
            return Err(StoreError::Down(self.settings.url.to_string()));
        };
        let mut invocation = self.list.prepare_invoke();
        invocation
            .key(self.key_name("peers", ""))
            .key(self.key_name("users", ""))
            .arg(self.key_name("", ""))
            .arg(millis(peer_ttl))
            .arg(millis(window))
            .arg(limit)
            .arg(now_millis());
        self.call(
            conn,
            self.settings.timeout.max(LIST_TIMEOUT),
            async move |mut conn| {
                let reply: redis::Value = invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(foreign_or)?;
                let redis::Value::Array(parts) = reply else {
                    return Err(StoreError::Shape(format!("{reply:?} to a list")));
                };
                let [peers, users] = <[redis::Value; 2]>::try_from(parts)
                    .map_err(|p| StoreError::Shape(format!("{} parts to a list", p.len())))?;
                Ok((rows(peers)?, rows(users)?))
            },
        )
        .await
    }

    /// Forgets an address's failures (`peer`) or a user's guesses: whether there were any.
    pub(crate) async fn reset(
        self: &Arc<Self>,
        who: Result<PeerKey, &[u8]>,
    ) -> Result<bool, StoreError> {
        let Some((conn, _)) = self.up() else {
            return Err(StoreError::Down(self.settings.url.to_string()));
        };
        let peer;
        let (member, kind, index, ty): (&[u8], _, _, _) = match who {
            Ok(key) => {
                peer = key.to_string();
                (peer.as_bytes(), "peer:", "peers", "string")
            }
            Err(user) => (user, "user:", "users", "zset"),
        };
        self.call(
            conn,
            self.settings.timeout.max(LIST_TIMEOUT),
            async |mut conn| Ok(self.forget(&mut conn, &[member], kind, index, ty).await? > 0),
        )
        .await
    }
}

/// A user's key: the name is binary-safe in Redis.
fn user_key(store: &Store, kind: &str, user: &[u8]) -> Vec<u8> {
    let mut key = store.key_name(kind, "").into_bytes();
    key.extend_from_slice(user);
    key
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A script's `FOREIGN` error (or Redis's `WRONGTYPE`) is a value that is not ours;
/// anything else stays an error.
fn foreign_or(e: redis::RedisError) -> StoreError {
    match e.code() {
        Some("FOREIGN") => StoreError::NotOurs {
            key: e
                .detail()
                .and_then(|d| d.split(' ').next())
                .unwrap_or_default()
                .to_owned(),
        },
        Some("WRONGTYPE") => StoreError::NotOurs {
            key: e.detail().unwrap_or_default().to_owned(),
        },
        _ => StoreError::Redis(e),
    }
}

fn count(v: &redis::Value) -> Option<u32> {
    match v {
        redis::Value::Int(n) => u32::try_from(*n).ok(),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn rows(v: redis::Value) -> Result<Vec<Row>, StoreError> {
    let redis::Value::Array(items) = v else {
        return Err(StoreError::Shape(format!("{v:?} for rows")));
    };
    items
        .chunks(3)
        .map(|row| match row {
            [redis::Value::BulkString(who), n, ago] => match (count(n), count(ago)) {
                (Some(n), Some(ago)) => Ok((
                    String::from_utf8_lossy(who).into_owned(),
                    n,
                    Duration::from_millis(u64::from(ago)),
                )),
                _ => Err(StoreError::Shape(format!("{row:?} for a row"))),
            },
            _ => Err(StoreError::Shape(format!("{row:?} for a row"))),
        })
        .collect()
}

/// Counts the failures that arrive, a batch at a time (every failure that arrived while the
/// call before was out), until none is left.
async fn send_failures(store: Arc<Store>) {
    loop {
        let mut batch = {
            let mut pending = store.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.failures.is_empty() {
                pending.sending_failures = false;
                return;
            }
            let n = pending.failures.len().min(MAX_BATCH);
            pending.failures.drain(..n).collect::<Vec<_>>()
        };
        let Some((conn, _)) = store.up() else {
            // Dropped: each waiting failure is throttled locally.
            continue;
        };
        let n = batch.len() as u64;
        let counted = store
            .call_n(conn, store.settings.timeout, n, async |mut conn| {
                store.count_failures(&mut conn, &batch).await
            })
            .await;
        if let Ok(counted) = counted {
            let mut foreign = 0;
            for (failure, counted) in batch.drain(..).zip(counted) {
                foreign += u64::from(counted.is_none());
                let _ = failure.reply.send(counted);
            }
            if foreign > 0 {
                store.counts.calls_n("foreign", foreign);
                store.log_foreign(&StoreError::NotOurs {
                    key: format!("{{{}}}:...", store.settings.prefix),
                });
            }
        }
    }
}

/// Sends the successes that arrive, in batches, until none is left. Each batch gathers
/// for [`GATHER`] first: under load that makes one round trip of hundreds of successes.
async fn flush_successes(store: Arc<Store>) {
    loop {
        tokio::time::sleep(GATHER).await;
        let batch = {
            let mut pending = store.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.successes.is_empty() {
                pending.flushing = false;
                return;
            }
            std::mem::take(&mut pending.successes)
        };
        let Some((conn, _)) = store.up() else {
            continue;
        };
        let deadline = store.settings.timeout.max(LIST_TIMEOUT);
        let _ = store
            .call(conn, deadline, async |mut conn| {
                store.send_successes(&mut conn, &batch).await
            })
            .await;
    }
}

/// Milliseconds since the epoch, by this host's clock (the daemons sharing a store keep
/// theirs in step: NTP).
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reconnects until connected, backing off; stops when the store is gone (a reload
/// replaced it).
async fn reconnect(weak: Weak<Store>) {
    let mut wait = RECONNECT_FIRST;
    let mut first = true;
    loop {
        let Some(store) = weak.upgrade() else { return };
        match store.connect().await {
            Ok((conn, key)) => {
                *store.state() = State::Up {
                    conn,
                    key: Arc::new(key),
                };
                store.counts.up.set(1);
                store
                    .ever_up
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    "the throttle store {} is up: the throttle is shared",
                    store.settings.url
                );
                return;
            }
            // An outage was logged when the store went down; a store never reached is
            // logged here, once.
            Err(e) => {
                if first && !store.ever_up.load(std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        "{e}: throttling locally until the store {} is reachable",
                        store.settings.url
                    );
                }
                first = false;
            }
        }
        drop(store);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}

/// Connects once and agrees on the key, within [`CONNECT_TIMEOUT`].
async fn connect(settings: &StoreSettings) -> Result<(Conn, Zeroizing<[u8; 32]>), StoreError> {
    let work = async {
        let mut conn = open(settings).await?;
        let name = format!("{{{}}}:key", settings.prefix);
        let key = agree_on_key(&mut conn, &name).await?;
        Ok((conn, key))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .unwrap_or(Err(StoreError::Timeout(CONNECT_TIMEOUT)))
}

/// Connects to the store once, as a daemon would, and lets the connection go: what
/// `--check-config` reports.
pub(crate) async fn check_store(settings: &StoreSettings) -> Result<(), StoreError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    connect(settings).await.map(drop)
}

/// Opens a connection as the URL says.
async fn open(settings: &StoreSettings) -> Result<Conn, StoreError> {
    let certificates = match &settings.ca {
        None => None,
        Some(path) => Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(path).map_err(|e| StoreError::Ca {
                path: path.display().to_string(),
                why: e.to_string(),
            })?),
        }),
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    match &settings.url.target {
        Target::Single { url } => {
            let client = match certificates {
                Some(certs) if url.starts_with("rediss") || url.starts_with("valkeys") => {
                    redis::Client::build_with_tls(url.as_str(), certs)?
                }
                _ => redis::Client::open(url.as_str())?,
            };
            Ok(Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ))
        }
        Target::Cluster { tls, nodes, login } => {
            let urls = nodes.iter().map(|(host, port)| node_url(*tls, host, *port));
            let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(CONNECT_TIMEOUT);
            if let Some(user) = &login.user {
                builder = builder.username(user);
            }
            if let Some(password) = &login.password {
                builder = builder.password(password);
            }
            if *tls {
                builder = builder.tls(redis::TlsMode::Secure);
            }
            if let Some(certs) = certificates {
                builder = builder.certs(certs);
            }
            Ok(Conn::Cluster(
                builder.build()?.get_async_connection().await?,
            ))
        }
        Target::Sentinel {
            tls,
            sentinels,
            master,
            db,
            login,
        } => {
            let addrs = sentinels
                .iter()
                .map(|(host, port)| redis::ConnectionAddr::Tcp(host.clone(), *port));
            let mut builder = redis::sentinel::SentinelClientBuilder::new(
                addrs,
                master.clone(),
                redis::sentinel::SentinelServerType::Master,
            )?
            .set_client_to_redis_db(*db);
            let Login { user, password } = login;
            if let Some(user) = user {
                builder = builder.set_client_to_redis_username(user);
            }
            if let Some(password) = password {
                builder = builder.set_client_to_redis_password(password);
            }
            if *tls {
                builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            }
            if let Some(certs) = certificates {
                builder = builder.set_client_to_redis_certificates(certs);
            }
            let mut client = builder.build()?;
            Ok(Conn::Single(
                client.get_async_connection_with_config(&config).await?,
            ))
        }
    }
}

fn node_url(tls: bool, host: &str, port: u16) -> String {
    let scheme = if tls { "rediss" } else { "redis" };
    if host.contains(':') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// `SET {PREFIX}:key <ours> NX`, then reads it back: the key every daemon sharing the store
/// uses. A value that is not ours is another application's.
async fn agree_on_key(conn: &mut Conn, name: &str) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mine: [u8; 32] = crate::secret::random_bytes();
    let offer = Zeroizing::new(format!("{KEY_MARK}{}", hex::encode(mine)));
    let (_, value): ((), Option<Vec<u8>>) = redis::pipe()
        .cmd("SET")
        .arg(name)
        .arg(offer.as_str())
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(name)
        .query_async(conn)
        .await
        .map(|v: (Option<Vec<u8>>,)| ((), v.0))
        .map_err(|e| match e.code() {
            Some("WRONGTYPE") => StoreError::NotOurs {
                key: name.to_owned(),
            },
            _ => StoreError::Redis(e),
        })?;
    let value = Zeroizing::new(value.unwrap_or_default());
    let not_ours = || StoreError::NotOurs {
        key: name.to_owned(),
    };
    let hex_text = value
        .strip_prefix(KEY_MARK.as_bytes())
        .ok_or_else(not_ours)?;
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_text, &mut key[..]).map_err(|_| not_ours())?;
    Ok(key)
}
