//! Failure delay and per-peer throttling, after Dovecot's `auth-penalty` but capped for
//! Postfix: Postfix waits 10 s for a reply, so every reply, delay included, must come within
//! [`MAX_REPLY`] (Dovecot's own 15 s penalty breaks Postfix).
//!
//! - A failed check is answered after `failure_delay` (default 2 s), with ±20% jitter so the
//!   delay says nothing about why it failed.
//! - A peer whose address is known (Cyrus master's 5th field, Dovecot's `rip=`) doubles the
//!   delay with each further failure: 2 s, 4 s, then the cap. An IPv6 peer is keyed by its
//!   /48, as Dovecot does, so one host cannot dodge by rotating addresses.
//! - The same wrong password again (a misconfigured client retrying) does not raise it.
//! - A success resets the peer. Internal errors are never delayed.
//! - Peers are remembered for [`PEER_TTL`] after their last failure, [`MAX_PEERS`] at most;
//!   beyond that the longest idle make room, one at a time, so a client with many addresses
//!   cannot reset everyone's penalty.
//! - The delay is a sleep in the request's own task: it never blocks other requests.
//! - A guard per user as well as per address: a user's distinct wrong passwords are counted
//!   (by fingerprint) whatever address they come from; past `user_guard_threshold` of them
//!   within `user_guard_window`, each further failure for that user gets the growing delay
//!   too (one step per guess past the threshold). It delays failures only, so it is never a
//!   lock-out: the user's right password is answered at once. A success from the user's usual
//!   address (that of their last success) forgets the guesses.
//! - With `throttle_store`, several daemons share these counts in Redis or Valkey
//!   ([`store`]). Each keeps its own as well: a failure waits what the store's counts say
//!   when it answers in time (they hold every daemon's failures and successes), and what the
//!   daemon's own say when it does not, so a store that is down or slow only makes the
//!   throttle local again.
//! - `failure_delay` 0 turns all of it off (tests).

// A build without the store (the fuzz targets') keeps the fields and counters the store
// would use; they are simply never read there.
#![cfg_attr(not(feature = "throttle-store"), allow(dead_code, unused_variables))]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::bounded::BoundedMap;
use crate::metrics::StoreCounts;

pub(crate) mod settings;
#[cfg(feature = "throttle-store")]
pub(crate) mod store;

pub use settings::{StoreError, StoreSettings, StoreUrl, StoreUrlError, DEFAULT_PREFIX};

/// Connects to the store once, as a daemon would, and lets the connection go: what
/// `--check-config` reports.
pub async fn check_store(settings: &StoreSettings) -> Result<(), StoreError> {
    #[cfg(feature = "throttle-store")]
    return store::check_store(settings).await;
    #[cfg(not(feature = "throttle-store"))]
    {
        let _ = settings;
        Err(StoreUrlError::NotBuilt.into())
    }
}

/// Every reply, whatever the delays, comes within this.
pub(crate) const MAX_REPLY: Duration = Duration::from_millis(4500);

/// Doubling stops here (2 s × 2^3 is already past the cap).
pub(crate) const MAX_STEPS: u32 = 3;

/// Peers remembered at most (about 100 bytes each).
const MAX_PEERS: usize = 1 << 17;

/// Users remembered at most by the guard (a few hundred bytes each).
const MAX_USERS: usize = 1 << 16;

/// Peers idle this long are forgotten.
pub(crate) const PEER_TTL: Duration = Duration::from_secs(600);

/// A user's usual address is remembered this long after their last success or failure.
const USER_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default `user_guard_threshold`.
pub const DEFAULT_USER_THRESHOLD: u32 = 10;
/// The default `user_guard_window`.
pub const DEFAULT_USER_WINDOW: Duration = Duration::from_secs(3600);

/// How the throttle is set: its base delay, the user guard, and where its state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// The base failure delay (0 = no throttle at all).
    pub failure_delay: Duration,
    /// Distinct wrong passwords per user, in the window, before the user's failures are
    /// delayed as well (0 = no user guard).
    pub user_threshold: u32,
    /// The user guard's window.
    pub user_window: Duration,
    /// The shared store, if any.
    pub store: Option<StoreSettings>,
}

impl Throttle {
    /// Only a base delay: the user guard at its defaults, no shared store.
    pub fn local(failure_delay: Duration) -> Throttle {
        Throttle {
            failure_delay,
            user_threshold: DEFAULT_USER_THRESHOLD,
            user_window: DEFAULT_USER_WINDOW,
            store: None,
        }
    }
}

/// A peer's key: an IPv4 address, or an IPv6 /48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PeerKey(IpAddr);

impl PeerKey {
    /// The key of an address.
    pub(crate) fn of(ip: IpAddr) -> PeerKey {
        PeerKey(match ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => {
                let mut seg = v6.segments();
                seg[3..].fill(0);
                IpAddr::V6(seg.into())
            }
        })
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Clone, Copy)]
struct PeerState {
    steps: u32,
    last_attempt: u64,
}

/// A user's wrong guesses (fingerprint, when) within the window, and their usual address.
#[derive(Clone, Default)]
struct UserState {
    guesses: Vec<(u64, Instant)>,
    home: Option<Option<PeerKey>>,
}

/// The state every reload carries over.
struct Local {
    peers: Mutex<BoundedMap<PeerKey, PeerState>>,
    users: Mutex<BoundedMap<Vec<u8>, UserState>>,
}

/// The throttle.
pub(crate) struct Penalty {
    failure_delay: Duration,
    user_threshold: u32,
    user_window: Duration,
    /// Shared with the throttle that replaces this one on a reload, so that a reload does
    /// not forgive anybody.
    local: Arc<Local>,
    #[cfg(feature = "throttle-store")]
    store: Option<Arc<store::Store>>,
}

impl std::fmt::Debug for Penalty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Penalty")
            .field("failure_delay", &self.failure_delay)
            .finish_non_exhaustive()
    }
}

/// A fingerprint of (user, password), to tell a retry of the same wrong password from a new
/// guess. Salted with a per-process key; never stored beside anything reversible.
pub(crate) fn attempt_fingerprint(key: &[u8; 32], user: &[u8], password: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(key);
    h.update((user.len() as u64).to_be_bytes());
    h.update(user);
    h.update(password);
    let digest = h.finalize();
    u64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

/// One attempt's fingerprints: the process's own, and (while the store is up) 32 bits of
/// one under the key the daemons sharing the store agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    local: u64,
    shared: Option<u32>,
}

impl Attempt {
    /// A failure with no password to fingerprint (a mechanism's digest or proof): every
    /// such failure of a peer counts as the same attempt.
    pub(crate) const NONE: Attempt = Attempt {
        local: u64::MAX,
        shared: Some(u32::MAX),
    };

    /// What a throttle that is off (no failure delay) does not count.
    pub(crate) const UNCOUNTED: Attempt = Attempt {
        local: 0,
        shared: None,
    };
}

/// The delay for `steps`, scaled by 0.8 + 0.4 × (jitter / u64::MAX), within the cap less
/// `elapsed`.
fn delay_for(base: Duration, steps: u32, jitter: u64, elapsed: Duration) -> Duration {
    let factor = 0.8 + 0.4 * (jitter as f64 / u64::MAX as f64);
    let delay = base
        .saturating_mul(1 << steps.min(MAX_STEPS))
        .mul_f64(factor);
    delay.min(MAX_REPLY.saturating_sub(elapsed))
}

/// What the store counted for one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counted {
    /// The address's step before this failure.
    pub(crate) peer_steps: u32,
    /// The user's distinct wrong passwords in the window, this one included.
    pub(crate) guesses: u32,
}

/// A failure still to count in the shared store; what it answers can only lengthen the
/// local delay.
pub(crate) struct SharedFailure {
    #[cfg(feature = "throttle-store")]
    store: Arc<store::Store>,
    peer: Option<PeerKey>,
    user: Option<Vec<u8>>,
    attempt: u32,
    wait: Wait,
}

/// What a failure's delay is made of, whatever the store answers.
#[derive(Debug, Clone, Copy)]
struct Wait {
    base: Duration,
    user_threshold: u32,
    jitter: u64,
    /// The delay this daemon decided alone.
    local_delay: Duration,
    /// What the request had taken before the store was asked.
    elapsed: Duration,
}

impl SharedFailure {
    /// The delay still to wait, less the time the store took: the shared one when the store
    /// answered (it has every daemon's failures and successes), else the local one.
    pub(crate) async fn delay(self) -> Duration {
        #[cfg(not(feature = "throttle-store"))]
        let counted: Option<Counted> = None;
        let asked = Instant::now();
        #[cfg(feature = "throttle-store")]
        let counted = self
            .store
            .failed(self.peer, self.user.as_deref(), self.attempt)
            .await;
        self.wait.still_to_wait(counted, asked.elapsed())
    }
}

impl Wait {
    /// The delay left once the store has taken `spent` to answer `counted` (`None`: it did
    /// not). The store's time is part of the wait: a failure is told its delay after it was
    /// known, not that delay after the store answered.
    fn still_to_wait(&self, counted: Option<Counted>, spent: Duration) -> Duration {
        let delay = match counted {
            None => self.local_delay,
            Some(counted) => {
                let steps = counted
                    .peer_steps
                    .max(user_steps(counted.guesses, self.user_threshold));
                delay_for(self.base, steps, self.jitter, self.elapsed + spent)
            }
        };
        delay.saturating_sub(spent)
    }
}

/// The steps a user's guesses add: one per guess past the threshold.
fn user_steps(guesses: u32, threshold: u32) -> u32 {
    if threshold == 0 {
        return 0;
    }
    guesses.saturating_sub(threshold).min(MAX_STEPS)
}

/// The throttled addresses and users, for `penalty list`.
#[derive(Debug, Default)]
pub struct PenaltyList {
    /// Address (an IPv6 /48 as its first address), step, time since the last failure.
    pub peers: Vec<(String, u32, Duration)>,
    /// User, distinct wrong passwords in the window, time since the last.
    pub users: Vec<(String, u32, Duration)>,
    /// The user guard's threshold.
    pub user_threshold: u32,
    /// The user guard's window.
    pub user_window: Duration,
    /// Where the lists come from: "this daemon" or the store.
    pub source: String,
}

impl Penalty {
    /// A throttle as `settings` says, counting its store's calls in `counts`.
    pub(crate) fn new(settings: &Throttle, counts: StoreCounts) -> Penalty {
        Penalty {
            failure_delay: settings.failure_delay,
            user_threshold: settings.user_threshold,
            user_window: settings.user_window,
            local: Arc::new(Local {
                peers: Mutex::new(BoundedMap::new(MAX_PEERS, PEER_TTL)),
                users: Mutex::new(BoundedMap::new(MAX_USERS, USER_TTL)),
            }),
            #[cfg(feature = "throttle-store")]
            store: settings.store.clone().map(|store| {
                let guard = (PEER_TTL, settings.user_window, settings.user_threshold);
                store::Store::new(store, guard, counts)
            }),
        }
    }

    /// A throttle with new settings over the same state (a reload): the same store
    /// connection when the store's settings did not change.
    pub(crate) fn carried(&self, settings: &Throttle, counts: StoreCounts) -> Penalty {
        #[cfg(feature = "throttle-store")]
        let (window, threshold) = (settings.user_window, settings.user_threshold);
        #[cfg(feature = "throttle-store")]
        let store = match (&self.store, &settings.store) {
            (Some(store), Some(next)) if store.serves(next, window, threshold) => {
                Some(Arc::clone(store))
            }
            (_, next) => next
                .clone()
                .map(|next| store::Store::new(next, (PEER_TTL, window, threshold), counts)),
        };
        Penalty {
            failure_delay: settings.failure_delay,
            user_threshold: settings.user_threshold,
            user_window: settings.user_window,
            local: Arc::clone(&self.local),
            #[cfg(feature = "throttle-store")]
            store,
        }
    }

    /// Whether failures are delayed at all.
    pub(crate) fn enabled(&self) -> bool {
        !self.failure_delay.is_zero()
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, BoundedMap<PeerKey, PeerState>> {
        self.local.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn users(&self) -> std::sync::MutexGuard<'_, BoundedMap<Vec<u8>, UserState>> {
        self.local.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fingerprints of `user`'s attempt with `password`.
    pub(crate) fn attempt(&self, secret: &[u8; 32], user: &[u8], password: &[u8]) -> Attempt {
        if !self.enabled() {
            return Attempt::UNCOUNTED;
        }
        #[cfg(feature = "throttle-store")]
        let shared = self
            .store
            .as_ref()
            .and_then(|store| store.key())
            .map(|key| (attempt_fingerprint(&key, user, password) >> 32) as u32);
        #[cfg(not(feature = "throttle-store"))]
        let shared = None;
        Attempt {
            local: attempt_fingerprint(secret, user, password),
            shared,
        }
    }

    /// Records a failure of `user` (when named) from `peer` (when known) and returns how
    /// long to wait before answering, given that the request has already taken `elapsed`,
    /// with the call to the shared store still to make (if any). `jitter` is a random
    /// value; the delay is scaled by 0.8 + 0.4 × (jitter / u64::MAX).
    pub(crate) fn on_failure(
        &self,
        peer: Option<PeerKey>,
        user: Option<&[u8]>,
        attempt: Attempt,
        elapsed: Duration,
        now: Instant,
        jitter: u64,
    ) -> (Duration, Option<SharedFailure>) {
        if !self.enabled() {
            return (Duration::ZERO, None);
        }
        let peer_steps = match peer {
            None => 0,
            Some(peer) => {
                let mut peers = self.peers();
                let state = peers.get(&peer, now).copied().unwrap_or(PeerState {
                    steps: 0,
                    last_attempt: 0,
                });
                let steps = if state.last_attempt != attempt.local {
                    (state.steps + 1).min(MAX_STEPS)
                } else {
                    state.steps
                };
                peers.insert(
                    peer,
                    PeerState {
                        steps,
                        last_attempt: attempt.local,
                    },
                    now,
                );
                state.steps
            }
        };
        let guesses = match user {
            Some(user) if self.user_threshold > 0 => self.guessed(user, attempt.local, now),
            _ => 0,
        };
        let steps = peer_steps.max(user_steps(guesses, self.user_threshold));
        let delay = delay_for(self.failure_delay, steps, jitter, elapsed);
        #[cfg(not(feature = "throttle-store"))]
        let shared = None;
        #[cfg(feature = "throttle-store")]
        let shared = match (&self.store, attempt.shared) {
            (Some(store), Some(shared)) => Some(SharedFailure {
                store: Arc::clone(store),
                peer,
                user: user.filter(|_| self.user_threshold > 0).map(<[u8]>::to_vec),
                attempt: shared,
                wait: Wait {
                    base: self.failure_delay,
                    user_threshold: self.user_threshold,
                    jitter,
                    local_delay: delay,
                    elapsed,
                },
            }),
            _ => None,
        };
        (delay, shared)
    }

    /// Counts `user`'s wrong guess `attempt`: their distinct guesses within the window.
    fn guessed(&self, user: &[u8], attempt: u64, now: Instant) -> u32 {
        let mut users = self.users();
        let mut state = users.get(&user.to_vec(), now).cloned().unwrap_or_default();
        let window = self.user_window;
        state
            .guesses
            .retain(|(fp, at)| now.saturating_duration_since(*at) < window && *fp != attempt);
        state.guesses.push((attempt, now));
        let keep = (self.user_threshold + MAX_STEPS) as usize;
        if state.guesses.len() > keep {
            state.guesses.drain(..state.guesses.len() - keep);
        }
        let guesses = u32::try_from(state.guesses.len()).unwrap_or(u32::MAX);
        users.insert(user.to_vec(), state, now);
        guesses
    }

    /// The peers and users being delayed now, from this daemon's memory.
    pub(crate) fn local_list(&self, now: Instant) -> PenaltyList {
        let mut peers: Vec<(String, u32, Duration)> = self
            .peers()
            .live_entries(now)
            .into_iter()
            .map(|(peer, state, ago)| (peer.to_string(), state.steps, ago))
            .collect();
        peers.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        let window = self.user_window;
        let mut users: Vec<(String, u32, Duration)> = self
            .users()
            .live_entries(now)
            .into_iter()
            .filter_map(|(user, state, _)| {
                let live = state
                    .guesses
                    .iter()
                    .filter(|(_, at)| now.saturating_duration_since(*at) < window);
                let count = u32::try_from(live.clone().count()).unwrap_or(u32::MAX);
                let last = live
                    .map(|(_, at)| now.saturating_duration_since(*at))
                    .min()?;
                Some((String::from_utf8_lossy(user).into_owned(), count, last))
            })
            .collect();
        users.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        PenaltyList {
            peers,
            users,
            user_threshold: self.user_threshold,
            user_window: self.user_window,
            source: "this daemon".into(),
        }
    }

    /// The list from the shared store when there is one (this daemon's own when the store
    /// is down, saying so), else this daemon's.
    pub(crate) async fn list(&self) -> PenaltyList {
        let local = self.local_list(Instant::now());
        #[cfg(feature = "throttle-store")]
        if let Some(store) = &self.store {
            return match store.list(PEER_TTL, self.user_window, 1000).await {
                Ok((mut peers, mut users)) => {
                    peers.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
                    users.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
                    PenaltyList {
                        peers,
                        users,
                        source: format!("the store {}", store.settings().url),
                        ..local
                    }
                }
                Err(e) => PenaltyList {
                    source: format!("this daemon ({e})"),
                    ..local
                },
            };
        }
        local
    }

    /// Forgets an address's failures (its /48 for IPv6), or a user's guesses, here and in
    /// the store: whether there were any. An error when the store cannot be reached.
    pub(crate) async fn reset(&self, who: Result<IpAddr, &[u8]>) -> Result<bool, StoreError> {
        let here = match who {
            Ok(ip) => self.peers().remove(&PeerKey::of(ip)).is_some(),
            Err(user) => self.users().remove(&user.to_vec()).is_some(),
        };
        // (Both, always: the store's state is not this daemon's.)
        #[cfg(feature = "throttle-store")]
        if let Some(store) = &self.store {
            let there = store.reset(who.map(PeerKey::of)).await?;
            return Ok(here || there);
        }
        Ok(here)
    }

    /// A success: the peer starts afresh, and so does the user when this is their usual
    /// address; this address becomes their usual one.
    pub(crate) fn on_success(&self, peer: Option<PeerKey>, user: Option<&[u8]>) {
        if !self.enabled() {
            return;
        }
        if let Some(peer) = peer {
            self.peers().remove(&peer);
        }
        if let Some(user) = user.filter(|_| self.user_threshold > 0) {
            let now = Instant::now();
            let mut users = self.users();
            let mut state = users.get(&user.to_vec(), now).cloned().unwrap_or_default();
            if state.home == Some(peer) {
                state.guesses.clear();
            }
            state.home = Some(peer);
            users.insert(user.to_vec(), state, now);
        }
        #[cfg(feature = "throttle-store")]
        if let Some(store) = &self.store {
            store.succeeded(peer, user.filter(|_| self.user_threshold > 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Peer;

    const MID: u64 = u64::MAX / 2; // jitter factor 1.0

    fn throttle(failure_delay: Duration) -> Penalty {
        Penalty::new(&Throttle::local(failure_delay), StoreCounts::default())
    }

    fn att(n: u64) -> Attempt {
        Attempt {
            local: n,
            shared: None,
        }
    }

    /// The local delay for a failure from `peer` (no user named).
    fn fail(
        p: &Penalty,
        peer: Option<PeerKey>,
        n: u64,
        elapsed: Duration,
        now: Instant,
        jitter: u64,
    ) -> Duration {
        p.on_failure(peer, None, att(n), elapsed, now, jitter).0
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    fn key(s: &str) -> Option<PeerKey> {
        Peer::new(Some(s.as_bytes().to_vec())).ip().map(PeerKey::of)
    }

    #[test]
    fn peer_keys() {
        let k = key;
        assert_eq!(k("192.0.2.7;54321"), k("192.0.2.7"));
        assert_eq!(k("192.0.2.7:25"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
        assert_eq!(
            k("2001:db8:1:2::1;25"),
            k("[2001:db8:1:ffff::9]:25"),
            "same /48"
        );
        assert_ne!(k("2001:db8:1::1"), k("2001:db8:2::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_eq!(k(""), None);
        assert_eq!(k("not an address"), None);
    }

    #[test]
    fn doubling_cap_reset_and_repeats() {
        let p = throttle(Duration::from_secs(2));
        let t = Instant::now();
        let peer = key("192.0.2.7");
        let a = |n: u8| u64::from(n);
        let delays: Vec<u128> = (1..=5)
            .map(|i| ms(fail(&p, peer, a(i), Duration::ZERO, t, MID)))
            .collect();
        assert_eq!(delays, [2000, 4000, 4500, 4500, 4500]);
        // A success resets the peer.
        p.on_success(peer, None);
        assert_eq!(ms(fail(&p, peer, a(1), Duration::ZERO, t, MID)), 2000);
        // The same wrong password again does not raise the delay.
        assert_eq!(ms(fail(&p, peer, a(1), Duration::ZERO, t, MID)), 4000);
        assert_eq!(ms(fail(&p, peer, a(1), Duration::ZERO, t, MID)), 4000);
        assert_eq!(ms(fail(&p, peer, a(2), Duration::ZERO, t, MID)), 4000);
        assert_eq!(ms(fail(&p, peer, a(3), Duration::ZERO, t, MID)), 4500);
        // Another peer is not affected; an unknown peer gets the base delay only.
        let other = key("198.51.100.1");
        assert_eq!(ms(fail(&p, other, a(9), Duration::ZERO, t, MID)), 2000);
        for i in 0..5 {
            assert_eq!(ms(fail(&p, None, a(i), Duration::ZERO, t, MID)), 2000);
        }
        // Idle peers start afresh.
        let later = t + PEER_TTL;
        assert_eq!(ms(fail(&p, peer, a(7), Duration::ZERO, later, MID)), 2000);
    }

    #[test]
    fn existing_peers_keep_their_state_when_100000_new_addresses_arrive() {
        let p = throttle(Duration::from_secs(2));
        let t = Instant::now();
        let peer = key("192.0.2.7");
        assert_eq!(ms(fail(&p, peer, 1, Duration::ZERO, t, MID)), 2000);
        assert_eq!(ms(fail(&p, peer, 2, Duration::ZERO, t, MID)), 4000);
        // One client, 100,000 addresses (one failure each): before, the table was cleared
        // at 65,536 peers, and everyone's penalty with it.
        for i in 0..100_000u32 {
            let flood = PeerKey::of(IpAddr::V4((0x0a00_0000 + i).into()));
            fail(&p, Some(flood), 1, Duration::ZERO, t, MID);
        }
        assert_eq!(
            ms(fail(&p, peer, 3, Duration::ZERO, t, MID)),
            4500,
            "the peer is still at its third step"
        );
    }

    #[test]
    fn the_cap_counts_time_already_spent() {
        let p = throttle(Duration::from_secs(2));
        let t = Instant::now();
        let d = fail(&p, None, 1, Duration::from_millis(3500), t, MID);
        assert_eq!(ms(d), 1000);
        let d = fail(&p, None, 1, Duration::from_secs(6), t, MID);
        assert_eq!(d, Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = throttle(Duration::from_secs(2));
        let t = Instant::now();
        assert_eq!(ms(fail(&p, None, 1, Duration::ZERO, t, 0)), 1600);
        assert_eq!(ms(fail(&p, None, 1, Duration::ZERO, t, u64::MAX)), 2400);
    }

    #[test]
    fn zero_disables_everything() {
        let p = throttle(Duration::ZERO);
        let peer = key("192.0.2.7");
        for i in 0..5 {
            assert_eq!(
                fail(&p, peer, i, Duration::ZERO, Instant::now(), MID),
                Duration::ZERO
            );
        }
    }

    #[test]
    fn the_user_guard_counts_distinct_guesses_from_every_address() {
        let p = throttle(Duration::from_secs(2));
        let t = Instant::now();
        let user: &[u8] = b"alice@example.org";
        // 200 addresses, one guess each: the address rule never slows any of them; past ten
        // distinct guesses the user's failures do.
        let delays: Vec<u128> = (0..200u32)
            .map(|i| {
                let peer = Some(PeerKey::of(IpAddr::V4((0x0a00_0000 + i).into())));
                ms(p.on_failure(
                    peer,
                    Some(user),
                    att(u64::from(i) + 1),
                    Duration::ZERO,
                    t,
                    MID,
                )
                .0)
            })
            .collect();
        assert_eq!(&delays[..10], &[2000; 10]);
        assert_eq!(&delays[10..13], &[4000, 4500, 4500]);
        assert!(delays[13..].iter().all(|d| *d == 4500));
        // Another user is not affected.
        let other = Some(PeerKey::of(IpAddr::V4([192, 0, 2, 1].into())));
        assert_eq!(
            ms(
                p.on_failure(other, Some(&b"bob"[..]), att(5), Duration::ZERO, t, MID)
                    .0
            ),
            2000
        );
        // The same wrong password again (a client with an old password) is not a new guess.
        let q = throttle(Duration::from_secs(2));
        for i in 0..50 {
            let peer = Some(PeerKey::of(IpAddr::V4((0x0a00_0000 + i).into())));
            assert_eq!(
                ms(
                    q.on_failure(peer, Some(user), att(7), Duration::ZERO, t, MID)
                        .0
                ),
                2000
            );
        }
        let list = p.local_list(t);
        assert_eq!(list.users[0].0, "alice@example.org");
        assert_eq!(list.users[0].1, DEFAULT_USER_THRESHOLD + MAX_STEPS);
    }

    #[test]
    fn a_success_from_the_usual_address_forgets_the_guesses() {
        let p = throttle(Duration::from_secs(2));
        let t = Instant::now();
        let user: &[u8] = b"alice";
        let home = key("192.0.2.7");
        let away = key("198.51.100.9");
        p.on_success(home, Some(user));
        let guess = |n: u64| {
            let peer = Some(PeerKey::of(IpAddr::V4((0x0a00_0000 + n as u32).into())));
            ms(
                p.on_failure(peer, Some(user), att(n), Duration::ZERO, t, MID)
                    .0,
            )
        };
        for n in 1..=12 {
            guess(n);
        }
        assert_eq!(guess(13), 4500);
        // A success from elsewhere does not forget them (it becomes the usual address)...
        p.on_success(away, Some(user));
        assert_eq!(guess(14), 4500);
        // ...a success from the usual address does.
        p.on_success(away, Some(user));
        assert_eq!(guess(15), 2000);
        // Off with a threshold of 0.
        let off = Penalty::new(
            &Throttle {
                user_threshold: 0,
                ..Throttle::local(Duration::from_secs(2))
            },
            StoreCounts::default(),
        );
        for n in 0..30 {
            let peer = Some(PeerKey::of(IpAddr::V4((0x0a00_0000 + n as u32).into())));
            assert_eq!(
                ms(off
                    .on_failure(peer, Some(user), att(n), Duration::ZERO, t, MID)
                    .0),
                2000
            );
        }
    }

    #[test]
    fn the_store_s_time_is_part_of_the_wait() {
        let failure = Wait {
            base: Duration::from_millis(100),
            user_threshold: 0,
            jitter: MID,
            local_delay: Duration::from_millis(100),
            elapsed: Duration::ZERO,
        };
        let counted = Counted {
            peer_steps: 1,
            guesses: 0,
        };
        // Step 1: 200 ms, of which the store took 30.
        assert_eq!(
            failure.still_to_wait(Some(counted), Duration::from_millis(30)),
            Duration::from_millis(170)
        );
        // The store did not answer: the local delay, less the time spent asking.
        assert_eq!(
            failure.still_to_wait(None, Duration::from_millis(30)),
            Duration::from_millis(70)
        );
        // A store slower than the delay: nothing more to wait.
        assert_eq!(
            failure.still_to_wait(Some(counted), Duration::from_millis(500)),
            Duration::ZERO
        );
    }
}
