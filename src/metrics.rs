//! The daemon's metrics, in the OpenMetrics text format (`prometheus-client` encodes them):
//! what an administrator asks the admin socket (`saslauthd-rs-ctl metrics`, `stats`, `top`)
//! or the metrics address for. One registry for the process, carried across reloads like the
//! throttle.
//!
//! The request path touches only atomics: every series a request can move is made when the
//! registry is (the request counters and latency histograms are fixed tables indexed by
//! protocol, mechanism, passdb and verdict; a listener's series are taken once when it starts
//! serving), and the histograms are arrays of atomic buckets, where `prometheus-client`'s own
//! take a lock per observation. Only what is rare (a backend error, a refused admin peer) is
//! looked up in a family. With `metrics = false` nothing is counted at all (for measuring
//! what counting costs); the series stay at zero.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry, Unit};

/// Which protocol a request came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The saslauthd socket (`mux`).
    Saslauthd,
    /// Dovecot's auth-client socket.
    Dovecot,
    /// The admin socket's `test`.
    Admin,
}

const PROTOCOLS: [Protocol; 3] = [Protocol::Saslauthd, Protocol::Dovecot, Protocol::Admin];

impl Protocol {
    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Saslauthd => "saslauthd",
            Protocol::Dovecot => "dovecot",
            Protocol::Admin => "admin",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated.
    Success,
    /// Refused: wrong password, unknown user, a malformed exchange.
    Failure,
    /// No verdict: the passdb failed or did not answer.
    Error,
}

const VERDICTS: [Verdict; 3] = [Verdict::Success, Verdict::Failure, Verdict::Error];

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Success => "success",
            Verdict::Failure => "failure",
            Verdict::Error => "error",
        }
    }
}

/// The SASL mechanisms a request can run (`none` on the saslauthd socket, where libsasl2 ran
/// it); a test checks it lists every mechanism the Dovecot socket knows.
pub(crate) const MECHANISMS: [&str; 9] = [
    "none",
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "DIGEST-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "OAUTHBEARER",
    "XOAUTH2",
];

/// How many passdbs the request tables have rows for: one per passdb a driver was made over
/// (a reload may bring another), far more than a process sees.
const MAX_PASSDBS: usize = 16;

/// The passdbs given rows in the tables, in the order they came: a row's name is set once.
#[derive(Debug, Default)]
struct PassdbNames {
    names: [std::sync::OnceLock<&'static str>; MAX_PASSDBS],
    /// Taken while a new name is given its row.
    adding: std::sync::Mutex<()>,
}

impl PassdbNames {
    /// The row of `name`, given one when it has none yet; `None` when every row is taken.
    fn row(&self, name: &'static str) -> Option<usize> {
        let find = || self.names.iter().position(|n| n.get() == Some(&name));
        if let Some(row) = find() {
            return Some(row);
        }
        let _adding = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        find().or_else(|| {
            let row = self.names.iter().position(|n| n.get().is_none())?;
            let _ = self.names[row].set(name);
            Some(row)
        })
    }

    /// The rows given so far, with their names.
    fn rows(&self) -> impl Iterator<Item = (usize, &'static str)> + '_ {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.get().map(|name| (i, *name)))
    }
}

/// A passdb as the metrics count it: its name and its row in the request tables (`None`
/// beyond `MAX_PASSDBS`: then its series go to the families). Taken once, when a driver
/// is made, with [`Metrics::passdb`].
#[derive(Debug, Clone, Copy)]
pub struct PassdbRow {
    name: &'static str,
    row: Option<usize>,
}

fn protocol_index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Saslauthd => 0,
        Protocol::Dovecot => 1,
        Protocol::Admin => 2,
    }
}

fn verdict_index(verdict: Verdict) -> usize {
    match verdict {
        Verdict::Success => 0,
        Verdict::Failure => 1,
        Verdict::Error => 2,
    }
}

/// The labels of an authentication.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: &'static str,
    mechanism: &'static str,
    passdb: &'static str,
    verdict: &'static str,
}

/// The labels of a duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    protocol: &'static str,
    passdb: &'static str,
}

/// The labels of a listener's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    protocol: &'static str,
    /// The socket's path or address.
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    protocol: &'static str,
    listener: String,
    /// `limit` (the connection bound), `not_allowed` (a TCP peer outside the allow list),
    /// `peer_uid` (the admin socket's peer is not root or the daemon's user).
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    passdb: &'static str,
    /// `error` (the passdb said so), `timeout`, `lost` (the check panicked).
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Buckets of a latency histogram: 50 µs doubling to about 6.5 s (a sasldb lookup to a PAM
/// module that sleeps), then +Inf.
const BUCKETS: usize = 18;
const FIRST_BUCKET_NS: u64 = 50_000;

/// A latency histogram of atomics: an observation is two `fetch_add`s.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    /// Per bucket (not cumulative); the last is +Inf.
    counts: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    /// Counts one duration.
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // Bucket i holds (50 µs * 2^(i-1), 50 µs * 2^i]: i is the bit length of
        // (ns - 1) / 50 µs.
        let q = ns.saturating_sub(1) / FIRST_BUCKET_NS;
        let i = (u64::BITS - q.leading_zeros()) as usize;
        self.counts[i.min(BUCKETS)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The count (the buckets' sum, so that +Inf always equals it).
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0u64); BUCKETS + 1];
        let mut count = 0;
        for (i, (bucket, n)) in buckets.iter_mut().zip(&self.counts).enumerate() {
            let upper = match i {
                // prometheus-client writes f64::MAX as +Inf.
                BUCKETS => f64::MAX,
                i => 0.000_05 * f64::from(1u32 << i),
            };
            let n = n.load(Ordering::Relaxed);
            count += n;
            *bucket = (upper, n);
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Counters by protocol, mechanism, passdb and verdict, a fixed table; a series is shown once
/// it is not zero.
#[derive(Debug)]
struct RequestTable {
    counts: Vec<AtomicU64>,
    passdbs: Arc<PassdbNames>,
}

fn request_slot(protocol: Protocol, mechanism: usize, passdb: usize, verdict: Verdict) -> usize {
    ((protocol_index(protocol) * MECHANISMS.len() + mechanism) * MAX_PASSDBS + passdb)
        * VERDICTS.len()
        + verdict_index(verdict)
}

impl RequestTable {
    fn new(passdbs: Arc<PassdbNames>) -> RequestTable {
        let len = PROTOCOLS.len() * MECHANISMS.len() * MAX_PASSDBS * VERDICTS.len();
        RequestTable {
            counts: (0..len).map(|_| AtomicU64::new(0)).collect(),
            passdbs,
        }
    }
}

impl TypedMetric for RequestTable {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for RequestTable {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for protocol in PROTOCOLS {
            for (m, mechanism) in MECHANISMS.iter().enumerate() {
                for (row, passdb) in self.passdbs.rows() {
                    for verdict in VERDICTS {
                        let n = self.counts[request_slot(protocol, m, row, verdict)]
                            .load(Ordering::Relaxed);
                        if n == 0 {
                            continue;
                        }
                        let labels = RequestLabels {
                            protocol: protocol.name(),
                            mechanism,
                            passdb,
                            verdict: verdict.name(),
                        };
                        encoder
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Latency histograms by protocol and passdb, a fixed table; one is shown once it counted.
#[derive(Debug)]
struct DurationTable {
    histograms: Vec<AtomicHistogram>,
    passdbs: Arc<PassdbNames>,
}

fn duration_slot(protocol: Protocol, passdb: usize) -> usize {
    protocol_index(protocol) * MAX_PASSDBS + passdb
}

impl TypedMetric for DurationTable {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationTable {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for protocol in PROTOCOLS {
            for (row, passdb) in self.passdbs.rows() {
                let histogram = &self.histograms[duration_slot(protocol, row)];
                if histogram.count() == 0 {
                    continue;
                }
                let labels = DurationLabels {
                    protocol: protocol.name(),
                    passdb,
                };
                histogram.encode(encoder.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One listener's series, taken when it starts serving: what its accept loop moves.
#[derive(Debug, Clone)]
pub struct ListenerCounts {
    enabled: bool,
    open: Gauge,
    accepted: Counter,
    refused_limit: Counter,
    refused_not_allowed: Counter,
    refused: Family<RefusedLabels, Counter>,
    labels: ListenerLabels,
}

impl ListenerCounts {
    /// A connection let in.
    pub fn opened(&self) {
        if self.enabled {
            self.accepted.inc();
            self.open.inc();
        }
    }

    /// A connection let in has closed.
    pub fn closed(&self) {
        if self.enabled {
            self.open.dec();
        }
    }

    /// A connection closed at once because the listener was full.
    pub fn refused_at_limit(&self) {
        if self.enabled {
            self.refused_limit.inc();
        }
    }

    /// A TCP connection closed at once because its peer is not allowed.
    pub fn refused_not_allowed(&self) {
        if self.enabled {
            self.refused_not_allowed.inc();
        }
    }

    /// A connection refused for `reason` after it was let in (the admin socket's peer check).
    pub fn refused_for(&self, reason: &'static str) {
        if self.enabled {
            self.refused
                .get_or_create(&RefusedLabels {
                    protocol: self.labels.protocol,
                    listener: self.labels.listener.clone(),
                    reason,
                })
                .inc();
        }
    }
}

/// A request being answered, counted in `requests_in_flight` until it drops.
#[derive(Debug)]
pub struct InFlight(Option<Gauge>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.dec();
        }
    }
}

/// The blocking pool's series.
#[derive(Debug, Clone)]
pub struct PoolCounts {
    /// Jobs waiting for a worker.
    pub(crate) queued: Gauge,
    /// Time from a job's submission to a worker taking it.
    pub(crate) wait: Arc<AtomicHistogram>,
    pub(crate) enabled: bool,
}

/// The shared throttle store's series.
#[derive(Debug, Clone, Default)]
#[cfg_attr(not(feature = "throttle-store"), allow(dead_code))]
pub struct StoreCounts {
    /// 1 while the store is connected.
    pub(crate) up: Gauge,
    calls: Family<StoreLabels, Counter>,
    /// How long a failure waited for the store's counts.
    pub(crate) wait: Arc<AtomicHistogram>,
}

#[cfg_attr(not(feature = "throttle-store"), allow(dead_code))]
impl StoreCounts {
    /// One call to the store, by result: ok, timeout, error (the store goes down), foreign
    /// (a value saslauthd-rs did not write), skipped (the store was down).
    pub(crate) fn calls(&self, result: &'static str) {
        self.calls_n(result, 1);
    }

    /// `n` calls with the same result (a batch).
    pub(crate) fn calls_n(&self, result: &'static str, n: u64) {
        self.calls.get_or_create(&StoreLabels { result }).inc_by(n);
    }
}

/// The metrics.
pub struct Metrics {
    enabled: bool,
    registry: Registry,
    requests: Arc<RequestTable>,
    /// Requests with a mechanism [`MECHANISMS`] does not list (none today), or over a passdb
    /// beyond the tables' rows.
    other_requests: Family<RequestLabels, Counter>,
    durations: Arc<DurationTable>,
    /// Durations over a passdb beyond the table's rows.
    other_durations: Family<DurationLabels, prometheus_client::metrics::histogram::Histogram>,
    passdbs: Arc<PassdbNames>,
    in_flight: [Gauge; 3],
    delays: Counter,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_entries: Gauge,
    penalty_peers: Gauge,
    penalty_users: Gauge,
    store: StoreCounts,
    token_refusals: Family<ReasonLabels, Counter>,
    backend_errors: Family<BackendLabels, Counter>,
    open: Family<ListenerLabels, Gauge>,
    accepted: Family<ListenerLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    pool: PoolCounts,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true)
    }
}

/// A table the daemon counts in and the registry encodes, shared by both.
#[derive(Debug)]
struct Shared<T>(Arc<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T: TypedMetric> TypedMetric for Shared<T> {
    const TYPE: MetricType = T::TYPE;
}

impl<T: EncodeMetric> EncodeMetric for Shared<T> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// Registers `metric` as `name` (in `unit`, when it has one) and hands back the handle the
/// daemon counts in: a clone that shares its atomics.
fn registered<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

impl Metrics {
    /// A registry with the process's start time and build; `enabled: false` counts nothing.
    pub fn new(enabled: bool) -> Metrics {
        let mut registry = Registry::with_prefix("saslauthd_rs");
        let r = &mut registry;
        let passdbs = Arc::new(PassdbNames::default());
        let requests = registered(
            r,
            "requests",
            "Authentications, by protocol, SASL mechanism, passdb and verdict",
            None,
            Shared(Arc::new(RequestTable::new(Arc::clone(&passdbs)))),
        );
        let other_requests = registered(
            r,
            "other_requests",
            "Authentications by a mechanism the requests table does not list",
            None,
            Family::<RequestLabels, Counter>::default(),
        );
        let durations = registered(
            r,
            "request_duration",
            "Time from a request to its verdict (before any failure delay)",
            Some(Unit::Seconds),
            Shared(Arc::new(DurationTable {
                histograms: (0..PROTOCOLS.len() * MAX_PASSDBS)
                    .map(|_| AtomicHistogram::default())
                    .collect(),
                passdbs: Arc::clone(&passdbs),
            })),
        );
        let other_durations = registered(
            r,
            "other_request_duration",
            "Time from a request to its verdict, over a passdb beyond the duration table",
            Some(Unit::Seconds),
            Family::<DurationLabels, prometheus_client::metrics::histogram::Histogram>::new_with_constructor(
                || {
                    prometheus_client::metrics::histogram::Histogram::new(
                        prometheus_client::metrics::histogram::exponential_buckets(
                            0.000_05, 2.0, 18,
                        ),
                    )
                },
            ),
        );
        let in_flight = registered(
            r,
            "requests_in_flight",
            "Requests being answered now (read, not yet replied to)",
            None,
            Family::<ProtocolLabels, Gauge>::default(),
        );
        let in_flight = PROTOCOLS.map(|p| {
            in_flight
                .get_or_create(&ProtocolLabels { protocol: p.name() })
                .clone()
        });
        let delays = registered(
            r,
            "failure_delays",
            "Failures whose answer the throttle delayed",
            None,
            Counter::default(),
        );
        let cache = registered(
            r,
            "cache_lookups",
            "Credential-cache lookups (-c) by result (hit: answered without the passdb)",
            None,
            Family::<CacheLabels, Counter>::default(),
        );
        let cache_hits = cache.get_or_create(&CacheLabels { result: "hit" }).clone();
        let cache_misses = cache.get_or_create(&CacheLabels { result: "miss" }).clone();
        let cache_entries = registered(
            r,
            "cache_entries",
            "Entries in the credential cache",
            None,
            Gauge::default(),
        );
        let penalty_peers = registered(
            r,
            "penalty_peers",
            "Client addresses the throttle delays now",
            None,
            Gauge::default(),
        );
        let penalty_users = registered(
            r,
            "penalty_users",
            "Users with wrong passwords the user guard counts now (this daemon's memory)",
            None,
            Gauge::default(),
        );
        let token_refusals = registered(
            r,
            "token_refusals",
            "OAuth 2.0 tokens ([oauth2]) refused, by reason",
            None,
            Family::<ReasonLabels, Counter>::default(),
        );
        let store = StoreCounts {
            up: registered(
                r,
                "throttle_store_up",
                "1 while the shared throttle store (throttle_store) is connected",
                None,
                Gauge::default(),
            ),
            calls: registered(
                r,
                "throttle_store_calls",
                "Calls to the shared throttle store, by result (ok, timeout, error, foreign, skipped)",
                None,
                Family::<StoreLabels, Counter>::default(),
            ),
            wait: registered(
                r,
                "throttle_store_wait",
                "Time a failure waited for the shared throttle store's counts (one round trip)",
                Some(Unit::Seconds),
                Shared(Arc::new(AtomicHistogram::default())),
            )
            .0,
        };
        let backend_errors = registered(
            r,
            "backend_errors",
            "Checks the passdb gave no verdict for, by passdb and kind (error, timeout, lost)",
            None,
            Family::<BackendLabels, Counter>::default(),
        );
        let open = registered(
            r,
            "connections_open",
            "Connections open now, by listener",
            None,
            Family::<ListenerLabels, Gauge>::default(),
        );
        let accepted = registered(
            r,
            "connections",
            "Connections let in, by listener",
            None,
            Family::<ListenerLabels, Counter>::default(),
        );
        let refused = registered(
            r,
            "connections_refused",
            "Connections closed at once, by listener and reason (limit, not_allowed, peer_uid)",
            None,
            Family::<RefusedLabels, Counter>::default(),
        );
        let pool = PoolCounts {
            queued: registered(
                r,
                "pool_queue_depth",
                "Blocking checks (crypt, PAM, PBKDF2) waiting for a worker (-n)",
                None,
                Gauge::default(),
            ),
            wait: registered(
                r,
                "pool_wait",
                "Time a blocking check waited for a worker",
                Some(Unit::Seconds),
                Shared(Arc::new(AtomicHistogram::default())),
            )
            .0,
            enabled,
        };
        let started = registered(
            r,
            "start_time",
            "When the process started (Unix time)",
            Some(Unit::Seconds),
            Gauge::<f64, AtomicU64>::default(),
        );
        started.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register(
            "build",
            "The build",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Metrics {
            enabled,
            registry,
            requests: requests.0,
            other_requests,
            durations: durations.0,
            other_durations,
            passdbs,
            in_flight,
            delays,
            cache_hits,
            cache_misses,
            cache_entries,
            penalty_peers,
            penalty_users,
            store,
            token_refusals,
            backend_errors,
            open,
            accepted,
            refused,
            pool,
        }
    }

    /// The row of the passdb `kind` in the request tables, for the driver made over it.
    pub fn passdb(&self, kind: crate::verdict::PassdbKind) -> PassdbRow {
        PassdbRow {
            name: kind.name,
            row: self.passdbs.row(kind.name),
        }
    }

    /// The series of a listener of `protocol` at `listener` (its path or address).
    pub fn listener(&self, protocol: &'static str, listener: String) -> ListenerCounts {
        let labels = ListenerLabels { protocol, listener };
        let refused = |reason| {
            self.refused
                .get_or_create(&RefusedLabels {
                    protocol,
                    listener: labels.listener.clone(),
                    reason,
                })
                .clone()
        };
        ListenerCounts {
            enabled: self.enabled,
            open: self.open.get_or_create(&labels).clone(),
            accepted: self.accepted.get_or_create(&labels).clone(),
            refused_limit: refused("limit"),
            refused_not_allowed: refused("not_allowed"),
            refused: self.refused.clone(),
            labels,
        }
    }

    /// The shared throttle store's series.
    pub fn store(&self) -> StoreCounts {
        self.store.clone()
    }

    /// The blocking pool's series.
    pub fn pool(&self) -> PoolCounts {
        self.pool.clone()
    }

    /// A request of `protocol` is being answered until the guard drops.
    pub fn in_flight(&self, protocol: Protocol) -> InFlight {
        if !self.enabled {
            return InFlight(None);
        }
        let gauge = &self.in_flight[protocol_index(protocol)];
        gauge.inc();
        InFlight(Some(gauge.clone()))
    }

    /// An OAuth 2.0 token refused, and why.
    pub fn token_refused(&self, why: crate::verdict::TokenRefusal) {
        if self.enabled {
            self.token_refusals
                .get_or_create(&ReasonLabels { reason: why.name() })
                .inc();
        }
    }

    /// A credential-cache lookup.
    pub fn cache_lookup(&self, hit: bool) {
        if self.enabled {
            match hit {
                true => self.cache_hits.inc(),
                false => self.cache_misses.inc(),
            };
        }
    }

    /// The sizes read at encoding time.
    pub fn set_sizes(&self, cache_entries: usize, penalty_peers: usize, penalty_users: usize) {
        self.penalty_users
            .set(i64::try_from(penalty_users).unwrap_or(i64::MAX));
        self.cache_entries
            .set(i64::try_from(cache_entries).unwrap_or(i64::MAX));
        self.penalty_peers
            .set(i64::try_from(penalty_peers).unwrap_or(i64::MAX));
    }

    /// One authentication; `mechanism` is `None` on the saslauthd socket.
    pub fn observe(
        &self,
        protocol: Protocol,
        mechanism: Option<&'static str>,
        passdb: PassdbRow,
        verdict: Verdict,
        elapsed: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let mechanism = mechanism.unwrap_or("none");
        match (MECHANISMS.iter().position(|m| *m == mechanism), passdb.row) {
            (Some(m), Some(row)) => {
                self.requests.counts[request_slot(protocol, m, row, verdict)]
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.other_requests
                    .get_or_create(&RequestLabels {
                        protocol: protocol.name(),
                        mechanism,
                        passdb: passdb.name,
                        verdict: verdict.name(),
                    })
                    .inc();
            }
        }
        match passdb.row {
            Some(row) => self.durations.histograms[duration_slot(protocol, row)].observe(elapsed),
            None => self
                .other_durations
                .get_or_create(&DurationLabels {
                    protocol: protocol.name(),
                    passdb: passdb.name,
                })
                .observe(elapsed.as_secs_f64()),
        }
    }

    /// A check the passdb gave no verdict for: `kind` is `error`, `timeout` or `lost`.
    pub fn backend_error(&self, passdb: PassdbRow, kind: &'static str) {
        if self.enabled {
            self.backend_errors
                .get_or_create(&BackendLabels {
                    passdb: passdb.name,
                    kind,
                })
                .inc();
        }
    }

    /// A failure the throttle delayed.
    pub fn delayed(&self) {
        if self.enabled {
            self.delays.inc();
        }
    }

    /// The OpenMetrics text, `# EOF` last.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn histogram_buckets_hold_what_falls_under_their_bound() {
        let h = AtomicHistogram::default();
        for us in [
            0,
            50,
            51,
            100,
            101,
            200,
            6_553_600,
            7_000_000,
            u64::MAX / 1000,
        ] {
            h.observe(Duration::from_micros(us));
        }
        let n = |i: usize| h.counts[i].load(Ordering::Relaxed);
        assert_eq!(
            (n(0), n(1), n(2)),
            (2, 2, 2),
            "0 and 50 µs; 51, 100; 101, 200"
        );
        assert_eq!(n(17), 1, "6.5536 s is the last finite bound");
        assert_eq!(n(BUCKETS), 2, "beyond it: +Inf");
        assert_eq!(h.count(), 9);
    }

    #[test]
    fn every_mechanism_has_its_row() {
        for name in crate::mech::all_names_list() {
            assert!(
                MECHANISMS.contains(&name),
                "{name} is missing from MECHANISMS"
            );
        }
    }

    #[test]
    fn counts_encode_and_off_counts_nothing() {
        for enabled in [true, false] {
            let m = Metrics::new(enabled);
            let listener = m.listener("saslauthd", "/run/saslauthd/mux".into());
            listener.opened();
            listener.refused_at_limit();
            let busy = m.in_flight(Protocol::Dovecot);
            let kind = |name| crate::verdict::PassdbKind {
                name,
                replies: crate::verdict::Replies::BARE,
            };
            m.observe(
                Protocol::Dovecot,
                Some("PLAIN"),
                m.passdb(kind("sasldb")),
                Verdict::Success,
                Duration::from_micros(120),
            );
            m.backend_error(m.passdb(kind("pam")), "timeout");
            let text = m.encode();
            let n = u8::from(enabled);
            let get = |name: &str| sample(&text, name).unwrap_or(0.0);
            assert_eq!(
                get("saslauthd_rs_requests_total{protocol=\"dovecot\",mechanism=\"PLAIN\",passdb=\"sasldb\",verdict=\"success\"}"),
                f64::from(n),
                "{text}"
            );
            assert_eq!(
                get("saslauthd_rs_request_duration_seconds_bucket{le=\"0.0002\",protocol=\"dovecot\",passdb=\"sasldb\"}"),
                f64::from(n),
                "{text}"
            );
            assert_eq!(
                get("saslauthd_rs_requests_in_flight{protocol=\"dovecot\"}"),
                f64::from(n)
            );
            drop(busy);
            assert_eq!(
                sample(
                    &m.encode(),
                    "saslauthd_rs_requests_in_flight{protocol=\"dovecot\"}"
                ),
                Some(0.0)
            );
            assert_eq!(
                get("saslauthd_rs_connections_refused_total{protocol=\"saslauthd\",listener=\"/run/saslauthd/mux\",reason=\"limit\"}"),
                f64::from(n)
            );
            assert_eq!(
                get("saslauthd_rs_backend_errors_total{passdb=\"pam\",kind=\"timeout\"}"),
                f64::from(n)
            );
            assert!(text.ends_with("# EOF\n"));
        }
    }
}
