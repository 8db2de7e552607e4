//! What the cache reports: every event is counted once here, into the `metrics` facade and into
//! the snapshot. Never labels anything with a namespace name (a tenant): only the caller's
//! low-cardinality label.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_utils::sync::ShardedLock;
use crossbeam_utils::CachePadded;
use metrics::{Counter, Histogram};
use serde::{Deserialize, Serialize};

// Metric names, defined once.
const HITS: &str = "tiered_cache_hits_total";
const MISSES: &str = "tiered_cache_misses_total";
const FILLS: &str = "tiered_cache_fills_total";
const FILL_SECONDS: &str = "tiered_cache_fill_duration_seconds";
const COALESCED: &str = "tiered_cache_coalesced_total";
const INVALIDATIONS: &str = "tiered_cache_invalidations_total";
const STALE_SERVED: &str = "tiered_cache_stale_served_total";
const BEHIND_OWN: &str = "tiered_cache_behind_own_total";
const PRIMED: &str = "tiered_cache_primed_total";
const L2_ERRORS: &str = "tiered_cache_l2_errors_total";
const BREAKER_STATE: &str = "tiered_cache_breaker_state";
const BUS_CONNECTED: &str = "tiered_cache_bus_connected";
const L1_ENTRIES: &str = "tiered_cache_l1_entries";
const L1_BYTES: &str = "tiered_cache_l1_bytes";
const SYNC_TIMEOUTS: &str = "tiered_cache_sync_timeouts_total";

/// Hits and misses of one layer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// Lookups answered by this layer.
    pub hits: u64,
    /// Lookups this layer could not answer.
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 when there were no lookups.
    pub hit_ratio: f64,
}

impl LayerStats {
    /// The figures of `hits` and `misses`, with their ratio.
    pub fn new(hits: u64, misses: u64) -> LayerStats {
        let total = hits + misses;
        LayerStats {
            hits,
            misses,
            hit_ratio: if total == 0 {
                0.0
            } else {
                hits as f64 / total as f64
            },
        }
    }
}

/// Counters of one label (all namespaces sharing it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelStats {
    /// The in-process layer.
    pub l1: LayerStats,
    /// The Redis layer (consulted on L1 misses only).
    pub l2: LayerStats,
    /// `fill` runs (one per single-flight group), whatever their outcome.
    pub fills: u64,
    /// Fills whose value was stored.
    pub fills_stored: u64,
    /// Fills whose value was returned but not stored: marked uncacheable, refused by the store
    /// condition, or older than the namespace's last invalidation position.
    pub fills_refused: u64,
    /// Fills whose namespace was invalidated while they ran: returned, not stored.
    pub fills_discarded: u64,
    /// Fills that returned an error.
    pub fill_errors: u64,
    /// Fills that hit the fill timeout.
    pub fill_timeouts: u64,
    /// Total time spent in fills, in microseconds.
    pub fill_micros_total: u64,
    /// Callers that waited on another caller's fill instead of running their own.
    pub coalesced: u64,
    /// Stale values served by the fail-safe after a failed fill.
    pub stale_served: u64,
    /// Invalidations applied on this instance (own and received over the bus).
    pub invalidations: u64,
    /// L1 misses on an entry other readers would have been served, older than the reader's own
    /// latest change ([`get_or_fill_after`]): the misses that reading one's own writes costs.
    /// Included in `l1.misses`.
    ///
    /// [`get_or_fill_after`]: crate::TieredCache::get_or_fill_after
    #[serde(default)]
    pub behind_own: u64,
    /// Values stored in L1 by [`prime`](crate::TieredCache::prime): found in another fill's
    /// result, so a later lookup of the key hits without a fill of its own.
    #[serde(default)]
    pub primed: u64,
}

/// Breaker position, as reported in [`StatsSnapshot`], [`Health`] and the
/// `tiered_cache_breaker_state` gauge (0, 1, 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Redis calls go through (also reported when no Redis is configured).
    #[default]
    Closed,
    /// Redis calls are skipped.
    Open,
    /// One probe is checking whether Redis answers again.
    HalfOpen,
}

/// A point-in-time copy of the counters (since the cache was built or [`reset_stats`] was
/// called), serializable for an operator route.
///
/// [`reset_stats`]: crate::TieredCache::reset_stats
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Per label, sorted by label.
    pub labels: BTreeMap<String, LabelStats>,
    /// Redis calls that failed with an error.
    pub l2_errors: u64,
    /// Redis calls that timed out.
    pub l2_timeouts: u64,
    /// Redis calls skipped because the breaker was open.
    pub l2_skipped: u64,
    /// Current breaker position.
    pub breaker: BreakerState,
    /// Whether the invalidation bus is subscribed (always true without Redis).
    pub bus_connected: bool,
    /// Times the bus (re)subscribed; each makes every generation be re-read from Redis.
    pub bus_subscribes: u64,
    /// [`sync_peers`](crate::TieredCache::sync_peers) calls that gave up waiting for every
    /// subscriber to acknowledge the barrier.
    pub sync_timeouts: u64,
    /// Entries in L1 (current, not reset).
    pub l1_entries: u64,
    /// Bytes charged to the L1 bound (current, not reset).
    pub l1_bytes: u64,
}

/// Whether the Redis layer answers, as seen by [`TieredCache::health`](crate::TieredCache::health).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum L2Status {
    /// No Redis configured: L1 only, by design.
    Disabled,
    /// Redis answered the health check.
    Up,
    /// Redis did not answer in time or answered with an error; the cache serves from L1 and
    /// `fill` meanwhile.
    Down,
}

/// The cache's health, for a readiness or operator route. A `Down` L2 is degraded, not failed:
/// the cache keeps answering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Redis reachability.
    pub l2: L2Status,
    /// Round trip of the health check's PING, when it answered.
    pub l2_latency_micros: Option<u64>,
    /// Breaker position.
    pub breaker: BreakerState,
    /// Whether the invalidation bus is subscribed (always true without Redis).
    pub bus_connected: bool,
}

/// Counters are striped: each thread adds to its own cache line, so two cores counting hits
/// do not bounce one line between them (the snapshot sums the stripes).
const STRIPES: usize = 8;

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// One counter: the local value for the snapshot and the facade handle, registered once.
struct Count {
    n: [CachePadded<AtomicU64>; STRIPES],
    metric: Counter,
}

impl Count {
    fn new(metric: Counter) -> Self {
        Self {
            n: Default::default(),
            metric,
        }
    }

    fn add(&self, v: u64) {
        self.n[stripe()].fetch_add(v, Relaxed);
        self.metric.increment(v);
    }

    fn get(&self) -> u64 {
        self.n.iter().map(|n| n.load(Relaxed)).sum()
    }

    fn reset(&self) {
        for n in &self.n {
            n.store(0, Relaxed);
        }
    }
}

pub(crate) struct LabelCounters {
    l1_hits: Count,
    l1_misses: Count,
    l2_hits: Count,
    l2_misses: Count,
    fills: [Count; FillOutcome::ALL.len()],
    fill_micros: AtomicU64,
    fill_seconds: Histogram,
    coalesced: Count,
    stale_served: Count,
    invalidations: Count,
    behind_own: Count,
    primed: Count,
}

impl LabelCounters {
    /// Registers the facade handles. This happens on a label's first event, so a `metrics`
    /// recorder must be installed before the cache is first used (as usual with the facade).
    fn new(label: &str) -> Self {
        let label = label.to_owned();
        let layer = |name: &'static str, layer: &'static str| {
            Count::new(metrics::counter!(name, "layer" => layer, "label" => label.clone()))
        };
        let plain =
            |name: &'static str| Count::new(metrics::counter!(name, "label" => label.clone()));
        Self {
            l1_hits: layer(HITS, "l1"),
            l1_misses: layer(MISSES, "l1"),
            l2_hits: layer(HITS, "l2"),
            l2_misses: layer(MISSES, "l2"),
            fills: FillOutcome::ALL.map(|o| {
                Count::new(
                    metrics::counter!(FILLS, "label" => label.clone(), "outcome" => o.name()),
                )
            }),
            fill_micros: AtomicU64::new(0),
            fill_seconds: metrics::histogram!(FILL_SECONDS, "label" => label.clone()),
            coalesced: plain(COALESCED),
            stale_served: plain(STALE_SERVED),
            invalidations: plain(INVALIDATIONS),
            behind_own: plain(BEHIND_OWN),
            primed: plain(PRIMED),
        }
    }

    fn snapshot(&self) -> LabelStats {
        let layer = LayerStats::new;
        let fill = |o: FillOutcome| self.fills[o as usize].get();
        LabelStats {
            l1: layer(self.l1_hits.get(), self.l1_misses.get()),
            l2: layer(self.l2_hits.get(), self.l2_misses.get()),
            fills: self.fills.iter().map(Count::get).sum(),
            fills_stored: fill(FillOutcome::Stored),
            fills_refused: fill(FillOutcome::Refused),
            fills_discarded: fill(FillOutcome::Discarded),
            fill_errors: fill(FillOutcome::Error),
            fill_timeouts: fill(FillOutcome::Timeout),
            fill_micros_total: self.fill_micros.load(Relaxed),
            coalesced: self.coalesced.get(),
            stale_served: self.stale_served.get(),
            invalidations: self.invalidations.get(),
            behind_own: self.behind_own.get(),
            primed: self.primed.get(),
        }
    }

    fn reset(&self) {
        for c in [
            &self.l1_hits,
            &self.l1_misses,
            &self.l2_hits,
            &self.l2_misses,
            &self.coalesced,
            &self.stale_served,
            &self.invalidations,
            &self.behind_own,
            &self.primed,
        ]
        .into_iter()
        .chain(&self.fills)
        {
            c.reset();
        }
        self.fill_micros.store(0, Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layer {
    L1,
    L2,
}

/// How a fill ended, as counted in `tiered_cache_fills_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillOutcome {
    /// Its value was kept.
    Stored = 0,
    /// Its value was not kept: it could not be shown to be current.
    Refused,
    /// Its value was not kept: what it read was changed while it ran.
    Discarded,
    /// The read failed.
    Error,
    /// The read took longer than the fill timeout.
    Timeout,
}

impl FillOutcome {
    const ALL: [FillOutcome; 5] = [
        FillOutcome::Stored,
        FillOutcome::Refused,
        FillOutcome::Discarded,
        FillOutcome::Error,
        FillOutcome::Timeout,
    ];

    fn name(self) -> &'static str {
        match self {
            FillOutcome::Stored => "stored",
            FillOutcome::Refused => "refused",
            FillOutcome::Discarded => "discarded",
            FillOutcome::Error => "error",
            FillOutcome::Timeout => "timeout",
        }
    }
}

type Labels = HashMap<Box<str>, LabelCounters, foldhash::fast::RandomState>;

pub(crate) struct Stats {
    // Labels are few and fixed; the write lock is taken once per label for the process lifetime,
    // the (sharded) read lock on every event.
    labels: ShardedLock<Labels>,
    l2_errors: Count,
    l2_timeouts: Count,
    l2_skipped: Count,
    sync_timeouts: Count,
    bus_subscribes: AtomicU64,
    bus_connected: AtomicBool,
    /// The L1 size gauges are set at most once a second.
    l1_gauges: Every,
    /// An unacknowledged bus barrier is logged at most once every 10 s.
    sync_warning: Every,
    born: std::time::Instant,
}

/// Lets something happen at most once per interval, on the clock of [`Stats::born`].
struct Every {
    /// When it last happened, in milliseconds since `born`, plus the interval (so that 0 means
    /// "long ago").
    at: AtomicU64,
    interval_ms: u64,
}

impl Every {
    /// First due one interval after `born`.
    fn after_one(interval: std::time::Duration) -> Self {
        let interval_ms = interval.as_millis() as u64;
        Every {
            at: AtomicU64::new(interval_ms),
            interval_ms,
        }
    }

    /// Due at once.
    fn at_once(interval: std::time::Duration) -> Self {
        Every {
            at: AtomicU64::new(0),
            interval_ms: interval.as_millis() as u64,
        }
    }

    /// Whether it is due now; if so, the caller is the one to do it.
    fn claim(&self, born: std::time::Instant) -> bool {
        let now = born.elapsed().as_millis() as u64 + self.interval_ms;
        let last = self.at.load(Relaxed);
        now.saturating_sub(last) >= self.interval_ms
            && self
                .at
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

impl Stats {
    pub(crate) fn new(bus_connected: bool) -> Self {
        metrics::gauge!(BUS_CONNECTED).set(if bus_connected { 1.0 } else { 0.0 });
        Self {
            labels: ShardedLock::new(Labels::default()),
            l2_errors: Count::new(metrics::counter!(L2_ERRORS, "kind" => "error")),
            l2_timeouts: Count::new(metrics::counter!(L2_ERRORS, "kind" => "timeout")),
            l2_skipped: Count::new(metrics::counter!(L2_ERRORS, "kind" => "skipped")),
            sync_timeouts: Count::new(metrics::counter!(SYNC_TIMEOUTS)),
            bus_subscribes: AtomicU64::new(0),
            bus_connected: AtomicBool::new(bus_connected),
            l1_gauges: Every::after_one(std::time::Duration::from_secs(1)),
            sync_warning: Every::at_once(std::time::Duration::from_secs(10)),
            born: std::time::Instant::now(),
        }
    }

    fn with<R>(&self, label: &str, f: impl FnOnce(&LabelCounters) -> R) -> R {
        {
            // A poisoned lock only means a panic elsewhere while holding it; the map is intact.
            let map = self.labels.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = map.get(label) {
                return f(c);
            }
        }
        let mut map = self.labels.write().unwrap_or_else(|e| e.into_inner());
        let c = map
            .entry(label.into())
            .or_insert_with(|| LabelCounters::new(label));
        f(c)
    }

    pub(crate) fn hit(&self, layer: Layer, label: &str) {
        self.with(label, |c| match layer {
            Layer::L1 => c.l1_hits.add(1),
            Layer::L2 => c.l2_hits.add(1),
        });
    }

    pub(crate) fn miss(&self, layer: Layer, label: &str) {
        self.with(label, |c| match layer {
            Layer::L1 => c.l1_misses.add(1),
            Layer::L2 => c.l2_misses.add(1),
        });
    }

    pub(crate) fn fill(&self, label: &str, outcome: FillOutcome, took: Duration) {
        self.with(label, |c| {
            c.fills[outcome as usize].add(1);
            c.fill_micros
                .fetch_add(took.as_micros().min(u64::MAX as u128) as u64, Relaxed);
            c.fill_seconds.record(took.as_secs_f64());
        });
    }

    pub(crate) fn coalesced(&self, label: &str) {
        self.with(label, |c| c.coalesced.add(1));
    }

    pub(crate) fn stale_served(&self, label: &str) {
        self.with(label, |c| c.stale_served.add(1));
    }

    pub(crate) fn behind_own(&self, label: &str) {
        self.with(label, |c| c.behind_own.add(1));
    }

    pub(crate) fn primed(&self, label: &str) {
        self.with(label, |c| c.primed.add(1));
    }

    /// `label` may come from a bus message, written by another instance's caller.
    pub(crate) fn invalidation(&self, label: &str) {
        self.with(label, |c| c.invalidations.add(1));
    }

    pub(crate) fn l2_error(&self, timeout: bool) {
        if timeout {
            self.l2_timeouts.add(1);
        } else {
            self.l2_errors.add(1);
        }
    }

    pub(crate) fn sync_timeout(&self) {
        self.sync_timeouts.add(1);
    }

    /// Whether an unacknowledged barrier should be logged now (at most once every 10 s).
    pub(crate) fn sync_warning_due(&self) -> bool {
        self.sync_warning.claim(self.born)
    }

    pub(crate) fn l2_skipped(&self) {
        self.l2_skipped.add(1);
    }

    pub(crate) fn breaker(&self, state: BreakerState) {
        let v = match state {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        };
        metrics::gauge!(BREAKER_STATE).set(v);
    }

    pub(crate) fn bus(&self, connected: bool) {
        if connected {
            self.bus_subscribes.fetch_add(1, Relaxed);
        }
        self.bus_connected.store(connected, Relaxed);
        metrics::gauge!(BUS_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    }

    pub(crate) fn bus_connected(&self) -> bool {
        self.bus_connected.load(Relaxed)
    }

    /// Sets the L1 gauges at most once a second: measuring L1 locks each of its shards, too
    /// much to do on every store. (The snapshot always measures.)
    pub(crate) fn maybe_l1_size(&self, measure: impl FnOnce() -> (u64, u64)) {
        if self.l1_gauges.claim(self.born) {
            let (entries, bytes) = measure();
            self.l1_size(entries, bytes);
        }
    }

    pub(crate) fn l1_size(&self, entries: u64, bytes: u64) {
        metrics::gauge!(L1_ENTRIES).set(entries as f64);
        metrics::gauge!(L1_BYTES).set(bytes as f64);
    }

    /// The counters; the caller fills in the current state (breaker, L1 size).
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let map = self.labels.read().unwrap_or_else(|e| e.into_inner());
        StatsSnapshot {
            labels: map
                .iter()
                .map(|(label, c)| (label.to_string(), c.snapshot()))
                .collect(),
            l2_errors: self.l2_errors.get(),
            l2_timeouts: self.l2_timeouts.get(),
            l2_skipped: self.l2_skipped.get(),
            sync_timeouts: self.sync_timeouts.get(),
            bus_connected: self.bus_connected(),
            bus_subscribes: self.bus_subscribes.load(Relaxed),
            ..StatsSnapshot::default()
        }
    }

    pub(crate) fn reset(&self) {
        let map = self.labels.read().unwrap_or_else(|e| e.into_inner());
        for c in map.values() {
            c.reset();
        }
        self.l2_errors.reset();
        self.l2_timeouts.reset();
        self.l2_skipped.reset();
        self.sync_timeouts.reset();
        self.bus_subscribes.store(0, Relaxed);
    }
}
