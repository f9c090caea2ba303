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
//! - The delay is a sleep in the request's own task: it never blocks other requests.
//! - `failure_delay` 0 turns all of it off (tests).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Every reply, whatever the delays, comes within this.
pub const MAX_REPLY: Duration = Duration::from_millis(4500);

/// Doubling stops here (2 s × 2^3 is already past the cap).
const MAX_STEPS: u32 = 3;

/// Peers remembered at most; beyond, the stalest are forgotten.
const MAX_PEERS: usize = 65_536;

/// Peers idle this long are forgotten.
const PEER_TTL: Duration = Duration::from_secs(600);

/// A peer's key: an IPv4 address, or an IPv6 /48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey(IpAddr);

impl PeerKey {
    /// Parses `192.0.2.7;54321` (libsasl2's `SASL_IPREMOTEPORT`), `192.0.2.7`, `::1` or
    /// `[2001:db8::1]:25`. `None` for anything else.
    pub fn parse(addr: &[u8]) -> Option<PeerKey> {
        let text = std::str::from_utf8(addr).ok()?;
        let host = text.split(';').next()?.trim();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.split(']').next())
            .unwrap_or(host);
        let ip: IpAddr = match host.parse() {
            Ok(ip) => ip,
            // "192.0.2.7:25": an IPv4 address with a port.
            Err(_) => host.rsplit_once(':').and_then(|(h, _)| h.parse().ok())?,
        };
        Some(PeerKey(match ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut seg = v6.segments();
                    seg[3..].fill(0);
                    IpAddr::V6(seg.into())
                }
            },
        }))
    }
}

struct PeerState {
    steps: u32,
    last_attempt: [u8; 32],
    last_seen: Instant,
}

/// The throttle.
pub struct Penalty {
    failure_delay: Duration,
    peers: Mutex<HashMap<PeerKey, PeerState>>,
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
pub fn attempt_fingerprint(key: &[u8; 32], user: &[u8], password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key);
    h.update((user.len() as u64).to_be_bytes());
    h.update(user);
    h.update(password);
    h.finalize().into()
}

impl Penalty {
    /// A throttle with the given base delay (0 disables it).
    pub fn new(failure_delay: Duration) -> Penalty {
        Penalty {
            failure_delay,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Whether failures are delayed at all.
    pub fn enabled(&self) -> bool {
        !self.failure_delay.is_zero()
    }

    /// Records a failure and returns how long to wait before answering, given that the
    /// request has already taken `elapsed`. `jitter` is a random value; the delay is scaled
    /// by 0.8 + 0.4 × (jitter / u64::MAX).
    pub fn on_failure(
        &self,
        peer: Option<PeerKey>,
        attempt: [u8; 32],
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
                let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
                    peers.retain(|_, s| now.saturating_duration_since(s.last_seen) < PEER_TTL);
                    if peers.len() >= MAX_PEERS {
                        peers.clear();
                    }
                }
                let state = peers.entry(peer).or_insert(PeerState {
                    steps: 0,
                    last_attempt: [0; 32],
                    last_seen: now,
                });
                if now.saturating_duration_since(state.last_seen) >= PEER_TTL {
                    state.steps = 0;
                }
                let current = state.steps;
                if state.last_attempt != attempt {
                    state.steps = (state.steps + 1).min(MAX_STEPS);
                }
                state.last_attempt = attempt;
                state.last_seen = now;
                current
            }
        };
        let base = self.failure_delay.saturating_mul(1 << steps);
        let factor = 0.8 + 0.4 * (jitter as f64 / u64::MAX as f64);
        let delay = base.mul_f64(factor);
        delay.min(MAX_REPLY.saturating_sub(elapsed))
    }

    /// A success: the peer starts afresh.
    pub fn on_success(&self, peer: Option<PeerKey>) {
        if let (true, Some(peer)) = (self.enabled(), peer) {
            self.peers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MID: u64 = u64::MAX / 2; // jitter factor 1.0

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn peer_keys() {
        let k = |s: &str| PeerKey::parse(s.as_bytes());
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
        let peer = PeerKey::parse(b"192.0.2.7");
        let a = |n: u8| [n; 32];
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
        let other = PeerKey::parse(b"198.51.100.1");
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
    fn the_cap_counts_time_already_spent() {
        let p = Penalty::new(Duration::from_secs(2));
        let t = Instant::now();
        let d = p.on_failure(None, [1; 32], Duration::from_millis(3500), t, MID);
        assert_eq!(ms(d), 1000);
        let d = p.on_failure(None, [1; 32], Duration::from_secs(6), t, MID);
        assert_eq!(d, Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = Penalty::new(Duration::from_secs(2));
        let t = Instant::now();
        assert_eq!(ms(p.on_failure(None, [1; 32], Duration::ZERO, t, 0)), 1600);
        assert_eq!(
            ms(p.on_failure(None, [1; 32], Duration::ZERO, t, u64::MAX)),
            2400
        );
    }

    #[test]
    fn zero_disables_everything() {
        let p = Penalty::new(Duration::ZERO);
        let peer = PeerKey::parse(b"192.0.2.7");
        for i in 0..5 {
            assert_eq!(
                p.on_failure(peer, [i; 32], Duration::ZERO, Instant::now(), MID),
                Duration::ZERO
            );
        }
    }
}
