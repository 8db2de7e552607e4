#![doc = include_str!("../README.md")]
//!
//! # Module map
//! `key` (names and rendering), `generations` (the local mirror of namespace generations),
//! `l1` (in-process store), `l2` (every Redis command), `bus` (pub/sub invalidations),
//! `flight` (single flight), `fill` (the caller's seam), `breaker`, `stats`, `config`, `error`.
//! This file wires them into [`TieredCache`]; it never talks to Redis directly.
#![warn(missing_docs)]

mod breaker;
mod bus;
mod config;
mod error;
mod feed;
mod fence;
mod fill;
mod flight;
mod generations;
mod key;
mod l1;
mod l2;
mod stats;

use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use bytes::Bytes;
use rand::Rng;
use tokio::sync::oneshot;

pub use config::{CacheBuilder, Policy};
pub use error::{BuildError, CacheError};
pub use feed::Feed;
pub use fill::{FillContext, Filled, StoreCondition};
pub use key::{Key, Namespace};
pub use stats::{
    BreakerState, FillOutcome, Health, L2Status, LabelStats, LayerStats, StatsSnapshot,
};

use breaker::Breaker;
use fence::Fences;
use fill::Condition;
use flight::{Flights, Joined, Outcome};
use generations::{Generations, Lookup, Resolved};
use key::{L1Key, L1KeyRef};
use l1::L1;
use l2::{Stored, L2};
use stats::{Layer, Stats};

/// A two-tier cache-aside: L1 in this process, L2 in Redis (optional), invalidated per
/// namespace on every instance. Cheap to clone (all clones share one cache).
///
/// See the [crate documentation](crate) for the model and an example.
#[derive(Clone)]
pub struct TieredCache {
    inner: Arc<Inner>,
    /// Dropping the last clone stops the bus task.
    _bus: Option<Arc<oneshot::Sender<()>>>,
}

pub(crate) struct Inner {
    pub(crate) l1: L1,
    pub(crate) l2: Option<L2>,
    pub(crate) gens: Generations,
    pub(crate) stats: Stats,
    /// Identifies this cache's own messages on the bus.
    pub(crate) instance: u64,
    flights: Arc<Flights>,
    default_policy: Policy,
    policies: HashMap<&'static str, Policy>,
    prefix: String,
    fill_timeout: Duration,
    untrusted_l1_max_age: Duration,
    condition: Option<Condition>,
    /// Namespaces invalidated locally while Redis was unreachable, by escaped name: the
    /// invalidation is replayed in Redis (and so reaches the other instances) when it answers.
    pending: Mutex<HashMap<Box<str>, Namespace>>,
    /// Keys deleted or overwritten lately: fills that started before must not keep their value.
    pub(crate) fences: Fences,
    pub(crate) acks: bus::Acks,
    sync_timeout: Duration,
    /// Views kept beside the cache from the bus' change records, once attached.
    pub(crate) feed: std::sync::OnceLock<Arc<dyn Feed>>,
    /// Who numbered which records (see `feed`).
    pub(crate) publishers: feed::Publishers,
    /// Held while the bus state and the feed's trust change together, so the feed never
    /// hears them out of order.
    trust_lock: Mutex<()>,
}

impl TieredCache {
    /// A builder with the defaults (64 MiB L1, no Redis, [`Policy::default`]).
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    pub(crate) async fn from_builder(b: CacheBuilder) -> Result<Self, BuildError> {
        if b.key_prefix.contains(['{', '}']) {
            return Err(BuildError::KeyPrefix(b.key_prefix));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let l2 = match &b.redis_url {
            None => None,
            Some(url) => {
                let client = redis::Client::open(url.as_str()).map_err(BuildError::RedisUrl)?;
                let breaker = Breaker::new(b.breaker_failures, b.breaker_open_for);
                let channel = format!("{}invalidations", b.key_prefix);
                Some(
                    L2::new(client, b.l2_timeout, b.connect_timeout, breaker, channel)
                        .map_err(BuildError::RedisUrl)?,
                )
            }
        };
        let redis = l2.is_some();
        let stats = Stats::new(!redis);
        stats.breaker(BreakerState::Closed);
        let inner = Arc::new(Inner {
            l1: L1::new(b.l1_max_bytes),
            l2,
            gens: Generations::new(redis, b.generation_max_age),
            stats,
            instance: rand::rng().random(),
            flights: Arc::default(),
            default_policy: b.default_policy,
            policies: b.policies,
            prefix: b.key_prefix,
            fill_timeout: b.fill_timeout,
            untrusted_l1_max_age: b.untrusted_l1_max_age,
            condition: b.condition,
            pending: Mutex::default(),
            fences: Fences::new(b.fill_timeout),
            acks: bus::Acks::default(),
            sync_timeout: b.l2_timeout,
            feed: std::sync::OnceLock::new(),
            publishers: feed::Publishers::default(),
            trust_lock: Mutex::new(()),
        });
        let mut cache = TieredCache {
            inner: inner.clone(),
            _bus: None,
        };
        if let Some(l2) = &inner.l2 {
            let (stop_tx, stop_rx) = oneshot::channel();
            let (ready_tx, ready_rx) = oneshot::channel();
            // Connect the command connection while the bus subscribes, so the first calls do
            // not pay (or time out on) the connection.
            let warm_up = l2.ping_within(b.connect_timeout);
            bus::spawn(inner.clone(), b.bus_ping_interval, stop_rx, ready_tx);
            let _ = tokio::join!(
                warm_up,
                tokio::time::timeout(b.connect_timeout * 2, ready_rx)
            );
            cache._bus = Some(Arc::new(stop_tx));
        }
        Ok(cache)
    }

    /// The value of `key`: from L1, else from L2 (copied into L1), else from `fill`, whose value
    /// is stored in both unless the namespace was invalidated while it ran.
    ///
    /// Concurrent misses of one key on this instance run `fill` once; the others wait for it and
    /// get its value or its error. `fill` runs in its own task (so a caller that gives up does
    /// not cancel it for the others) and is cancelled after the fill timeout.
    ///
    /// Redis trouble never becomes an error here; only the fill's own failure does, and with a
    /// [fail-safe](Policy::fail_safe) policy a recently expired value is served instead.
    pub async fn get_or_fill<F, Fut, T, E>(
        &self,
        key: &Key,
        fill: F,
    ) -> Result<Bytes, CacheError<E>>
    where
        F: FnOnce(FillContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Into<Filled>,
        E: Send + Sync + 'static,
    {
        self.get_or_fill_after(key, 0, fill).await
    }

    /// [`get_or_fill`](Self::get_or_fill) for a reader whose own changes to the namespace go up
    /// to position `own` (e.g. the commit position of its session's latest write to what the
    /// namespace caches): the value returned reflects them. In a namespace whose invalidations
    /// [settle](Policy::settle), an entry read before one of them may still be served to
    /// others for the settle window, but never to a reader whose `own` it misses; that reader's
    /// fill reads at or after `own`. Without settling, or with `own` at or below every
    /// invalidation's position, this is `get_or_fill`.
    pub async fn get_or_fill_after<F, Fut, T, E>(
        &self,
        key: &Key,
        own: u64,
        fill: F,
    ) -> Result<Bytes, CacheError<E>>
    where
        F: FnOnce(FillContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Into<Filled>,
        E: Send + Sync + 'static,
    {
        let inner = &self.inner;
        let label = key.namespace().label();
        let now = Instant::now();
        let resolved = inner.resolve(key.namespace(), now).await;
        let need = resolved.need(own);
        let stale = match inner.l1_get(key, &resolved, now, need) {
            l1::Lookup::Fresh(v) => {
                inner.stats.hit(Layer::L1, label);
                // A hit never waits on anything, so a task looping over hits would never yield
                // and could starve the runtime's timers and I/O (seen in the race test: both
                // workers spinning until the entries expired). Spending tokio's cooperative
                // budget, as its own channels and sockets do, yields every so often.
                tokio::task::coop::consume_budget().await;
                return Ok(v);
            }
            l1::Lookup::Behind { position } => {
                // Other readers would have been served it: only the reader's own change
                // makes this a miss.
                if position >= resolved.need(0) {
                    inner.stats.behind_own(label);
                }
                None
            }
            l1::Lookup::Stale(v) => Some(v),
            l1::Lookup::Miss => None,
        };
        inner.stats.miss(Layer::L1, label);
        let data_key = key::data_key(&inner.prefix, key, resolved.generation);
        if let Some(v) = inner.l2_get(key, &data_key, &resolved, need).await {
            return Ok(v);
        }
        match Inner::fly(inner, key, data_key, resolved, own, fill).await {
            Ok(v) => Ok(v),
            Err(e) => match stale {
                Some(v) => {
                    tracing::debug!(error = %FillFailure(&e), "fill failed, serving stale value");
                    inner.stats.stale_served(label);
                    Ok(v)
                }
                None => Err(e),
            },
        }
    }

    /// The cached value of `key` (L1, else L2), without filling. `None` on a miss.
    pub async fn get(&self, key: &Key) -> Option<Bytes> {
        let inner = &self.inner;
        let label = key.namespace().label();
        let now = Instant::now();
        let resolved = inner.resolve(key.namespace(), now).await;
        let need = resolved.need(0);
        if let l1::Lookup::Fresh(v) = inner.l1_get(key, &resolved, now, need) {
            inner.stats.hit(Layer::L1, label);
            tokio::task::coop::consume_budget().await; // See `get_or_fill`.
            return Some(v);
        }
        inner.stats.miss(Layer::L1, label);
        let data_key = key::data_key(&inner.prefix, key, resolved.generation);
        inner.l2_get(key, &data_key, &resolved, need).await
    }

    /// Stores `value` for `key` in both layers now, under the namespace's current generation,
    /// and makes other instances drop their L1 copy of the key. For a value the caller knows to
    /// be current (e.g. just written); it is not fenced against a concurrent invalidation the
    /// way a fill is. A fill of the key already running does not keep its (older) value in L1;
    /// if it overwrote this one there, the key simply misses until the next fill.
    pub async fn set(&self, key: &Key, value: impl Into<Bytes>) {
        let inner = &self.inner;
        let value = value.into();
        let resolved = inner.resolve(key.namespace(), Instant::now()).await;
        let label = key.namespace().label();
        let (l1_ttl, l2_ttl, grace) = inner.ttls(label);
        // A fill already running read from before this value: it must not replace it.
        inner.fences.record(key.namespace().id(), key.params());
        if let (Some(l2), true) = (&inner.l2, resolved.in_redis() && inner.policy(label).l2) {
            let data_key = key::data_key(&inner.prefix, key, resolved.generation);
            let msg = inner.dropped_message(key, resolved.generation);
            let stored = (resolved.position, &value[..]);
            l2.set(&inner.stats, &data_key, stored, l2_ttl, &msg).await;
        }
        let at = (resolved.generation, resolved.position);
        inner.l1_store(key, at, value, l1_ttl, grace);
    }

    /// Stores in L1 a value of `key` that came with another fill's result, as read at
    /// `position` by a read that started at `started`: the objects a list page shows, say,
    /// each of which is also cached on its own. It is kept only where a fill of `key` that read
    /// the same would be: at or after the namespace's latest invalidation position, and only
    /// if the key was not [`set`](Self::set) or [`delete`](Self::delete)d since `started`.
    ///
    /// L1 only: it writes nothing to Redis. It reads the namespace's generation from Redis
    /// when this instance has not used the namespace yet (as a lookup would), and stores
    /// nothing when it cannot be sure of it (Redis unreachable, the bus reconnecting). Returns
    /// whether it stored the value (counted in `tiered_cache_primed_total`).
    pub async fn prime(
        &self,
        key: &Key,
        value: impl Into<Bytes>,
        position: u64,
        started: Instant,
    ) -> bool {
        let inner = &self.inner;
        let ns = key.namespace();
        if !inner.l1.enabled() {
            return false;
        }
        let resolved = inner.resolve(ns, Instant::now()).await;
        if !resolved.fresh {
            return false;
        }
        // The rule a fill's value is stored by (`Filled::storable`): not from behind the
        // latest invalidation. A write committed after `position` but not yet announced is
        // caught as it is for a fill: the entry's position is behind it once it is.
        if position < resolved.position {
            return false;
        }
        // An invalidation that moved the generation since: the entry could never be read.
        if inner.gens.current(ns.id()) != Some(resolved.generation) {
            return false;
        }
        let (l1_ttl, _, grace) = inner.ttls(ns.label());
        let at = (resolved.generation, position);
        inner.l1_store(key, at, value.into(), l1_ttl, grace);
        // As in `store_filled`: checked after the store, so that a deletion racing it either
        // fences it here or removes it there.
        if inner.fences.since(ns.id(), key.params(), started) {
            inner.l1.remove(&L1KeyRef::new(key, resolved.generation));
            return false;
        }
        inner.stats.primed(ns.label());
        true
    }

    /// Fills `key` and stores the value (under the same rules as [`get_or_fill`](Self::get_or_fill)),
    /// whether or not it is cached: for warming or refreshing a cache without reading it. Joins a
    /// fill of the key already running instead of starting a second one.
    pub async fn warm<F, Fut, T, E>(&self, key: &Key, fill: F) -> Result<(), CacheError<E>>
    where
        F: FnOnce(FillContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Into<Filled>,
        E: Send + Sync + 'static,
    {
        let inner = &self.inner;
        let resolved = inner.resolve(key.namespace(), Instant::now()).await;
        let data_key = key::data_key(&inner.prefix, key, resolved.generation);
        Inner::fly(inner, key, data_key, resolved, 0, fill)
            .await
            .map(drop)
    }

    /// Removes `key` from both layers and from the other instances' L1. A fill of the key
    /// already running (here, or on an instance that has received the deletion) does not keep
    /// its value in L1, since it may have read what the caller just changed; it may still store
    /// it in L2. To fence fills in both layers, invalidate the namespace instead.
    pub async fn delete(&self, key: &Key) {
        let inner = &self.inner;
        let resolved = inner.resolve(key.namespace(), Instant::now()).await;
        inner.fences.record(key.namespace().id(), key.params());
        inner.l1.remove(&L1KeyRef::new(key, resolved.generation));
        if let (Some(l2), true) = (&inner.l2, resolved.in_redis()) {
            let data_key = key::data_key(&inner.prefix, key, resolved.generation);
            let msg = inner.dropped_message(key, resolved.generation);
            l2.delete(&inner.stats, &data_key, &msg).await;
        }
    }

    /// Invalidates every key of `ns` at once, in O(1): bumps its generation (in Redis, which
    /// tells every instance over the bus, and here). When this returns, no `get_or_fill` on this
    /// instance returns a value filled before the call, and fills still running will not store
    /// theirs. Other instances follow within the bus' delivery time.
    ///
    /// If Redis is unreachable the invalidation applies here at once and is replayed in Redis
    /// when it answers again (unless this process stops first).
    pub async fn invalidate(&self, ns: &Namespace) {
        self.invalidate_at(ns, 0).await
    }

    /// [`invalidate`](Self::invalidate), recording that the change behind it is at `position`
    /// in the data source (e.g. the PostgreSQL LSN of the commit). Fills of the namespace then
    /// see the highest such position in [`FillContext::position`], and a value reported
    /// [at a lower position](Filled::at_position) is returned but not stored.
    ///
    /// If the namespace's policy [settles](Policy::settle) and `position` is above 0, the
    /// generation does not move: entries read below `position` stop being served once the
    /// settle window has passed (on each instance, counted from when it learned of the
    /// invalidation), and at once to readers that pass `position` or more as their own to
    /// [`get_or_fill_after`](Self::get_or_fill_after).
    pub async fn invalidate_at(&self, ns: &Namespace, position: u64) {
        let inner = &self.inner;
        inner.stats.invalidation(ns.label());
        let settle = inner.policy(ns.label()).settle;
        let settling = position > 0 && !settle.is_zero();
        if let Some(l2) = &inner.l2 {
            let gen_key = key::generation_key(&inner.prefix, ns);
            let tail = bus::invalidation_tail(inner.instance, ns.label(), ns.id());
            // If a local invalidation is pending, this INCR (sent after it) covers it too.
            let before = inner.gens.current(ns.id());
            let epoch = inner.gens.epoch();
            if let Some((g, p)) = l2
                .invalidate(&inner.stats, &gen_key, position, settling, &tail)
                .await
            {
                let settling = settling.then_some(settle);
                inner.gens.observe(ns.id(), g, p, epoch, before, settling);
                return;
            }
            // Redis did not confirm it: a local bump (which drops everything at once, settling
            // or not) now, replayed in Redis later.
            tracing::debug!(
                namespace = ns.id(),
                "redis unavailable, invalidating locally"
            );
        } else if settling {
            inner.gens.settle_local(ns.id(), position, settle);
            return;
        }
        inner.gens.bump_local(ns.id(), position);
        if inner.l2.is_some() {
            inner
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ns.id().into(), ns.clone());
        }
    }

    /// Waits until every instance listening on the bus has applied every invalidation and
    /// deletion this instance published before the call: the read-your-writes barrier across
    /// instances, paid by the writer. A server calls it after a write's invalidations and before
    /// answering, so the client's next request, on whichever instance, finds them applied; reads
    /// then need no Redis round trip at all.
    ///
    /// One PUBLISH of a barrier message on the bus channel; every listener (Redis says how
    /// many it delivered to) acknowledges on this instance's own channel once it has applied
    /// what came before. Returns at once without Redis, while this instance's bus is down (no
    /// acknowledgement could reach it; the others' generations are re-read from Redis while
    /// theirs is), or if Redis does not take the PUBLISH; after the L2 timeout if some listener
    /// does not answer in time (counted in `tiered_cache_sync_timeouts_total`, and logged at
    /// most every 10 s: an overloaded instance, or a client that is not a cache subscribed to
    /// the channel).
    pub async fn sync_peers(&self) {
        let inner = &self.inner;
        if inner.l2.is_none() || !inner.stats.bus_connected() {
            return;
        }
        let (nonce, acked) = inner.acks.open();
        let message = bus::barrier(inner.instance, nonce);
        inner.barrier(nonce, acked, &message, true).await;
    }

    /// Whether this cache has Redis (an L2 and a bus) configured.
    pub fn has_redis(&self) -> bool {
        self.inner.l2.is_some()
    }

    /// Attaches the views kept up to date from the bus' change records ([`Feed`]); at most one
    /// per cache (`false` if one is attached already). The feed hears at once whether it can
    /// trust the bus now.
    pub fn attach_feed(&self, feed: Arc<dyn Feed>) -> bool {
        let inner = &self.inner;
        let _state = inner.trust_lock.lock().unwrap_or_else(|e| e.into_inner());
        if inner.feed.set(feed.clone()).is_err() {
            return false;
        }
        feed.trust(inner.l2.is_none() || inner.stats.bus_connected());
        true
    }

    /// Publishes a change record to every other instance's [`Feed`] and waits, as
    /// [`sync_peers`](Self::sync_peers) does, until each has applied it (the caller applies it
    /// here itself, before). `true` when every listener acknowledged it, or there is no Redis
    /// (no other instance); `false` when Redis did not take it, this instance's bus is down
    /// (no acknowledgement can reach it), or a listener did not answer within the L2 timeout.
    /// A record that was not delivered shows as a hole in this instance's numbering, which
    /// every listener notices within a heartbeat or two ([`Feed::gap`]).
    pub async fn publish(&self, payload: &str) -> bool {
        let inner = &self.inner;
        if inner.l2.is_none() {
            return true;
        }
        let seq = inner.publishers.next_seq();
        let listening = inner.stats.bus_connected();
        let (nonce, acked) = inner.acks.open();
        let message = bus::change(inner.instance, seq, nonce, payload);
        inner.barrier(nonce, acked, &message, listening).await
    }

    /// Counts a read of a view kept outside this cache (a [`Feed`]'s) under `label`: an L1 hit
    /// or miss, in the same counters as the cache's own.
    pub fn count_read(&self, label: &str, hit: bool) {
        let stats = &self.inner.stats;
        if hit {
            stats.hit(Layer::L1, label);
        } else {
            stats.miss(Layer::L1, label);
        }
    }

    /// Counts a fill of a view kept outside this cache, as the cache counts its own.
    pub fn count_fill(&self, label: &str, outcome: FillOutcome, took: Duration) {
        self.inner.stats.fill(label, outcome, took);
    }

    /// Counts an entry of a view kept outside this cache stored from another view's fill.
    pub fn count_primed(&self, label: &str) {
        self.inner.stats.primed(label);
    }

    /// Counts a miss that waited for another reader's fill of a view kept outside this cache.
    pub fn count_coalesced(&self, label: &str) {
        self.inner.stats.coalesced(label);
    }

    /// The counters since the cache was built or [`reset_stats`](Self::reset_stats) was last
    /// called, plus the current breaker, bus and L1 state.
    pub fn snapshot(&self) -> StatsSnapshot {
        let inner = &self.inner;
        let mut s = inner.stats.snapshot();
        s.breaker = inner
            .l2
            .as_ref()
            .map_or(BreakerState::Closed, L2::breaker_state);
        s.l1_entries = inner.l1.entries();
        s.l1_bytes = inner.l1.bytes();
        inner.stats.l1_size(s.l1_entries, s.l1_bytes);
        s
    }

    /// Sets every counter of [`snapshot`](Self::snapshot) back to zero (the `metrics` facade's
    /// counters are not affected: they are monotonic by contract).
    pub fn reset_stats(&self) {
        self.inner.stats.reset();
    }

    /// Checks Redis now (one PING, within the L2 timeout, outside the breaker) and reports it
    /// with the breaker and bus state.
    pub async fn health(&self) -> Health {
        let inner = &self.inner;
        let Some(l2) = &inner.l2 else {
            return Health {
                l2: L2Status::Disabled,
                l2_latency_micros: None,
                breaker: BreakerState::Closed,
                bus_connected: true,
            };
        };
        let latency = l2.ping().await;
        Health {
            l2: if latency.is_some() {
                L2Status::Up
            } else {
                L2Status::Down
            },
            l2_latency_micros: latency.map(|d| d.as_micros().min(u64::MAX as u128) as u64),
            breaker: l2.breaker_state(),
            bus_connected: inner.stats.bus_connected(),
        }
    }
}

impl std::fmt::Debug for TieredCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredCache")
            .field("redis", &self.inner.l2.is_some())
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// Displays a [`CacheError`] of any `E` (for a log line), without requiring `E: Display`.
struct FillFailure<'a, E>(&'a CacheError<E>);

impl<E> std::fmt::Display for FillFailure<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            CacheError::Fill(_) => f.write_str("fill returned an error"),
            CacheError::FillTimeout(d) => write!(f, "fill timed out after {d:?}"),
            CacheError::FillAborted => f.write_str("fill aborted"),
        }
    }
}

impl Inner {
    /// Records the bus' state and tells the feed, together (see `trust_lock`). A new
    /// subscription forgets every publisher: what they sent before it is not ours to miss.
    pub(crate) fn bus_state(&self, connected: bool) {
        let _state = self.trust_lock.lock().unwrap_or_else(|e| e.into_inner());
        if connected {
            self.publishers.reset();
        }
        self.stats.bus(connected);
        if let Some(feed) = self.feed.get() {
            feed.trust(connected);
        }
    }

    /// Publishes a barrier `message` (a `b` or a `c`) and waits for every listener's
    /// acknowledgement, within the L2 timeout. `listening`: this instance's bus is subscribed,
    /// so acknowledgements can reach it (else nothing is waited for).
    async fn barrier(
        &self,
        nonce: u64,
        acked: oneshot::Receiver<()>,
        message: &str,
        listening: bool,
    ) -> bool {
        let Some(l2) = &self.l2 else { return true };
        let wait = async {
            let listeners = l2.publish(&self.stats, l2.channel(), message).await?;
            if !listening {
                return None;
            }
            self.acks.expect(nonce, listeners);
            acked.await.ok()
        };
        let outcome = tokio::time::timeout(self.sync_timeout, wait).await;
        let heard = self.acks.close(nonce);
        match outcome {
            Ok(Some(())) => true,
            Ok(None) => false,
            Err(_) => {
                self.stats.sync_timeout();
                if self.stats.sync_warning_due() {
                    tracing::warn!(
                        acknowledged = heard,
                        timeout_ms = self.sync_timeout.as_millis() as u64,
                        "a bus barrier was not acknowledged by every subscriber in time: an \
                         instance is overloaded, or something other than a cache subscribes to \
                         the channel"
                    );
                }
                false
            }
        }
    }

    /// The generation to use for `ns` now: the mirror's if trusted, else Redis', else whatever
    /// is known locally (then `fresh` is false and only young L1 entries are served).
    async fn resolve(&self, ns: &Namespace, now: Instant) -> Resolved {
        match self.gens.lookup(ns.id(), now) {
            Lookup::Trusted(r) => r,
            Lookup::Pending(r) => self.replay(ns, r).await.unwrap_or(r),
            Lookup::Unsure(known) => {
                if let Some(l2) = &self.l2 {
                    let gen_key = key::generation_key(&self.prefix, ns);
                    // Stamped before sending: a reconnect while it is in flight makes the
                    // answer usable for this request but not trusted for later ones.
                    let epoch = self.gens.epoch();
                    if let Some((g, p)) = l2.read_generation(&self.stats, &gen_key).await {
                        return self.gens.observe(ns.id(), g, p, epoch, None, None);
                    }
                }
                known.unwrap_or_else(|| self.gens.fallback(ns.id()))
            }
        }
    }

    /// Replays a local invalidation (`local`, pending) in Redis. `None` if Redis is unreachable.
    async fn replay(&self, ns: &Namespace, local: Resolved) -> Option<Resolved> {
        let l2 = self.l2.as_ref()?;
        let gen_key = key::generation_key(&self.prefix, ns);
        let tail = bus::invalidation_tail(self.instance, ns.label(), ns.id());
        let epoch = self.gens.epoch();
        let (g, p) = l2
            .invalidate(&self.stats, &gen_key, local.position, false, &tail)
            .await?;
        let r = self
            .gens
            .observe(ns.id(), g, p, epoch, Some(local.generation), None);
        if r.fresh {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(ns.id());
        }
        Some(r)
    }

    /// Replays every pending local invalidation (the bus calls this when Redis is back).
    pub(crate) async fn replay_pending(&self) {
        let pending: Vec<Namespace> = {
            let map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if map.is_empty() {
                return;
            }
            map.values().cloned().collect()
        };
        for ns in pending {
            match self.gens.lookup(ns.id(), Instant::now()) {
                Lookup::Pending(local) => {
                    if self.replay(&ns, local).await.is_none() {
                        return; // Redis is still unreachable; try again later.
                    }
                }
                // Already covered by a later invalidation that reached Redis.
                _ => {
                    self.pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(ns.id());
                }
            }
        }
    }

    /// An L1 lookup of an entry read at `need` or later.
    fn l1_get(&self, key: &Key, resolved: &Resolved, now: Instant, need: u64) -> l1::Lookup {
        let max_age = (!resolved.fresh).then_some(self.untrusted_l1_max_age);
        self.l1
            .get(&L1KeyRef::new(key, resolved.generation), now, max_age, need)
    }

    /// An L2 lookup of an entry read at `need` or later, copied into L1 on a hit. `None` on a
    /// miss or when Redis is unavailable.
    async fn l2_get(
        &self,
        key: &Key,
        data_key: &str,
        resolved: &Resolved,
        need: u64,
    ) -> Option<Bytes> {
        let l2 = self.l2.as_ref()?;
        let label = key.namespace().label();
        if !resolved.in_redis() || !self.policy(label).l2 {
            // A local generation (nothing in Redis is stored under it), or a local-only label.
            return None;
        }
        match l2.get(&self.stats, data_key).await.flatten() {
            Some((position, v)) if position >= need => {
                self.stats.hit(Layer::L2, label);
                let (l1_ttl, _, grace) = self.ttls(label);
                // Same lease rule as a fill: an invalidation since the lookup means the value
                // may be older than it, so it is returned (the caller started before the
                // invalidation) but not kept.
                if self.gens.current(key.namespace().id()) == Some(resolved.generation) {
                    self.l1_store(
                        key,
                        (resolved.generation, position),
                        v.clone(),
                        l1_ttl,
                        grace,
                    );
                }
                Some(v)
            }
            _ => {
                self.stats.miss(Layer::L2, label);
                None
            }
        }
    }

    /// Joins or leads the single flight of `data_key` for a reader whose own changes go up to
    /// `own`, and returns its outcome.
    async fn fly<F, Fut, T, E>(
        self: &Arc<Self>,
        key: &Key,
        data_key: String,
        resolved: Resolved,
        own: u64,
        fill: F,
    ) -> Result<Bytes, CacheError<E>>
    where
        F: FnOnce(FillContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Into<Filled>,
        E: Send + Sync + 'static,
    {
        // The fill reads at or after the latest invalidation and the reader's own changes. A
        // reader needing a later position must not wait for a fill reading at an earlier one,
        // so the position is part of the flight's name.
        let position = resolved.position.max(own);
        let flight = format!("{data_key}@{position}");
        let waiter = match self.flights.join(TypeId::of::<E>(), flight) {
            Joined::Waiter(waiter) => {
                self.stats.coalesced(key.namespace().label());
                waiter
            }
            Joined::Leader(leader, waiter) => {
                let inner = self.clone();
                let ctx = FillContext {
                    key: key.clone(),
                    generation: resolved.generation,
                    position,
                };
                // A task of its own: the fill must finish (and wake the waiters) even if the
                // caller that started it is cancelled.
                tokio::spawn(async move {
                    let outcome = inner.run_fill(ctx, data_key, resolved, fill).await;
                    leader.finish(outcome);
                });
                waiter
            }
        };
        match waiter.wait().await {
            Some(Outcome::Value(v)) => Ok(v),
            Some(Outcome::Failed(e)) => match e.downcast::<E>() {
                Ok(e) => Err(CacheError::Fill(e)),
                // Unreachable: flights are keyed by the error type.
                Err(_) => Err(CacheError::FillAborted),
            },
            Some(Outcome::TimedOut(d)) => Err(CacheError::FillTimeout(d)),
            None => Err(CacheError::FillAborted),
        }
    }

    async fn run_fill<F, Fut, T, E>(
        &self,
        ctx: FillContext,
        data_key: String,
        resolved: Resolved,
        fill: F,
    ) -> Outcome
    where
        F: FnOnce(FillContext) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        T: Into<Filled>,
        E: Send + Sync + 'static,
    {
        let label = ctx.key.namespace().label();
        // Deletions from now on fence this fill (see `store_filled`).
        let started = Instant::now();
        let result = tokio::time::timeout(self.fill_timeout, fill(ctx.clone()))
            .await
            .map(|r| r.map(Into::<Filled>::into));
        let took = started.elapsed();
        match result {
            Err(_) => {
                self.stats.fill(label, FillOutcome::Timeout, took);
                tracing::warn!(label, timeout = ?self.fill_timeout, "cache fill timed out");
                Outcome::TimedOut(self.fill_timeout)
            }
            Ok(Err(e)) => {
                self.stats.fill(label, FillOutcome::Error, took);
                Outcome::Failed(Arc::new(e))
            }
            Ok(Ok(filled)) => {
                let allowed = filled.storable(&ctx)
                    && self
                        .condition
                        .as_ref()
                        .is_none_or(|c| c.0.may_store(&ctx, &filled));
                // A value that says nothing of its position was read at or after the fill's.
                let read_at = filled.position.unwrap_or(ctx.position);
                let outcome = if allowed {
                    let value = (read_at, &filled.value);
                    self.store_filled(&ctx, &data_key, (resolved, started), value)
                        .await
                } else {
                    FillOutcome::Refused
                };
                self.stats.fill(label, outcome, took);
                Outcome::Value(filled.value)
            }
        }
    }

    /// Stores a fill's value if the namespace is still at the generation the fill started
    /// under: atomically in Redis (the script compares and writes), then locally.
    ///
    /// What actually keeps a late value from being served is that the generation is part of
    /// the key: a fill that started under `g` can only write `key@g`, which no lookup made
    /// after the bump to `g+1` reads. (Removing both checks below leaves the race test green
    /// and fails only the test that counts discarded fills.) The checks are the memcached-style
    /// lease on top of that: they keep dead-generation writes out of L2, where an instance
    /// whose bus message is still in flight would find them, and out of L1 memory; and a
    /// refused store tells us our generation is stale, so it is re-read.
    async fn store_filled(
        &self,
        ctx: &FillContext,
        data_key: &str,
        (resolved, started): (Resolved, Instant),
        (read_at, value): (u64, &Bytes),
    ) -> FillOutcome {
        let ns = ctx.key.namespace();
        let (l1_ttl, l2_ttl, grace) = self.ttls(ns.label());
        let in_l2 = resolved.in_redis() && self.policy(ns.label()).l2;
        if let (Some(l2), true) = (&self.l2, in_l2) {
            let gen_key = key::generation_key(&self.prefix, ns);
            let stored = l2
                .store_if_generation(
                    &self.stats,
                    &gen_key,
                    data_key,
                    resolved.generation,
                    (read_at, &value[..]),
                    l2_ttl,
                )
                .await;
            if stored == Stored::Superseded {
                self.gens.distrust(ns.id());
                return FillOutcome::Discarded;
            }
        }
        // The local half of the lease. An invalidation here moves the mirror before it
        // returns: if it did so before this check, we discard; if after, the entry goes in
        // under the old generation, which no lookup after the invalidation uses.
        if self.gens.current(ns.id()) != Some(resolved.generation) {
            return FillOutcome::Discarded;
        }
        let at = (resolved.generation, read_at);
        self.l1_store(&ctx.key, at, value.clone(), l1_ttl, grace);
        // The key was deleted or overwritten while this fill ran: what it read may be what that
        // replaced. Checked after the store, and fences are recorded before the removal they
        // announce, so whichever comes first, the value does not stay.
        if self.fences.since(ns.id(), ctx.key.params(), started) {
            self.l1
                .remove(&L1KeyRef::new(&ctx.key, resolved.generation));
            return FillOutcome::Discarded;
        }
        FillOutcome::Stored
    }

    /// Stores `value` in L1 under `generation`, as read at `position`.
    fn l1_store(
        &self,
        key: &Key,
        (generation, position): (u64, u64),
        value: Bytes,
        ttl: Duration,
        grace: Duration,
    ) {
        let now = Instant::now();
        let fresh_until = now + ttl;
        self.l1.insert(
            L1Key::new(key, generation),
            l1::Entry {
                value,
                fresh_until,
                stale_until: fresh_until + grace,
                stored_at: now,
                position,
            },
        );
        self.stats
            .maybe_l1_size(|| (self.l1.entries(), self.l1.bytes()));
    }

    fn policy(&self, label: &str) -> &Policy {
        self.policies.get(label).unwrap_or(&self.default_policy)
    }

    /// `(L1 TTL, L2 TTL, fail-safe grace)` for one stored entry, jitter included.
    fn ttls(&self, label: &str) -> (Duration, Duration, Duration) {
        let p = self.policy(label);
        let jitter = if p.jitter.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..=p.jitter)
        };
        let l2_ttl = p.ttl + jitter;
        let l1_ttl = (p.l1_ttl + jitter).min(l2_ttl);
        (l1_ttl, l2_ttl, p.stale_grace.unwrap_or(Duration::ZERO))
    }

    fn dropped_message(&self, key: &Key, generation: u64) -> String {
        bus::dropped(
            generation,
            self.instance,
            key.namespace().id(),
            key.params(),
        )
    }
}
