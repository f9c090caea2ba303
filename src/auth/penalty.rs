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
//! - `failure_delay` 0 turns all of it off (tests).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::bounded::BoundedMap;

/// Every reply, whatever the delays, comes within this.
pub(crate) const MAX_REPLY: Duration = Duration::from_millis(4500);

/// Doubling stops here (2 s × 2^3 is already past the cap).
const MAX_STEPS: u32 = 3;

/// Peers remembered at most (about 100 bytes each).
const MAX_PEERS: usize = 1 << 17;

/// Peers idle this long are forgotten.
const PEER_TTL: Duration = Duration::from_secs(600);

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

#[derive(Clone, Copy)]
struct PeerState {
    steps: u32,
    last_attempt: u64,
}

/// The throttle.
pub(crate) struct Penalty {
    failure_delay: Duration,
    /// Shared with the throttle that replaces this one on a reload, so that a reload does
    /// not forgive anybody.
    peers: Arc<Mutex<BoundedMap<PeerKey, PeerState>>>,
}

impl std::fmt::Debug for Penalty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Penalty")
            .field("failure_delay", &self.failure_delay)
            .finish()
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

impl Penalty {
    /// A throttle with the given base delay (0 disables it).
    pub(crate) fn new(failure_delay: Duration) -> Penalty {
        Penalty {
            failure_delay,
            peers: Arc::new(Mutex::new(BoundedMap::new(MAX_PEERS, PEER_TTL))),
        }
    }

    /// A throttle with a new base delay over the same peers' state (a reload).
    pub(crate) fn carried(&self, failure_delay: Duration) -> Penalty {
        Penalty {
            failure_delay,
            peers: Arc::clone(&self.peers),
        }
    }

    /// Whether failures are delayed at all.
    pub(crate) fn enabled(&self) -> bool {
        !self.failure_delay.is_zero()
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, BoundedMap<PeerKey, PeerState>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failure and returns how long to wait before answering, given that the
    /// request has already taken `elapsed`. `jitter` is a random value; the delay is scaled
    /// by 0.8 + 0.4 × (jitter / u64::MAX).
    pub(crate) fn on_failure(
        &self,
        peer: Option<PeerKey>,
        attempt: u64,
        elapsed: Duration,
        now: Instant,
        jitter: u64,
    ) -> Duration {
        if !self.enabled() {
            return Duration::ZERO;
        }
        let steps = match peer {
            None => 0,
            Some(peer) => {
                let mut peers = self.peers();
                let state = peers.get(&peer, now).copied().unwrap_or(PeerState {
                    steps: 0,
                    last_attempt: 0,
                });
                let steps = if state.last_attempt != attempt {
                    (state.steps + 1).min(MAX_STEPS)
                } else {
                    state.steps
                };
                peers.insert(
                    peer,
                    PeerState {
                        steps,
                        last_attempt: attempt,
                    },
                    now,
                );
                state.steps
            }
        };
        let base = self.failure_delay.saturating_mul(1 << steps);
        let factor = 0.8 + 0.4 * (jitter as f64 / u64::MAX as f64);
        let delay = base.mul_f64(factor);
        delay.min(MAX_REPLY.saturating_sub(elapsed))
    }

    /// The peers being delayed now: each with its step (the delay doubles per step) and how
    /// long ago its last failure was.
    pub(crate) fn peers_list(&self, now: Instant) -> Vec<(IpAddr, u32, Duration)> {
        let peers = self.peers();
        let mut list: Vec<(IpAddr, u32, Duration)> = peers
            .live_entries(now)
            .into_iter()
            .map(|(peer, state, ago)| (peer.0, state.steps, ago))
            .collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        list
    }

    /// Forgets `ip`'s failures (its /48 for IPv6): whether it had any.
    pub(crate) fn reset(&self, ip: IpAddr) -> bool {
        self.peers().remove(&PeerKey::of(ip)).is_some()
    }

    /// A success: the peer starts afresh.
    pub(crate) fn on_success(&self, peer: Option<PeerKey>) {
        if let (true, Some(peer)) = (self.enabled(), peer) {
            self.peers().remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Peer;

    const MID: u64 = u64::MAX / 2; // jitter factor 1.0

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
        let p = Penalty::new(Duration::from_secs(2));
        let t = Instant::now();
        let peer = key("192.0.2.7");
        let a = |n: u8| u64::from(n);
        let delays: Vec<u128> = (1..=5)
            .map(|i| ms(p.on_failure(peer, a(i), Duration::ZERO, t, MID)))
            .collect();
        assert_eq!(delays, [2000, 4000, 4500, 4500, 4500]);
        // A success resets the peer.
        p.on_success(peer);
        assert_eq!(ms(p.on_failure(peer, a(1), Duration::ZERO, t, MID)), 2000);
        // The same wrong password again does not raise the delay.
        assert_eq!(ms(p.on_failure(peer, a(1), Duration::ZERO, t, MID)), 4000);
        assert_eq!(ms(p.on_failure(peer, a(1), Duration::ZERO, t, MID)), 4000);
        assert_eq!(ms(p.on_failure(peer, a(2), Duration::ZERO, t, MID)), 4000);
        assert_eq!(ms(p.on_failure(peer, a(3), Duration::ZERO, t, MID)), 4500);
        // Another peer is not affected; an unknown peer gets the base delay only.
        let other = key("198.51.100.1");
        assert_eq!(ms(p.on_failure(other, a(9), Duration::ZERO, t, MID)), 2000);
        for i in 0..5 {
            assert_eq!(ms(p.on_failure(None, a(i), Duration::ZERO, t, MID)), 2000);
        }
        // Idle peers start afresh.
        let later = t + PEER_TTL;
        assert_eq!(
            ms(p.on_failure(peer, a(7), Duration::ZERO, later, MID)),
            2000
        );
    }

    #[test]
    fn existing_peers_keep_their_state_when_100000_new_addresses_arrive() {
        let p = Penalty::new(Duration::from_secs(2));
        let t = Instant::now();
        let peer = key("192.0.2.7");
        assert_eq!(ms(p.on_failure(peer, 1, Duration::ZERO, t, MID)), 2000);
        assert_eq!(ms(p.on_failure(peer, 2, Duration::ZERO, t, MID)), 4000);
        // One client, 100,000 addresses (one failure each): before, the table was cleared
        // at 65,536 peers, and everyone's penalty with it.
        for i in 0..100_000u32 {
            let flood = PeerKey::of(IpAddr::V4((0x0a00_0000 + i).into()));
            p.on_failure(Some(flood), 1, Duration::ZERO, t, MID);
        }
        assert_eq!(
            ms(p.on_failure(peer, 3, Duration::ZERO, t, MID)),
            4500,
            "the peer is still at its third step"
        );
    }

    #[test]
    fn the_cap_counts_time_already_spent() {
        let p = Penalty::new(Duration::from_secs(2));
        let t = Instant::now();
        let d = p.on_failure(None, 1, Duration::from_millis(3500), t, MID);
        assert_eq!(ms(d), 1000);
        let d = p.on_failure(None, 1, Duration::from_secs(6), t, MID);
        assert_eq!(d, Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = Penalty::new(Duration::from_secs(2));
        let t = Instant::now();
        assert_eq!(ms(p.on_failure(None, 1, Duration::ZERO, t, 0)), 1600);
        assert_eq!(ms(p.on_failure(None, 1, Duration::ZERO, t, u64::MAX)), 2400);
    }

    #[test]
    fn zero_disables_everything() {
        let p = Penalty::new(Duration::ZERO);
        let peer = key("192.0.2.7");
        for i in 0..5 {
            assert_eq!(
                p.on_failure(peer, i, Duration::ZERO, Instant::now(), MID),
                Duration::ZERO
            );
        }
    }
}
