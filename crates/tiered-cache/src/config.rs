//! Configuration: per-label [`Policy`] and the moka-style [`CacheBuilder`].
//! Never touches the network itself; `build` wires the parts together and starts the bus.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::fill::{Condition, StoreCondition};

/// How long entries of a namespace live, per layer, and whether stale values may be served.
///
/// Selected by the namespace's label ([`CacheBuilder::policy`]), else the default policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub(crate) ttl: Duration,
    pub(crate) l1_ttl: Duration,
    pub(crate) jitter: Duration,
    pub(crate) stale_grace: Option<Duration>,
    pub(crate) l2: bool,
    pub(crate) settle: Duration,
}

impl Policy {
    /// Entries live `ttl` in L2 and at most `min(ttl, 10 s)` in L1, without jitter or fail-safe.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            l1_ttl: ttl.min(Duration::from_secs(10)),
            jitter: Duration::ZERO,
            stale_grace: None,
            l2: true,
            settle: Duration::ZERO,
        }
    }

    /// Time to live in L1 (capped at the L2 TTL when stored). A short L1 TTL bounds how long an
    /// instance can serve a value if an invalidation message is lost in a way the bus cannot see.
    pub fn l1_ttl(mut self, l1_ttl: Duration) -> Self {
        self.l1_ttl = l1_ttl;
        self
    }

    /// A random extra lifetime in `0..=jitter` added to each stored entry (in L1 too, but never
    /// past the L2 lifetime), so entries filled together do not all expire (and refill) together.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Fail-safe: keep expired L1 entries `grace` longer and serve one if the fill fails or times
    /// out. Never serves a value across an invalidation (its key has an older generation).
    /// L2 entries are not kept longer: the grace applies to what this instance holds.
    pub fn fail_safe(mut self, grace: Duration) -> Self {
        self.stale_grace = Some(grace);
        self
    }

    /// Keep values of this label in L1 only, never in L2: for a local copy of something whose
    /// source of truth already is in Redis (e.g. sessions), where an L2 copy would only double
    /// it. Invalidations still go through Redis and the bus, so every instance drops its copy.
    pub fn local_only(mut self) -> Self {
        self.l2 = false;
        self
    }

    /// Coalesce invalidations that carry a position: [`invalidate_at`] with a position above 0
    /// no longer moves the generation (dropping every entry at once); it records the position,
    /// and entries read at a lower position stay servable for up to `window` after this
    /// instance learned of it, except to a reader whose own changes they miss
    /// ([`get_or_fill_after`]). A namespace written many times a second then refills each key
    /// about once per window instead of after every write, and readers other than the writer
    /// see a change at most `window` (plus the bus' delivery time) late. Default: zero (every
    /// invalidation drops the entries at once). [`invalidate`] (no position) always does.
    ///
    /// [`invalidate_at`]: crate::TieredCache::invalidate_at
    /// [`invalidate`]: crate::TieredCache::invalidate
    /// [`get_or_fill_after`]: crate::TieredCache::get_or_fill_after
    pub fn settle(mut self, window: Duration) -> Self {
        self.settle = window;
        self
    }
}

impl Default for Policy {
    /// 60 s in L2, 10 s in L1, 5 s jitter, no fail-safe.
    fn default() -> Self {
        Policy::new(Duration::from_secs(60)).jitter(Duration::from_secs(5))
    }
}

/// Builder for [`TieredCache`](crate::TieredCache), e.g.
/// `TieredCache::builder().l1_max_bytes(64 << 20).redis_url("redis://127.0.0.1/").build().await?`.
#[derive(Clone, Debug)]
pub struct CacheBuilder {
    pub(crate) l1_max_bytes: u64,
    pub(crate) default_policy: Policy,
    pub(crate) policies: HashMap<&'static str, Policy>,
    pub(crate) redis_url: Option<String>,
    pub(crate) key_prefix: String,
    pub(crate) l2_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) breaker_failures: u32,
    pub(crate) breaker_open_for: Duration,
    pub(crate) fill_timeout: Duration,
    pub(crate) untrusted_l1_max_age: Duration,
    pub(crate) generation_max_age: Duration,
    pub(crate) bus_ping_interval: Duration,
    pub(crate) condition: Option<Condition>,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self {
            l1_max_bytes: 64 << 20,
            default_policy: Policy::default(),
            policies: HashMap::new(),
            redis_url: None,
            key_prefix: "tc:".to_owned(),
            l2_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(250),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(1),
            fill_timeout: Duration::from_secs(5),
            untrusted_l1_max_age: Duration::from_secs(1),
            generation_max_age: Duration::from_secs(60),
            bus_ping_interval: Duration::from_millis(500),
            condition: None,
        }
    }
}

impl CacheBuilder {
    /// Upper bound of L1 in bytes (keys + values + a fixed per-entry overhead). Default 64 MiB.
    /// 0 turns L1 off: every lookup goes to L2 (and values of [`Policy::local_only`] labels are
    /// not kept at all).
    pub fn l1_max_bytes(mut self, bytes: u64) -> Self {
        self.l1_max_bytes = bytes;
        self
    }

    /// Policy for labels without their own. Default: [`Policy::default`].
    pub fn default_policy(mut self, policy: Policy) -> Self {
        self.default_policy = policy;
        self
    }

    /// Policy for every namespace with this label.
    pub fn policy(mut self, label: &'static str, policy: Policy) -> Self {
        self.policies.insert(label, policy);
        self
    }

    /// Redis URL for L2, generations and the invalidation bus. Unset: L1 only, one instance.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Prefix of every Redis key and of the bus channel (default `"tc:"`); must not contain
    /// `{` or `}` (they would move the hash tag).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Deadline of one Redis call, after which it counts as a failure and is skipped.
    /// Default 100 ms.
    pub fn l2_timeout(mut self, timeout: Duration) -> Self {
        self.l2_timeout = timeout;
        self
    }

    /// Deadline of one connection attempt to Redis. Default 250 ms.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The breaker opens after `failures` consecutive Redis failures and lets one probe through
    /// after `open_for`; the probe's success closes it. Default 5 and 1 s.
    pub fn breaker(mut self, failures: u32, open_for: Duration) -> Self {
        self.breaker_failures = failures.max(1);
        self.breaker_open_for = open_for;
        self
    }

    /// Deadline of one `fill`; past it every waiter gets [`CacheError::FillTimeout`](crate::CacheError::FillTimeout). Default 5 s.
    pub fn fill_timeout(mut self, timeout: Duration) -> Self {
        self.fill_timeout = timeout;
        self
    }

    /// While a namespace's generation cannot be confirmed (the bus is down *and* Redis does not
    /// answer), L1 entries of it older than this are not served: they may have missed another
    /// instance's invalidation. Default 1 s. (While Redis answers, the generation is simply
    /// re-read, and L1 stays fully usable.)
    pub fn untrusted_l1_max_age(mut self, age: Duration) -> Self {
        self.untrusted_l1_max_age = age;
        self
    }

    /// How long a generation read from Redis is used before it is read again, a backstop for
    /// a bus message lost without the subscription dropping. Default 60 s. Also how long a
    /// namespace must go without a lookup before the generation mirror may forget it (which
    /// keeps the mirror's size proportional to the namespaces in use, not to all ever seen).
    pub fn generation_max_age(mut self, age: Duration) -> Self {
        self.generation_max_age = age;
        self
    }

    /// How often the bus pings its subscription connection to notice a silent disconnect.
    /// Default 500 ms.
    pub fn bus_ping_interval(mut self, interval: Duration) -> Self {
        self.bus_ping_interval = interval;
        self
    }

    /// A condition every filled value must also meet to be stored (see [`StoreCondition`]),
    /// e.g. "read from a source that was healthy during the whole fill". The built-in rules
    /// ([`Filled::uncacheable`](crate::Filled::uncacheable),
    /// [`Filled::at_position`](crate::Filled::at_position)) apply first.
    pub fn store_condition(mut self, condition: impl StoreCondition) -> Self {
        self.condition = Some(Condition(Arc::new(condition)));
        self
    }

    /// Builds the cache. With a Redis URL it also starts the invalidation bus and waits (at
    /// most the connect timeout) for its first subscription, so a healthy start trusts its
    /// generations at once; an unreachable Redis is not an error, the cache starts degraded
    /// and recovers by itself. Must run inside a Tokio runtime.
    pub async fn build(self) -> Result<crate::TieredCache, crate::BuildError> {
        crate::TieredCache::from_builder(self).await
    }
}
