//! The driver's metrics, in the OpenMetrics text format (`prometheus-client`): what an
//! administrator asks the admin socket for (`saslauthd-rs-ctl metrics`, `stats`). One
//! registry for the process, carried across reloads like the throttle.
//!
//! Recorded where the one log line of an authentication is written, so every request counts
//! once, in the protocol, mechanism, passdb and verdict it had; counters are atomics.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The labels of an authentication.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `saslauthd` or `dovecot`.
    pub protocol: &'static str,
    /// The SASL mechanism (`none` on the saslauthd socket: libsasl2 ran it).
    pub mechanism: &'static str,
    /// The passdb.
    pub passdb: &'static str,
    /// `success`, `failure` or `error`.
    pub verdict: &'static str,
}

/// The labels of a duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// As above.
    pub protocol: &'static str,
    /// As above.
    pub passdb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

fn duration_histogram() -> Histogram {
    // 50 µs to about 6.5 s: a sasldb lookup to a PAM module that sleeps.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 18,
    ))
}

/// The metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    delays: Counter,
    /// The family's two series, taken once: no lookup in the family per request.
    cache_hits: Counter,
    cache_misses: Counter,
    cache_entries: Gauge,
    penalty_peers: Gauge,
}

/// Whether a credential-cache lookup answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry with the process's start time and build.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("saslauthd_rs");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Authentications, by protocol, SASL mechanism, passdb and verdict",
            requests.clone(),
        );
        let durations =
            Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register_with_unit(
            "request_duration",
            "Time from a request to its verdict (before any failure delay)",
            prometheus_client::registry::Unit::Seconds,
            durations.clone(),
        );
        let delays = Counter::default();
        registry.register(
            "failure_delays",
            "Failures whose answer the throttle delayed",
            delays.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Credential-cache lookups (-c) by result (hit: answered without the passdb)",
            cache.clone(),
        );
        let cache_hits = cache.get_or_create(&CacheLabels { result: "hit" }).clone();
        let cache_misses = cache.get_or_create(&CacheLabels { result: "miss" }).clone();
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Entries in the credential cache",
            cache_entries.clone(),
        );
        let penalty_peers = Gauge::default();
        registry.register(
            "penalty_peers",
            "Client addresses the throttle delays now",
            penalty_peers.clone(),
        );
        let started = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        started.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register_with_unit(
            "start_time",
            "When the process started (Unix time)",
            prometheus_client::registry::Unit::Seconds,
            started,
        );
        registry.register(
            "build",
            "The build",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Metrics {
            registry,
            requests,
            durations,
            delays,
            cache_hits,
            cache_misses,
            cache_entries,
            penalty_peers,
        }
    }

    /// A credential-cache lookup.
    pub fn cache_lookup(&self, hit: bool) {
        match hit {
            true => self.cache_hits.inc(),
            false => self.cache_misses.inc(),
        };
    }

    /// The sizes read at encoding time.
    pub fn set_sizes(&self, cache_entries: usize, penalty_peers: usize) {
        self.cache_entries
            .set(i64::try_from(cache_entries).unwrap_or(i64::MAX));
        self.penalty_peers
            .set(i64::try_from(penalty_peers).unwrap_or(i64::MAX));
    }

    /// One authentication.
    pub fn observe(&self, labels: RequestLabels, elapsed: Duration) {
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&DurationLabels {
                protocol: labels.protocol,
                passdb: labels.passdb,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A failure the throttle delayed.
    pub fn delayed(&self) {
        self.delays.inc();
    }

    /// The OpenMetrics text, `# EOF` last.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
