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

use super::url::{Login, StoreUrl, Target};
use super::{PeerKey, MAX_STEPS};
use crate::metrics::StoreCounts;

/// How `throttle_store` is used: where, under which prefix, with which deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Where (`throttle_store`).
    pub url: StoreUrl,
    /// The keys' prefix (`throttle_store_prefix`), without the braces.
    pub prefix: String,
    /// Each call's deadline (`throttle_store_timeout`).
    pub timeout: Duration,
    /// CA certificates (PEM) for `rediss://` (`throttle_store_ca`); the system's otherwise.
    pub ca: Option<std::path::PathBuf>,
}

/// The default `throttle_store_prefix`.
pub const DEFAULT_PREFIX: &str = "saslauthd-rs";

/// What marks `{PREFIX}:key` as ours.
const KEY_MARK: &str = "saslauthd-rs throttle key v1 ";

/// Sorted-set entries kept at most: per user, and in each index.
const MAX_GUESSES: u32 = 64;
const MAX_INDEX: u32 = 100_000;

/// How long a user's usual address is remembered.
const HOME_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Reconnection attempts: the first after this, doubling up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A connection's deadline (connect, authenticate, agree on the key): longer than a call's,
/// as it runs in the background.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

const FAILURE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local kinds = {'hash', 'zset', 'zset', 'zset'}
for i = 1, 4 do
  local ty = redis.call('TYPE', KEYS[i])['ok']
  if ty ~= kinds[i] and ty ~= 'none' then
    return redis.error_reply('FOREIGN ' .. KEYS[i] .. ' is a ' .. ty .. ' saslauthd-rs did not write')
  end
end
local max, ttl, window = tonumber(ARGV[7]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cap, icap = tonumber(ARGV[6]), tonumber(ARGV[8])
local function index(key, member, keep)
  redis.call('ZADD', key, now, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - keep)
  local n = redis.call('ZCARD', key)
  if n > icap then redis.call('ZREMRANGEBYRANK', key, 0, n - icap - 1) end
  redis.call('PEXPIRE', key, keep)
end
local steps = 0
if ARGV[2] ~= '' then
  local v = redis.call('HMGET', KEYS[1], 'steps', 'last')
  steps = math.floor(tonumber(v[1]) or 0)
  if steps < 0 then steps = 0 end
  if steps > max then steps = max end
  local next = steps
  if v[2] ~= ARGV[1] then next = math.min(steps + 1, max) end
  redis.call('HSET', KEYS[1], 'steps', next, 'last', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  index(KEYS[3], ARGV[2], ttl)
end
local guesses = 0
if ARGV[3] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  guesses = redis.call('ZCARD', KEYS[2])
  if guesses > cap then
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, guesses - cap - 1)
    guesses = cap
  end
  redis.call('PEXPIRE', KEYS[2], window)
  index(KEYS[4], ARGV[3], window)
end
return {steps, guesses}
"#;

const SUCCESS: &str = r#"
local kinds = {'hash', 'zset', 'string', 'zset', 'zset'}
for i = 1, 5 do
  local ty = redis.call('TYPE', KEYS[i])['ok']
  if ty ~= kinds[i] and ty ~= 'none' then
    return redis.error_reply('FOREIGN ' .. KEYS[i] .. ' is a ' .. ty .. ' saslauthd-rs did not write')
  end
end
if ARGV[1] ~= '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
end
if ARGV[2] ~= '' then
  local home = redis.call('GET', KEYS[3])
  if home == ARGV[3] then
    redis.call('DEL', KEYS[2])
    redis.call('ZREM', KEYS[5], ARGV[2])
  end
  redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
end
return 1
"#;

const LIST: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, window, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local peers, users = {}, {}
local p = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', now - ttl, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #p, 2 do
  local steps = redis.call('HGET', ARGV[1] .. 'peer:' .. p[i], 'steps')
  if steps then
    peers[#peers + 1] = p[i]
    peers[#peers + 1] = tostring(steps)
    peers[#peers + 1] = tostring(now - tonumber(p[i + 1]))
  end
end
local u = redis.call('ZREVRANGEBYSCORE', KEYS[2], '+inf', now - window, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #u, 2 do
  local n = redis.call('ZCOUNT', ARGV[1] .. 'user:' .. u[i], now - window, '+inf')
  if n > 0 then
    users[#users + 1] = u[i]
    users[#users + 1] = tostring(n)
    users[#users + 1] = tostring(now - tonumber(u[i + 1]))
  end
end
return {peers, users}
"#;

const RESET: &str = r#"
local ty = redis.call('TYPE', KEYS[1])['ok']
if ty ~= ARGV[2] and ty ~= 'none' then
  return redis.error_reply('FOREIGN ' .. KEYS[1] .. ' is a ' .. ty .. ' saslauthd-rs did not write')
end
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
"#;

/// What the store counted for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counted {
    /// The address's step before this failure.
    pub(crate) peer_steps: u32,
    /// The user's distinct wrong passwords in the window, this one included.
    pub(crate) guesses: u32,
}

/// One row of `penalty list`: who, the step or count, how long ago.
pub(crate) type Row = (String, u32, Duration);

/// Why the store gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not connected now (its URL, password hidden).
    #[error("the throttle store {0} is down; throttling locally until it is back")]
    Down(String),
    /// No answer within the deadline.
    #[error("no answer from the throttle store within {0:?}")]
    Timeout(Duration),
    /// The connection or the server failed.
    #[error("the throttle store: {0}")]
    Redis(#[from] redis::RedisError),
    /// A key under the prefix holds another application's value.
    #[error(
        "the throttle store's {key} holds a value saslauthd-rs did not write: another \
         application uses the prefix; set throttle_store_prefix"
    )]
    NotOurs {
        /// The key.
        key: String,
    },
    /// An answer of the wrong shape.
    #[error("the throttle store answered {0}")]
    Shape(String),
    /// `throttle_store_ca` cannot be read.
    #[error("throttle_store_ca {path}: {why}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

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
    state: Mutex<State>,
    counts: StoreCounts,
    failure: redis::Script,
    success: redis::Script,
    list: redis::Script,
    reset: redis::Script,
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
    pub(crate) fn new(settings: StoreSettings, counts: StoreCounts) -> Arc<Store> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        counts.up.set(0);
        let store = Arc::new(Store {
            settings,
            state: Mutex::new(State::Down {
                reconnecting: false,
            }),
            counts,
            failure: redis::Script::new(FAILURE),
            success: redis::Script::new(SUCCESS),
            list: redis::Script::new(LIST),
            reset: redis::Script::new(RESET),
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

    /// Runs `call` on the connection within the deadline; a timeout or a connection error
    /// takes the store down, a foreign value is logged (once a minute) and left alone.
    async fn call<T>(
        self: &Arc<Self>,
        conn: Conn,
        call: impl AsyncFnOnce(Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.settings.timeout, call(conn)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.settings.timeout)),
        };
        match &result {
            Ok(_) => self.counts.calls("ok"),
            Err(StoreError::NotOurs { .. }) | Err(StoreError::Shape(_)) => {
                self.counts.calls("foreign");
                let mut logged = self
                    .foreign_logged
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    *logged = Some(Instant::now());
                    if let Err(e) = &result {
                        tracing::warn!("{e}; this failure is throttled locally");
                    }
                }
            }
            Err(e) => {
                self.counts.calls(if matches!(e, StoreError::Timeout(_)) {
                    "timeout"
                } else {
                    "error"
                });
                self.went_down(e);
            }
        }
        result
    }

    /// Counts a failure: the address's (`peer`, when known) and the user's (`user`, when
    /// known), both under the fingerprint `attempt`. `None` when the store is down or did
    /// not answer in time.
    pub(crate) async fn failed(
        self: &Arc<Self>,
        peer: Option<PeerKey>,
        user: Option<&[u8]>,
        attempt: u32,
        peer_ttl: Duration,
        window: Duration,
    ) -> Option<Counted> {
        let Some((conn, _)) = self.up() else {
            self.counts.calls("skipped");
            return None;
        };
        let peer_member = peer.map(|p| p.to_string()).unwrap_or_default();
        let mut invocation = self.failure.prepare_invoke();
        invocation
            .key(self.key_name("peer:", &peer_member))
            .key(user_key(self, "user:", user.unwrap_or_default()))
            .key(self.key_name("peers", ""))
            .key(self.key_name("users", ""))
            .arg(attempt)
            .arg(&peer_member)
            .arg(user.unwrap_or_default())
            .arg(millis(peer_ttl))
            .arg(millis(window))
            .arg(MAX_GUESSES)
            .arg(MAX_STEPS)
            .arg(MAX_INDEX);
        let counted = self
            .call(conn, async move |mut conn| {
                let reply: redis::Value = invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(foreign_or)?;
                let (steps, guesses) = two_counts(&reply)?;
                Ok(Counted {
                    peer_steps: steps.min(MAX_STEPS),
                    guesses: guesses.min(MAX_GUESSES),
                })
            })
            .await;
        counted.ok()
    }

    /// Forgets the address's failures and, when this is the user's usual address (where
    /// their last success came from), the user's wrong guesses; this address becomes the
    /// usual one. Sent from a task of its own: a success waits for nothing.
    pub(crate) fn succeeded(self: &Arc<Self>, peer: Option<PeerKey>, user: Option<&[u8]>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some((conn, _)) = self.up() else {
            return;
        };
        let peer_member = peer.map(|p| p.to_string()).unwrap_or_default();
        let user = user.map(<[u8]>::to_vec);
        let store = Arc::clone(self);
        runtime.spawn(async move {
            let home = if peer_member.is_empty() {
                "-"
            } else {
                &peer_member
            };
            let mut invocation = store.success.prepare_invoke();
            invocation
                .key(store.key_name("peer:", &peer_member))
                .key(user_key(
                    &store,
                    "user:",
                    user.as_deref().unwrap_or_default(),
                ))
                .key(user_key(
                    &store,
                    "home:",
                    user.as_deref().unwrap_or_default(),
                ))
                .key(store.key_name("peers", ""))
                .key(store.key_name("users", ""))
                .arg(&peer_member)
                .arg(user.as_deref().unwrap_or_default())
                // The usual address of a client that gave none is "-".
                .arg(home)
                .arg(millis(HOME_TTL));
            let _ = store
                .call(conn, async |mut conn| {
                    invocation
                        .invoke_async::<redis::Value>(&mut conn)
                        .await
                        .map(drop)
                        .map_err(foreign_or)
                })
                .await;
        });
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
            .arg(limit);
        self.call(conn, async move |mut conn| {
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
        })
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
        let mut invocation = self.reset.prepare_invoke();
        match who {
            Ok(peer) => invocation
                .key(self.key_name("peer:", &peer.to_string()))
                .key(self.key_name("peers", ""))
                .arg(peer.to_string())
                .arg("hash"),
            Err(user) => invocation
                .key(user_key(self, "user:", user))
                .key(self.key_name("users", ""))
                .arg(user)
                .arg("zset"),
        };
        self.call(conn, async move |mut conn| {
            let n: i64 = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(foreign_or)?;
            Ok(n > 0)
        })
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

fn two_counts(reply: &redis::Value) -> Result<(u32, u32), StoreError> {
    match reply {
        redis::Value::Array(v) if v.len() == 2 => match (count(&v[0]), count(&v[1])) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(StoreError::Shape(format!("{reply:?} to a failure"))),
        },
        other => Err(StoreError::Shape(format!("{other:?} to a failure"))),
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
                tracing::info!(
                    "the throttle store {} is up: the throttle is shared",
                    store.settings.url
                );
                return;
            }
            Err(e) => {
                if first {
                    tracing::warn!(
                        "{e}: throttling locally until the store {} is reachable",
                        store.settings.url
                    );
                    first = false;
                }
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
pub async fn check_store(settings: &StoreSettings) -> Result<(), StoreError> {
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
