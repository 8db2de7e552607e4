//! The read cache of the API: every GET of tenant data (objects, list pages
//! with their totals, dashboard stats) and every session lookup goes through
//! here, and every write says what it changed.
//!
//! Keys are `{tenant}/{view}:{generation}:v2:{params}`: one namespace (and one
//! generation, so one O(1) invalidation) per tenant and view, where a view is
//! a resource's lists, a sixteenth of a resource's objects (by id), or the
//! dashboard. The tenant is the Redis hash tag; metric labels name the view
//! (never the tenant, nor the objects' sixteenth).
//! Values are the response bytes behind their ETag ([`Tagged`]).
//!
//! The consistency rules of the contract rest on four things:
//! - a write invalidates what it changed *before* it answers, recording its
//!   commit position ([`ApiCache::written`]), and the session records it per
//!   view;
//! - every entry carries the position it was read at; an entry behind an
//!   invalidation is served to other sessions for at most the settle window
//!   (`STRATA_CACHE_SETTLE_MS`, within the contract's 1 s), and never to a
//!   session whose own write it misses ([`ApiCache::read`]'s `own`);
//! - a fill reads at or after the namespace's latest invalidation position
//!   (a replica that has not replayed it is not used), so a read after a
//!   write never fills from before it, and a fill that raced the write
//!   stores a value whose position gives it away (tiered-cache's checks);
//! - a write (or a logout) passes the bus barrier before it answers
//!   ([`ApiCache::sync_peers`]): every instance has then applied its
//!   invalidations, so the client's next request, wherever it lands, looks
//!   nothing up before them. Reads cost no Redis round trip.

pub mod live;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_db::{Db, DbError, Lsn, ReadCtx};
use tiered_cache::{
    Bytes, CacheError, FillContext, Filled, Namespace, Policy, StatsSnapshot, TieredCache,
};
use uuid::Uuid;

use crate::auth::store::StoreError;
use crate::config::{CacheMode, Config};
use crate::http::etag::Tagged;
use crate::http::AppError;

/// Why a fill's load failed: the database, or (never in practice) turning
/// what it read into JSON.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("encoding a response: {0}")]
    Encode(#[from] serde_json::Error),
}

impl LoadError {
    pub fn to_app_error(&self) -> AppError {
        match self {
            LoadError::Db(e) => AppError::from_db_ref(e),
            LoadError::Encode(e) => AppError::Internal(anyhow::anyhow!("{e}")),
        }
    }
}

/// What a view's loader returns: what it read, `None` for "no such object".
pub type Loaded = Result<Option<Read>, LoadError>;

/// What a view's loader read: the response JSON and, for a list page, the
/// objects the page shows, each as its own response JSON. Those are cached
/// as their objects' views too ([`TieredCache::prime`]), under the same rules
/// as a fill of them: opening an object seen in a list reads no database.
pub struct Read {
    json: Vec<u8>,
    shows: Option<Shown>,
}

/// The objects of resource `name` a list page shows: `(id, JSON)`.
struct Shown {
    name: &'static str,
    objects: Vec<(Uuid, Vec<u8>)>,
}

impl Read {
    /// A page of resource `name` showing `objects` (`(id, JSON)`).
    pub fn with_objects(json: Vec<u8>, name: &'static str, objects: Vec<(Uuid, Vec<u8>)>) -> Read {
        Read {
            json,
            shows: Some(Shown { name, objects }),
        }
    }

    /// The response JSON alone.
    pub fn into_json(self) -> Vec<u8> {
        self.json
    }
}

impl From<Vec<u8>> for Read {
    fn from(json: Vec<u8>) -> Read {
        Read { json, shows: None }
    }
}

/// The cache parameters of object `id` within its view ([`View::object`]).
pub fn object_params(id: Uuid) -> String {
    format!("id={id}")
}

/// A cached view of a tenant's data; each is one namespace per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// List pages (and totals) of a resource.
    List(&'static str),
    /// Single objects of a resource whose ids fall in one bucket (of
    /// [`OBJECT_BUCKETS`]; see [`View::object`]).
    Object(&'static str, u8),
    /// The dashboard stats.
    Dashboard,
}

/// A resource's cached objects are spread over this many namespaces per
/// tenant by id, so a change of one object drops 1/16 of them, not all:
/// object reads keep hitting on a tenant that writes all the time. Still
/// O(1) per write; a change of many rows (a delete's `SET NULL` cascade)
/// drops every bucket ([`View::all_objects`]).
pub const OBJECT_BUCKETS: u8 = 16;

/// Resource names and their metric labels, fixed at compile time (labels
/// must be `'static` and few).
const RESOURCES: &[(&str, &str, &str)] = &[
    ("contacts", "contacts.list", "contacts.object"),
    ("deals", "deals.list", "deals.object"),
    ("tasks", "tasks.list", "tasks.object"),
    ("invoices", "invoices.list", "invoices.object"),
    ("orders", "orders.list", "orders.object"),
];
const DASHBOARD: &str = "dashboard";
/// The label of the session copies (not data: left out of hit ratios).
pub const SESSIONS: &str = "sessions";
/// Sessions are spread over this many namespaces, so a logout drops 1/64 of
/// the cached sessions (and costs one generation key in Redis, not one per
/// session).
const SESSION_SHARDS: usize = 64;

impl View {
    /// The view holding object `id` of resource `name`.
    pub fn object(name: &'static str, id: Uuid) -> View {
        // UUIDv7 ids begin with their time; the last byte is random.
        let last = id.as_bytes()[15];
        View::Object(name, last % OBJECT_BUCKETS)
    }

    /// Every view holding objects of resource `name`.
    pub fn all_objects(name: &'static str) -> impl Iterator<Item = View> {
        (0..OBJECT_BUCKETS).map(move |bucket| View::Object(name, bucket))
    }

    /// The metric label (and TTL policy) of the view: one per resource and
    /// kind, whatever the bucket.
    pub fn label(self) -> &'static str {
        let find = |name: &str| RESOURCES.iter().find(|(n, ..)| *n == name);
        match self {
            View::List(name) => find(name).map_or("other.list", |r| r.1),
            View::Object(name, _) => find(name).map_or("other.object", |r| r.2),
            View::Dashboard => DASHBOARD,
        }
    }

    /// The view's namespace for `tenant`, named after its label (and bucket).
    fn namespace(self, tenant: Uuid) -> Namespace {
        let mut buf = Uuid::encode_buffer();
        let tag = tenant.hyphenated().encode_lower(&mut buf);
        match self {
            View::Object(_, bucket) => {
                Namespace::with_hash_tag(tag, format!("{}/{bucket}", self.label()), self.label())
            }
            _ => Namespace::with_hash_tag(tag, self.label(), self.label()),
        }
    }
}

/// The cache as the handlers see it: off, L2 only, or L1 + L2 (L1 alone
/// without Redis).
pub struct ApiCache {
    cache: Option<TieredCache>,
    /// In tiered mode (with an L1): the data views, kept exact by every write's record.
    /// The tiered cache then holds the session copies only.
    live: Option<Arc<live::LiveStore>>,
    mode: CacheMode,
    l1_max_bytes: u64,
    sessions: Vec<Namespace>,
    /// The namespaces built so far, by tenant and view. Building one (the
    /// tenant's id rendered, escaped and allocated twice) cost a cached read
    /// about 900 of its 36 000 user-space instructions; a lookup here costs
    /// a quarter of that. Bounded: a namespace is rebuilt when evicted.
    namespaces: quick_cache::sync::Cache<(Uuid, View), Namespace>,
}

/// Namespaces [`ApiCache`] keeps built: about 90 views per tenant, so the
/// views of a few hundred active tenants (a few MiB).
const NAMESPACES_KEPT: usize = 32 * 1024;

impl ApiCache {
    pub async fn new(config: &Config) -> anyhow::Result<ApiCache> {
        let mode = config.cache_mode;
        let sessions = (0..SESSION_SHARDS)
            .map(|i| Namespace::new(format!("sessions/{i}"), SESSIONS))
            .collect();
        let namespaces = quick_cache::sync::Cache::new(NAMESPACES_KEPT);
        if mode == CacheMode::Off {
            return Ok(ApiCache {
                cache: None,
                live: None,
                mode,
                l1_max_bytes: 0,
                sessions,
                namespaces,
            });
        }
        if mode == CacheMode::L2 && config.redis_url.is_none() {
            anyhow::bail!("STRATA_CACHE_MODE=l2 needs REDIS_URL (the L2 cache is Redis)");
        }
        let l1_max_bytes = match mode {
            CacheMode::L2 => 0,
            _ => config.cache_l1_mb << 20,
        };
        // L1 entries live at most 30 s: that bounds what an instance could
        // serve after losing an invalidation in a way the bus cannot see.
        let settle = Duration::from_millis(config.cache_settle_ms);
        let policy = |ttl: u64| {
            let ttl = Duration::from_secs(ttl);
            Policy::new(ttl)
                .l1_ttl(ttl.min(Duration::from_secs(30)))
                .jitter(ttl / 10)
                // A database outage serves what was cached rather than 503s.
                .fail_safe(Duration::from_secs(300))
                // Other sessions may see a write up to this late (the
                // contract allows 1 s); the writer never does.
                .settle(settle)
        };
        let mut builder = TieredCache::builder()
            .l1_max_bytes(l1_max_bytes)
            .key_prefix("strata:c:")
            .fill_timeout(config.request_timeout())
            .policy(DASHBOARD, policy(config.cache_ttl_stats_secs))
            .policy(
                SESSIONS,
                Policy::new(Duration::from_secs(60))
                    .l1_ttl(Duration::from_secs(60))
                    .local_only()
                    // While the session store is down, sessions seen lately
                    // keep working (new logins cannot be made anyway).
                    .fail_safe(Duration::from_secs(900)),
            );
        for (_, list, object) in RESOURCES {
            builder = builder
                .policy(list, policy(config.cache_ttl_lists_secs))
                .policy(object, policy(config.cache_ttl_objects_secs));
        }
        if let Some(url) = &config.redis_url {
            builder = builder.redis_url(url.clone());
        }
        // In tiered mode the data views live in the live store, which takes most of the L1
        // bound; the tiered cache keeps the session copies in the rest.
        let live_bytes = if mode == CacheMode::Tiered && l1_max_bytes > 0 {
            l1_max_bytes - (l1_max_bytes / 16).max(1 << 20).min(l1_max_bytes / 2)
        } else {
            0
        };
        builder = builder.l1_max_bytes(l1_max_bytes - live_bytes);
        let cache = builder.build().await?;
        let live = (live_bytes > 0).then(|| {
            let lifetimes = live::Lifetimes {
                lists: Duration::from_secs(config.cache_ttl_lists_secs),
                objects: Duration::from_secs(config.cache_ttl_objects_secs),
                stats: Duration::from_secs(config.cache_ttl_stats_secs),
                fail_safe: Duration::from_secs(300),
            };
            let store = Arc::new(live::LiveStore::new(
                live_bytes,
                lifetimes,
                config.request_timeout(),
                Some(cache.clone()),
            ));
            cache.attach_feed(Arc::new(live::BusFeed(store.clone())));
            store
        });
        Ok(ApiCache {
            cache: Some(cache),
            live,
            mode,
            l1_max_bytes,
            sessions,
            namespaces,
        })
    }

    /// `view`'s namespace for `tenant`, built once and then kept.
    fn namespace(&self, tenant: Uuid, view: View) -> Namespace {
        if let Some(namespace) = self.namespaces.get(&(tenant, view)) {
            return namespace;
        }
        let namespace = view.namespace(tenant);
        self.namespaces.insert((tenant, view), namespace.clone());
        namespace
    }

    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    pub fn tiered(&self) -> Option<&TieredCache> {
        self.cache.as_ref()
    }

    /// The live store of data views (tiered mode with an L1), if this cache has one.
    pub fn live(&self) -> Option<&live::LiveStore> {
        self.live.as_deref()
    }

    /// After a committed write in live mode: applies its record here, then publishes it
    /// and waits until every other instance has applied it. `false` when that could not be
    /// confirmed (see [`TieredCache::publish`]).
    pub async fn publish(&self, record: &live::Record) -> bool {
        let Some(live) = &self.live else { return true };
        live.apply(record, true);
        let Some(cache) = &self.cache else {
            return true;
        };
        match record.encode() {
            Some(payload) => cache.publish(&payload).await,
            None => {
                tracing::warn!(
                    "a change record could not be encoded; this instance's views are dropped"
                );
                live.resync();
                false
            }
        }
    }

    pub fn l1_max_bytes(&self) -> u64 {
        self.l1_max_bytes
    }

    /// The read-your-writes barrier across instances (see the module docs):
    /// returns once every instance has applied what this one published.
    pub async fn sync_peers(&self) {
        if let Some(cache) = &self.cache {
            cache.sync_peers().await;
        }
    }

    /// A view of `tenant`'s data under `params` (already normalised: the
    /// same query in another order must give the same string), from the
    /// cache or else from `load`, which reads through the `Db` it is given.
    /// `None`: there is no such object (never cached). `own`: the position
    /// of the reader's latest change to the view (handlers go through
    /// [`Session::read`](crate::auth::Session::read), which knows it); the
    /// answer includes it.
    ///
    /// With the cache off, `load` reads through `direct` (the session's own
    /// handle, which carries its read-your-writes position).
    pub async fn read<F, Fut>(
        &self,
        direct: &Db,
        (tenant, view, own): (Uuid, View, u64),
        params: String,
        load: F,
    ) -> Result<Option<Tagged>, AppError>
    where
        F: FnOnce(Db) -> Fut + Send + 'static,
        Fut: Future<Output = Loaded> + Send + 'static,
    {
        let Some(cache) = &self.cache else {
            let loaded = load(direct.clone()).await;
            return loaded
                .map_err(|e| e.to_app_error())
                .map(|v| v.map(|read| Tagged::new(read.into_json())));
        };
        let key = self.namespace(tenant, view).key(params);
        let db = direct.clone();
        let primer = self.primer(cache, tenant);
        let value = cache
            .get_or_fill_after(&key, own, move |fill: FillContext| {
                fill_at(db, fill, load, primer)
            })
            .await
            .map_err(|e| fill_error(e, LoadError::to_app_error))?;
        Ok(Tagged::from_cached(value))
    }

    /// Fills `view` in the background-friendly way: through the single
    /// flight, stored if allowed, whether or not it was cached.
    pub async fn warm<F, Fut>(
        &self,
        db: &Db,
        tenant: Uuid,
        view: View,
        params: String,
        load: F,
    ) -> Result<(), AppError>
    where
        F: FnOnce(Db) -> Fut + Send + 'static,
        Fut: Future<Output = Loaded> + Send + 'static,
    {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let key = self.namespace(tenant, view).key(params);
        let db = db.clone();
        let primer = self.primer(cache, tenant);
        cache
            .warm(&key, move |fill: FillContext| {
                fill_at(db, fill, load, primer)
            })
            .await
            .map_err(|e| fill_error(e, LoadError::to_app_error))
    }

    /// Where a fill primes the objects it read: `tenant`'s object views in
    /// L1. `None` without an L1 (`l2` mode), so that a list fill does not
    /// hash its items for nothing.
    fn primer(&self, cache: &TieredCache, tenant: Uuid) -> Option<(TieredCache, Uuid)> {
        (self.l1_max_bytes > 0).then(|| (cache.clone(), tenant))
    }

    /// Whether `view` of `tenant` under `params` is cached (L1 or L2).
    pub async fn contains(&self, tenant: Uuid, view: View, params: String) -> bool {
        match &self.cache {
            Some(cache) => cache
                .get(&self.namespace(tenant, view).key(params))
                .await
                .is_some(),
            None => false,
        }
    }

    /// After a committed write of `tenant`: every view it changed is
    /// invalidated on every instance, at the write's commit position, before
    /// this returns (so before the write answers).
    pub async fn written(&self, tenant: Uuid, changed: &[View], position: Option<Lsn>) {
        let Some(cache) = &self.cache else {
            return;
        };
        let position = position.map_or(0, Lsn::as_u64);
        let invalidations = changed
            .iter()
            .map(|&view| self.namespace(tenant, view))
            .collect::<Vec<_>>();
        futures_util::future::join_all(
            invalidations
                .iter()
                .map(|ns| cache.invalidate_at(ns, position)),
        )
        .await;
    }

    /// The session behind `hash`: the cached copy, else `load` (the session
    /// store). `None`: no such session.
    pub async fn session<F, Fut>(&self, hash: &[u8; 32], load: F) -> Result<Option<Bytes>, AppError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send + 'static,
    {
        let Some(cache) = &self.cache else {
            return Ok(load().await?.map(Bytes::from));
        };
        let key = self.session_key(hash);
        let value = cache
            .get_or_fill(&key, move |_| async move {
                Ok::<_, StoreError>(Bytes::from(load().await?.unwrap_or_default()))
            })
            .await
            .map_err(|e| fill_error(e, StoreError::to_app_error))?;
        Ok((!value.is_empty()).then_some(value))
    }

    /// Drops every instance's copy of the session behind `hash` (logout): its
    /// shard's generation moves, and fills in flight are not stored. Every
    /// instance has applied it when this returns.
    pub async fn revoke_session(&self, hash: &[u8; 32]) {
        if let Some(cache) = &self.cache {
            cache.invalidate(self.session_namespace(hash)).await;
            cache.sync_peers().await;
        }
    }

    /// Drops every instance's copy of the session behind `hash` (after its
    /// stored record changed: a write position, a longer expiry). A copy being
    /// filled meanwhile, on any instance that has heard of the drop, is not
    /// kept, since it may predate the change.
    pub async fn refresh_session(&self, hash: &[u8; 32]) {
        if let Some(cache) = &self.cache {
            cache.delete(&self.session_key(hash)).await;
        }
    }

    fn session_namespace(&self, hash: &[u8; 32]) -> &Namespace {
        &self.sessions[usize::from(hash[0]) % SESSION_SHARDS]
    }

    fn session_key(&self, hash: &[u8; 32]) -> tiered_cache::Key {
        self.session_namespace(hash)
            .key(crate::auth::hash_hex(hash))
    }

    /// The counters, `None` with the cache off.
    pub fn snapshot(&self) -> Option<StatsSnapshot> {
        self.cache.as_ref().map(TieredCache::snapshot)
    }
}

/// Runs `load` so that what it reads includes the namespace's latest
/// invalidation: its position becomes the read's floor (a replica that has
/// not replayed it is skipped), and the position actually read at goes back
/// to the cache, which refuses to store anything from behind it. Objects the
/// read came with are primed in the `primer`'s object views at that position.
async fn fill_at<F, Fut>(
    db: Db,
    fill: FillContext,
    load: F,
    primer: Option<(TieredCache, Uuid)>,
) -> Result<Filled, LoadError>
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = Loaded>,
{
    let started = Instant::now();
    // At or after the namespace's latest invalidation, and the requesting
    // session's own latest write: a row it just created is in no invalidated
    // namespace (creating one drops no cached object).
    let own = db.ctx().and_then(ReadCtx::min_lsn).map_or(0, Lsn::as_u64);
    let floor = fill.position().max(own);
    let ctx = ReadCtx::new((floor > 0).then(|| Lsn::from_u64(floor)));
    let read = load(db.with_ctx(&ctx)).await?;
    // A replica read saw what the replica had replayed; a primary read saw
    // at least every commit before it started, so at least the floor (any
    // write it missed commits later, at a higher position).
    let read_at = ctx
        .source()
        .and_then(|s| s.replayed)
        .map_or(floor, Lsn::as_u64);
    Ok(match read {
        Some(Read { json, shows }) => {
            if let (Some(Shown { name, objects }), Some((cache, tenant))) = (shows, primer) {
                // Concurrently: the namespaces this instance has not used yet
                // cost a Redis read each, in one round trip.
                let primes = objects.into_iter().map(|(id, object)| {
                    let key = View::object(name, id)
                        .namespace(tenant)
                        .key(object_params(id));
                    let cache = &cache;
                    async move {
                        let value = Tagged::new(object).into_bytes();
                        cache.prime(&key, value, read_at, started).await
                    }
                });
                futures_util::future::join_all(primes).await;
            }
            Filled::new(Tagged::new(json).into_bytes()).at_position(read_at)
        }
        // "No such object" is never stored: no invalidation would end it
        // when the row appears (a create drops no cached object), and a
        // lagging replica says it about rows that exist.
        None => Filled::new(Bytes::new()).uncacheable(),
    })
}

/// A failed fill as the caller's error (every waiter of the fill gets one).
fn fill_error<E>(e: CacheError<E>, by_ref: fn(&E) -> AppError) -> AppError {
    match e {
        CacheError::Fill(e) => by_ref(&e),
        CacheError::FillTimeout(after) => AppError::Unavailable {
            message: format!("the database did not answer within {} s", after.as_secs()),
            retry_after: 1,
        },
        CacheError::FillAborted => AppError::Internal(anyhow::anyhow!("cache fill aborted")),
    }
}
