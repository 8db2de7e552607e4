//! The live store: every cached view of tenant data in this process (list windows,
//! objects, dashboards), each changed in place by every write's record, bounded in bytes.
//! Never serves a view it cannot vouch for: one from before a lost record (the bus says
//! so, see [`tiered_cache::Feed`]), from an older generation of its tenant and resource,
//! or one that misses what its reader must see.
//!
//! How a view stays exact:
//! - A fill reads its view and the snapshot it read in, in one statement, at or after
//!   the tenant's latest record position (so a replica has replayed every record this
//!   instance had heard of). Records arriving while it runs are kept for it; before it is
//!   installed, those its snapshot did not see are applied (Noria's rule: a fill is one
//!   point in time, brought forward by what came after).
//! - A record is applied to every view of its tenant that it concerns, under the tenant's
//!   lock ([`Shelf`]), and kept for the fills in flight, so none slips between a fill's
//!   install and the next record.
//! - Rows carry versions (`updated_at`, which only moves forward; a delete is the last
//!   version): a record older than one already applied moves totals but not rows, so
//!   records may arrive in any order. The newest version seen per row is kept while the
//!   tenant has views, which is also the tombstone that stops a racing fill from putting
//!   a deleted or changed row back.
//! - What cannot be decided exactly drops the view: a standby snapshot's in-progress range,
//!   a record too old to order, a cascade (`SET NULL`) that changed rows no record names.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use strata_db::change::Snapshot;
use strata_db::model::DashboardStats;
use strata_db::repo::eval::Facts;
use strata_db::repo::{self, stats, ListParams, Resource};
use strata_db::{Db, Lsn, ReadCtx};
use tiered_cache::{Bytes, FillOutcome, TieredCache};
use uuid::Uuid;

use super::record::{Record, RowChange, DASHBOARD_SLOT, RESOURCES};
use super::window::{Applied, Window};
use crate::cache::LoadError;
use crate::http::etag::Tagged;
use crate::http::AppError;

/// Slots per tenant: one per resource, and the dashboard.
const SLOTS: usize = RESOURCES.len() + 1;
/// The deepest row a window serves (page × per_page); deeper pages read the database.
pub const WINDOW_CAP: usize = 500;
/// The fewest rows a window is filled with: a first page and room for deletes.
const WINDOW_MIN: usize = 40;
/// A record published longer ago than this (by the writer's clock) may be older than the
/// versions forgotten since: its tenant's views are dropped instead of ordered by guess.
const RECORD_MAX_AGE: Duration = Duration::from_secs(30);
/// How long a row's newest version and a tenant's latest record position are kept.
const REMEMBER: Duration = Duration::from_secs(60);
/// While the bus is down, a view filled then is served for at most this long.
const UNTRUSTED_MAX_AGE: Duration = Duration::from_secs(1);
/// Time-dependent views (the dashboard, `overdue` lists) live at most this long: the
/// clock moves their rows without any write.
const TIME_DEPENDENT_MAX: Duration = Duration::from_secs(60);
/// Bookkeeping per entry charged to the byte bound.
const ENTRY_OVERHEAD: u64 = 160;

/// How long each kind of view lives, and how long past that it may serve while its fill
/// fails (a database outage).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub lists: Duration,
    pub objects: Duration,
    pub stats: Duration,
    pub fail_safe: Duration,
}

/// Who reads, and what the view must include for them.
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    pub tenant: Uuid,
    /// The position of the reader's latest write to the view (0: none known).
    pub own: u64,
    /// The position of the reader's latest write whose record may not have reached every
    /// instance (its barrier failed; 0: none).
    pub unsynced: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ViewKey {
    Window(u8, Box<str>),
    Object(u8, Uuid),
    Dashboard,
}

type EntryKey = (Uuid, ViewKey);

enum View {
    Window(Window),
    Object { version: i64, body: Tagged },
    Dashboard(Dash),
}

struct Dash {
    stats: DashboardStats,
    /// The fill's `now`: what "this month" and "overdue" mean for this view.
    now: DateTime<Utc>,
    base: Snapshot,
    body: Option<Tagged>,
}

/// One cached view.
struct Entry {
    shelf: Arc<Shelf>,
    slot: usize,
    generation: u64,
    epoch: u64,
    installed: Instant,
    fresh_until: Instant,
    stale_until: Instant,
    /// The position the fill read at: what it includes for certain.
    position: u64,
    weight: AtomicU64,
    view: Mutex<View>,
}

impl Entry {
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An entry as the bounded map holds it, with the weight it was inserted at (the map
/// needs the same weight back when the entry leaves, however the view changed since).
#[derive(Clone)]
struct Weighed {
    entry: Arc<Entry>,
    weight: u64,
}

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<EntryKey, Weighed> for Weigh {
    fn weight(&self, _: &EntryKey, w: &Weighed) -> u64 {
        w.weight + ENTRY_OVERHEAD
    }
}

/// One tenant: its views' generations and what keeps them exact. Alive while a view or
/// a fill of the tenant is.
struct Shelf {
    tenant: Uuid,
    /// Moving a slot's generation drops every view of it at once.
    generations: [AtomicU64; SLOTS],
    state: Mutex<ShelfState>,
}

#[derive(Default)]
struct ShelfState {
    windows: HashMap<(usize, Box<str>), Weak<Entry>>,
    /// The newest version applied per (slot, row), and when.
    newest: HashMap<(usize, Uuid), (i64, Instant)>,
    /// Records kept for the fills in flight, each with the row's newest version before it.
    fills: Vec<(u64, Kept)>,
    next_fill: u64,
    applied: u64,
}

impl Shelf {
    fn state(&self) -> MutexGuard<'_, ShelfState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn generation(&self, slot: usize) -> u64 {
        self.generations[slot].load(Ordering::Acquire)
    }

    fn drop_slot(&self, st: &mut ShelfState, slot: usize) {
        self.generations[slot].fetch_add(1, Ordering::AcqRel);
        st.windows.retain(|(s, _), _| *s != slot);
    }
}

/// Records kept for one fill, each with the row's newest version before it.
type Kept = Vec<(Arc<RowChange>, Option<i64>)>;

/// Fills in flight, by what they fill and the floor they read at.
type Flights = Mutex<HashMap<(EntryKey, u64), Arc<tokio::sync::OnceCell<Arc<Entry>>>>>;

/// A fill's registration on its shelf: records arriving meanwhile are kept for it, until
/// it is installed or given up (dropped).
struct FillSlot {
    shelf: Arc<Shelf>,
    id: u64,
}

impl FillSlot {
    fn new(shelf: Arc<Shelf>) -> FillSlot {
        let id = {
            let mut st = shelf.state();
            st.next_fill += 1;
            let id = st.next_fill;
            st.fills.push((id, Vec::new()));
            id
        };
        FillSlot { shelf, id }
    }

    fn take(st: &mut ShelfState, id: u64) -> Kept {
        match st.fills.iter().position(|(i, _)| *i == id) {
            Some(i) => st.fills.swap_remove(i).1,
            None => Vec::new(),
        }
    }
}

impl Drop for FillSlot {
    fn drop(&mut self) {
        let mut st = self.shelf.state();
        FillSlot::take(&mut st, self.id);
    }
}

/// The bounded map of entries.
struct Entries(quick_cache::sync::Cache<EntryKey, Weighed, Weigh>);

impl Entries {
    fn get(&self, key: &EntryKey) -> Option<Arc<Entry>> {
        self.0.get(key).map(|w| w.entry)
    }

    fn insert(&self, key: EntryKey, entry: Arc<Entry>) {
        let weight = entry.weight.load(Ordering::Relaxed);
        self.0.insert(key, Weighed { entry, weight });
    }

    fn remove(&self, key: &EntryKey) {
        self.0.remove(key);
    }

    fn clear(&self) {
        self.0.clear();
    }
}

/// What the store has done since start (or the last reset): the admin route's `live`.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct LiveCounts {
    /// Records applied: this instance's own writes, and other instances' from the bus.
    pub records_own: u64,
    pub records_peers: u64,
    /// Times every view was dropped because records may have been missed.
    pub resyncs: u64,
    /// Views dropped because a change could not be placed exactly.
    pub views_dropped: u64,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub trusted: bool,
}

/// Counted in `strata_cache_live_records_total{source}`.
pub const RECORDS: &str = "strata_cache_live_records_total";
/// Counted in `strata_cache_live_resyncs_total`.
pub const RESYNCS: &str = "strata_cache_live_resyncs_total";
/// Counted in `strata_cache_live_views_dropped_total`.
pub const DROPPED: &str = "strata_cache_live_views_dropped_total";

#[derive(Default)]
struct Counts {
    own: AtomicU64,
    peers: AtomicU64,
    resyncs: AtomicU64,
    dropped: AtomicU64,
}

pub struct LiveStore {
    counts: Counts,
    entries: Entries,
    shelves: Mutex<HashMap<Uuid, Weak<Shelf>>>,
    /// Per tenant, the highest position of a record heard: fills read at or after it.
    floors: Mutex<HashMap<Uuid, (u64, Instant)>>,
    /// Moves whenever records may have been missed: every view from before is dropped.
    epoch: AtomicU64,
    /// Whether this instance hears every record (its bus is subscribed, or it has none).
    trusted: AtomicBool,
    flights: Flights,
    counters: Option<TieredCache>,
    lifetimes: Lifetimes,
    fill_timeout: Duration,
    max_bytes: u64,
}

impl LiveStore {
    pub fn new(
        max_bytes: u64,
        lifetimes: Lifetimes,
        fill_timeout: Duration,
        counters: Option<TieredCache>,
    ) -> LiveStore {
        let estimated = (max_bytes / 4096).clamp(16, 1 << 20) as usize;
        LiveStore {
            counts: Counts::default(),
            entries: Entries(quick_cache::sync::Cache::with_weighter(
                estimated,
                max_bytes.max(1),
                Weigh,
            )),
            shelves: Mutex::default(),
            floors: Mutex::default(),
            epoch: AtomicU64::new(0),
            trusted: AtomicBool::new(counters.is_none()),
            flights: Mutex::default(),
            counters,
            lifetimes,
            fill_timeout,
            max_bytes,
        }
    }

    /// Entries and bytes held now.
    pub fn size(&self) -> (u64, u64) {
        (self.entries.0.len() as u64, self.entries.0.weight())
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    /// Drops every view (records may have been missed); fills in flight will not install.
    pub fn resync(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
        self.counts.resyncs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(RESYNCS).increment(1);
    }

    /// The counters and the store's size now.
    pub fn counts(&self) -> LiveCounts {
        let (entries, bytes) = self.size();
        let c = &self.counts;
        LiveCounts {
            records_own: c.own.load(Ordering::Relaxed),
            records_peers: c.peers.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            views_dropped: c.dropped.load(Ordering::Relaxed),
            entries,
            bytes,
            max_bytes: self.max_bytes,
            trusted: self.trusted(),
        }
    }

    /// Sets the counters back to zero (the `metrics` ones are monotonic and stay).
    pub fn reset_counts(&self) {
        let c = &self.counts;
        for n in [&c.own, &c.peers, &c.resyncs, &c.dropped] {
            n.store(0, Ordering::Relaxed);
        }
    }

    fn dropped(&self, reason: &'static str) {
        self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(DROPPED, "reason" => reason).increment(1);
    }

    /// Bus trust changed (see [`tiered_cache::Feed::trust`]).
    pub fn set_trusted(&self, trusted: bool) {
        if !trusted {
            self.trusted.store(false, Ordering::Release);
            self.resync();
        } else {
            self.resync();
            self.trusted.store(true, Ordering::Release);
        }
    }

    fn label(slot: usize, kind: &ViewKey) -> &'static str {
        const LISTS: [&str; 5] = [
            "contacts.list",
            "deals.list",
            "tasks.list",
            "invoices.list",
            "orders.list",
        ];
        const OBJECTS: [&str; 5] = [
            "contacts.object",
            "deals.object",
            "tasks.object",
            "invoices.object",
            "orders.object",
        ];
        match kind {
            ViewKey::Window(..) => LISTS.get(slot).copied().unwrap_or("other.list"),
            ViewKey::Object(..) => OBJECTS.get(slot).copied().unwrap_or("other.object"),
            ViewKey::Dashboard => "dashboard",
        }
    }

    fn count_read(&self, label: &str, hit: bool) {
        if let Some(c) = &self.counters {
            c.count_read(label, hit);
        }
    }

    fn count_fill(&self, label: &str, outcome: FillOutcome, took: Duration) {
        if let Some(c) = &self.counters {
            c.count_fill(label, outcome, took);
        }
    }

    /// The tenant's shelf, made if it has none.
    fn shelf(&self, tenant: Uuid) -> Arc<Shelf> {
        let mut shelves = self.shelves.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shelf) = shelves.get(&tenant).and_then(Weak::upgrade) {
            return shelf;
        }
        if shelves.len() >= 1024 && shelves.len().is_power_of_two() {
            shelves.retain(|_, w| w.strong_count() > 0);
        }
        let shelf = Arc::new(Shelf {
            tenant,
            generations: Default::default(),
            state: Mutex::default(),
        });
        shelves.insert(tenant, Arc::downgrade(&shelf));
        shelf
    }

    fn existing_shelf(&self, tenant: Uuid) -> Option<Arc<Shelf>> {
        let shelves = self.shelves.lock().unwrap_or_else(|e| e.into_inner());
        shelves.get(&tenant).and_then(Weak::upgrade)
    }

    fn floor(&self, tenant: Uuid) -> u64 {
        let floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        floors.get(&tenant).map_or(0, |f| f.0)
    }

    fn raise_floor(&self, tenant: Uuid, position: u64) {
        let now = Instant::now();
        let mut floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        if floors.len() >= 4096 && floors.len().is_power_of_two() {
            floors.retain(|_, (_, at)| now.duration_since(*at) < REMEMBER);
        }
        let f = floors.entry(tenant).or_insert((0, now));
        f.0 = f.0.max(position);
        f.1 = now;
    }

    /// Whether `e` may be served to `reader` now (`stale`: past its life, within the
    /// fail-safe grace, for a reader whose fill failed).
    fn servable(&self, e: &Entry, reader: &Reader, now: Instant, stale: bool) -> bool {
        if e.epoch != self.epoch.load(Ordering::Acquire)
            || e.generation != e.shelf.generation(e.slot)
        {
            return false;
        }
        let alive = if stale {
            now < e.stale_until
        } else {
            now < e.fresh_until
        };
        if !alive {
            return false;
        }
        if self.trusted() {
            e.position >= reader.unsynced
        } else {
            now.duration_since(e.installed) <= UNTRUSTED_MAX_AGE && e.position >= reader.own
        }
    }

    fn lookup(&self, key: &EntryKey, reader: &Reader, stale: bool) -> Option<Arc<Entry>> {
        let e = self.entries.get(key)?;
        self.servable(&e, reader, Instant::now(), stale)
            .then_some(e)
    }

    /// Builds an entry for a fill read at `position`.
    fn entry(&self, fill: &Filling, view: View, life: Duration, weight: usize) -> Arc<Entry> {
        let now = Instant::now();
        Arc::new(Entry {
            shelf: fill.slot.shelf.clone(),
            slot: fill.slot_index,
            generation: fill.generation,
            epoch: fill.epoch,
            installed: now,
            fresh_until: now + life,
            stale_until: now + life + self.lifetimes.fail_safe,
            position: fill.position,
            weight: AtomicU64::new(weight as u64),
            view: Mutex::new(view),
        })
    }

    /// Re-weighs an entry whose view grew or shrank noticeably (the bound counts what an
    /// entry weighed when last inserted).
    fn reweigh(&self, key: &EntryKey, e: &Arc<Entry>, bytes: usize) {
        let was = e.weight.load(Ordering::Relaxed);
        let now = bytes as u64;
        if now > was + was / 4 || now < was / 2 {
            e.weight.store(now, Ordering::Relaxed);
            self.entries.insert(key.clone(), e.clone());
        }
    }

    // ----- reads -----

    fn hit_page(
        &self,
        key: &EntryKey,
        reader: &Reader,
        page: u32,
        per_page: u32,
    ) -> Option<Tagged> {
        let e = self.lookup(key, reader, false)?;
        let mut view = e.view();
        match &mut *view {
            View::Window(w) => w.page(page, per_page),
            _ => None,
        }
    }

    fn hit_object(&self, key: &EntryKey, reader: &Reader) -> Option<Tagged> {
        let e = self.lookup(key, reader, false)?;
        let view = e.view();
        match &*view {
            View::Object { body, .. } => Some(body.clone()),
            _ => None,
        }
    }

    /// A page of a list of `R`, from its window or its fill.
    pub async fn list<R: Resource>(
        &self,
        db: &Db,
        reader: Reader,
        params: ListParams,
        window_key: String,
    ) -> Result<Tagged, AppError> {
        let slot = slot_of::<R>()?;
        let (page, per_page) = (params.page, params.per_page);
        let needed = (page as usize).saturating_mul(per_page as usize);
        let key: EntryKey = (
            reader.tenant,
            ViewKey::Window(slot as u8, window_key.into()),
        );
        let label = Self::label(slot, &key.1);
        if needed > WINDOW_CAP {
            // Deep pages are read where they are (cursors make them cheap).
            self.count_read(label, false);
            let started = Instant::now();
            let (items, total) = repo::list::<R>(
                &db.with_ctx(&own_ctx(self.floor(reader.tenant).max(reader.own))),
                reader.tenant,
                &params,
                Utc::now(),
            )
            .await
            .map_err(|e| LoadError::Db(e).to_app_error())?;
            self.count_fill(label, FillOutcome::Refused, started.elapsed());
            return crate::resources::page_json(items, page, per_page, total);
        }
        if let Some(t) = self.hit_page(&key, &reader, page, per_page) {
            self.count_read(label, true);
            return Ok(t);
        }
        self.count_read(label, false);
        let limit = (needed + needed / 2).clamp(WINDOW_MIN, WINDOW_CAP + WINDOW_CAP / 2);
        let time_dependent = params
            .filters
            .iter()
            .any(|f| matches!(f, repo::Filter::Overdue(_)));
        let filled = self
            .fly(&key, reader, label, |fill| {
                self.fill_window::<R>(db, fill, params.clone(), limit, time_dependent)
            })
            .await;
        let e = match filled {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Err(AppError::Internal(anyhow::anyhow!(
                    "a list fill gave nothing"
                )))
            }
            Err(err) => match self.lookup(&key, &reader, true) {
                Some(stale) => stale,
                None => return Err(err),
            },
        };
        let served = match &mut *e.view() {
            View::Window(w) => w.page(page, per_page),
            _ => {
                return Err(AppError::Internal(anyhow::anyhow!(
                    "a list entry holds another view"
                )))
            }
        };
        match served {
            Some(t) => Ok(t),
            // Another reader's smaller fill won the flight: read this page directly.
            None => {
                let (items, total) = repo::list::<R>(
                    &db.with_ctx(&own_ctx(self.floor(reader.tenant).max(reader.own))),
                    reader.tenant,
                    &params,
                    Utc::now(),
                )
                .await
                .map_err(|e| LoadError::Db(e).to_app_error())?;
                crate::resources::page_json(items, page, per_page, total)
            }
        }
    }

    /// One object of `R` (`None`: no such object).
    pub async fn object<R: Resource>(
        &self,
        db: &Db,
        reader: Reader,
        id: Uuid,
    ) -> Result<Option<Tagged>, AppError> {
        let slot = slot_of::<R>()?;
        let key: EntryKey = (reader.tenant, ViewKey::Object(slot as u8, id));
        let label = Self::label(slot, &key.1);
        if let Some(body) = self.hit_object(&key, &reader) {
            self.count_read(label, true);
            return Ok(Some(body));
        }
        self.count_read(label, false);
        let filled = self
            .fly(&key, reader, label, |fill| {
                self.fill_object::<R>(db, fill, id)
            })
            .await;
        let e = match filled {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(None),
            Err(err) => match self.lookup(&key, &reader, true) {
                Some(stale) => stale,
                None => return Err(err),
            },
        };
        let body = match &*e.view() {
            View::Object { body, .. } => Some(body.clone()),
            _ => None,
        };
        body.map(Some).ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("an object entry holds another view"))
        })
    }

    /// The tenant's dashboard stats.
    pub async fn dashboard(&self, db: &Db, reader: Reader) -> Result<Tagged, AppError> {
        let key: EntryKey = (reader.tenant, ViewKey::Dashboard);
        let label = Self::label(DASHBOARD_SLOT, &key.1);
        let render = |e: &Entry| -> Result<Option<Tagged>, AppError> {
            let mut view = e.view();
            let View::Dashboard(d) = &mut *view else {
                return Ok(None);
            };
            if d.body.is_none() {
                let json =
                    serde_json::to_vec(&d.stats).map_err(|e| AppError::Internal(e.into()))?;
                d.body = Some(Tagged::new(json));
            }
            Ok(d.body.clone())
        };
        if let Some(e) = self.lookup(&key, &reader, false) {
            if let Some(t) = render(&e)? {
                self.count_read(label, true);
                return Ok(t);
            }
        }
        self.count_read(label, false);
        let filled = self
            .fly(&key, reader, label, |fill| self.fill_dashboard(db, fill))
            .await;
        let e = match filled {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Err(AppError::Internal(anyhow::anyhow!(
                    "the stats are never absent"
                )))
            }
            Err(err) => match self.lookup(&key, &reader, true) {
                Some(stale) => stale,
                None => return Err(err),
            },
        };
        render(&e)?.ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("a dashboard entry holds another view"))
        })
    }

    /// Whether the tenant's dashboard is cached (warming skips a warm tenant).
    pub fn has_dashboard(&self, tenant: Uuid) -> bool {
        let reader = Reader {
            tenant,
            own: 0,
            unsynced: 0,
        };
        self.lookup(&(tenant, ViewKey::Dashboard), &reader, false)
            .is_some()
    }

    /// Runs `fill` once for all concurrent misses of `key` (and of the same floor); the
    /// others wait for its entry. A fill is cancelled after the fill timeout.
    /// `Ok(None)`: the fill found nothing to show (no such object).
    async fn fly<'a, F, Fut>(
        &'a self,
        key: &EntryKey,
        reader: Reader,
        label: &'static str,
        fill: F,
    ) -> Result<Option<Arc<Entry>>, AppError>
    where
        F: FnOnce(Filling) -> Fut,
        Fut: std::future::Future<Output = Result<(Option<Arc<Entry>>, FillOutcome), AppError>> + 'a,
    {
        let floor = self.floor(reader.tenant).max(reader.own);
        let flight_key = (key.clone(), floor);
        let (cell, joined) = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            match flights.get(&flight_key) {
                Some(cell) => (cell.clone(), true),
                None => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    flights.insert(flight_key.clone(), cell.clone());
                    (cell, false)
                }
            }
        };
        if joined {
            if let Some(c) = &self.counters {
                c.count_coalesced(label);
            }
        }
        let shelf = self.shelf(reader.tenant);
        let slot_index = match &key.1 {
            ViewKey::Window(s, _) | ViewKey::Object(s, _) => usize::from(*s),
            ViewKey::Dashboard => DASHBOARD_SLOT,
        };
        let result = cell
            .get_or_try_init(|| async {
                // Registered before the floor is read: a record is either in the floor (it
                // raises it before it looks for fills) or kept for this fill.
                let generation = shelf.generation(slot_index);
                let epoch = self.epoch.load(Ordering::Acquire);
                let slot = FillSlot::new(shelf.clone());
                let filling = Filling {
                    generation,
                    epoch,
                    slot,
                    slot_index,
                    position: self.floor(reader.tenant).max(floor),
                    key: key.clone(),
                };
                let started = Instant::now();
                let outcome = tokio::time::timeout(self.fill_timeout, fill(filling)).await;
                let took = started.elapsed();
                match outcome {
                    Err(_) => {
                        self.count_fill(label, FillOutcome::Timeout, took);
                        Err(AppError::Unavailable {
                            message: format!(
                                "the database did not answer within {} s",
                                self.fill_timeout.as_secs()
                            ),
                            retry_after: 1,
                        })
                    }
                    Ok(Err(e)) => {
                        self.count_fill(label, FillOutcome::Error, took);
                        Err(e)
                    }
                    Ok(Ok((entry, outcome))) => {
                        self.count_fill(label, outcome, took);
                        // Absence is not kept: the next reader reads again.
                        entry.ok_or(AppError::NotFound)
                    }
                }
            })
            .await
            .cloned();
        {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if flights
                .get(&flight_key)
                .is_some_and(|c| Arc::ptr_eq(c, &cell))
            {
                flights.remove(&flight_key);
            }
        }
        match result {
            Ok(e) => Ok(Some(e)),
            Err(AppError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ----- fills -----

    async fn fill_window<R: Resource>(
        &self,
        db: &Db,
        fill: Filling,
        params: ListParams,
        limit: usize,
        time_dependent: bool,
    ) -> Result<(Option<Arc<Entry>>, FillOutcome), AppError> {
        let tenant = fill.slot.shelf.tenant;
        let ctx = own_ctx(fill.position);
        let now = strata_db::model::db_time(Utc::now());
        let read = repo::window::<R>(&db.with_ctx(&ctx), tenant, &params, limit as u32, now)
            .await
            .map_err(|e| LoadError::Db(e).to_app_error())?;
        let position = read_position(&ctx, fill.position);
        let mut rows = Vec::with_capacity(read.rows.len());
        for img in read.rows {
            let json = Bytes::from(
                serde_json::to_vec(&img.row).map_err(|e| AppError::Internal(e.into()))?,
            );
            rows.push((Facts::of(&img.row, img.lowered), json));
        }
        let objects: Vec<(Uuid, i64, Bytes)> = rows
            .iter()
            .map(|(f, json)| (f.id(), f.version(), json.clone()))
            .collect();
        let window = Window::new(params, now, read.snapshot, rows, read.total, limit);
        let weight = window.bytes();
        let life = if time_dependent {
            self.lifetimes.lists.min(TIME_DEPENDENT_MAX)
        } else {
            self.lifetimes.lists
        };
        let fill = Filling { position, ..fill };
        let entry = self.entry(&fill, View::Window(window), life, weight);
        let ViewKey::Window(_, wkey) = &fill.key.1 else {
            return Ok((Some(entry), FillOutcome::Refused));
        };
        let shelf = fill.slot.shelf.clone();
        let mut st = shelf.state();
        let buffered = FillSlot::take(&mut st, fill.slot.id);
        if !self.still_current(&fill) {
            return Ok((Some(entry), FillOutcome::Discarded));
        }
        {
            let mut view = entry.view();
            let View::Window(w) = &mut *view else {
                return Ok((Some(entry.clone()), FillOutcome::Refused));
            };
            for (change, newest) in &buffered {
                if change.slot == fill.slot_index && w.apply(change, *newest) == Applied::Drop {
                    return Ok((Some(entry.clone()), FillOutcome::Refused));
                }
            }
        }
        self.entries.insert(fill.key.clone(), entry.clone());
        st.windows
            .insert((fill.slot_index, wkey.clone()), Arc::downgrade(&entry));
        // The rows seen are also their objects' views, under the same rules as a fill of
        // them: not over a newer version (or a deletion) applied since.
        let object_life = self.lifetimes.objects;
        for (id, version, json) in objects {
            let key = (tenant, ViewKey::Object(fill.slot_index as u8, id));
            let newer = st
                .newest
                .get(&(fill.slot_index, id))
                .is_some_and(|(n, _)| *n >= version);
            if newer || self.entries.get(&key).is_some() {
                continue;
            }
            let body = Tagged::new(json.to_vec());
            let weight = body.len();
            let object = self.entry(&fill, View::Object { version, body }, object_life, weight);
            self.entries.insert(key, object);
            if let Some(c) = &self.counters {
                c.count_primed(Self::label(fill.slot_index, &ViewKey::Object(0, id)));
            }
        }
        Ok((Some(entry), FillOutcome::Stored))
    }

    async fn fill_object<R: Resource>(
        &self,
        db: &Db,
        fill: Filling,
        id: Uuid,
    ) -> Result<(Option<Arc<Entry>>, FillOutcome), AppError> {
        let tenant = fill.slot.shelf.tenant;
        let ctx = own_ctx(fill.position);
        let Some(row) = repo::get::<R>(&db.with_ctx(&ctx), tenant, id)
            .await
            .map_err(|e| LoadError::Db(e).to_app_error())?
        else {
            // "No such object" is never kept: a lagging replica says it of rows that exist.
            return Ok((None, FillOutcome::Refused));
        };
        let position = read_position(&ctx, fill.position);
        let version = row.updated_at().timestamp_micros();
        let body = Tagged::new(serde_json::to_vec(&row).map_err(|e| AppError::Internal(e.into()))?);
        let fill = Filling { position, ..fill };
        let weight = body.len();
        let entry = self.entry(
            &fill,
            View::Object { version, body },
            self.lifetimes.objects,
            weight,
        );
        let shelf = fill.slot.shelf.clone();
        let mut st = shelf.state();
        let buffered = FillSlot::take(&mut st, fill.slot.id);
        let overtaken = st
            .newest
            .get(&(fill.slot_index, id))
            .is_some_and(|(n, _)| *n > version)
            || buffered
                .iter()
                .any(|(c, _)| c.slot == fill.slot_index && c.id == id && c.version() > version);
        if overtaken || !self.still_current(&fill) {
            return Ok((Some(entry), FillOutcome::Discarded));
        }
        self.entries.insert(fill.key.clone(), entry.clone());
        Ok((Some(entry), FillOutcome::Stored))
    }

    async fn fill_dashboard(
        &self,
        db: &Db,
        fill: Filling,
    ) -> Result<(Option<Arc<Entry>>, FillOutcome), AppError> {
        let tenant = fill.slot.shelf.tenant;
        let ctx = own_ctx(fill.position);
        let now = strata_db::model::db_time(Utc::now());
        let (figures, base) = stats::dashboard_at(&db.with_ctx(&ctx), tenant, now)
            .await
            .map_err(|e| LoadError::Db(e).to_app_error())?;
        let position = read_position(&ctx, fill.position);
        let fill = Filling { position, ..fill };
        let life = self.lifetimes.stats.min(TIME_DEPENDENT_MAX);
        let dash = Dash {
            stats: figures,
            now,
            base,
            body: None,
        };
        let entry = self.entry(&fill, View::Dashboard(dash), life, 512);
        let shelf = fill.slot.shelf.clone();
        let mut st = shelf.state();
        let buffered = FillSlot::take(&mut st, fill.slot.id);
        if !self.still_current(&fill) {
            return Ok((Some(entry), FillOutcome::Discarded));
        }
        {
            let mut view = entry.view();
            let View::Dashboard(d) = &mut *view else {
                return Ok((Some(entry.clone()), FillOutcome::Refused));
            };
            for (change, _) in &buffered {
                if !d.apply(change) {
                    return Ok((Some(entry.clone()), FillOutcome::Refused));
                }
            }
        }
        self.entries.insert(fill.key.clone(), entry.clone());
        drop(st);
        Ok((Some(entry), FillOutcome::Stored))
    }

    /// Whether nothing dropped the fill's views while it ran.
    fn still_current(&self, fill: &Filling) -> bool {
        fill.epoch == self.epoch.load(Ordering::Acquire)
            && fill.generation == fill.slot.shelf.generation(fill.slot_index)
    }

    // ----- records -----

    /// Applies a record to this instance's views (the writer's own, before it publishes;
    /// every other instance's from the bus).
    pub fn apply(&self, record: &Record, own: bool) {
        let (count, source) = if own {
            (&self.counts.own, "own")
        } else {
            (&self.counts.peers, "peers")
        };
        count.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(RECORDS, "source" => source).increment(1);
        let tenant = record.tenant();
        self.raise_floor(tenant, record.position());
        let Some(shelf) = self.existing_shelf(tenant) else {
            return; // No view of the tenant here, and no fill: nothing to change.
        };
        let mut st = shelf.state();
        let age = Utc::now().timestamp_micros().saturating_sub(record.at());
        if age > RECORD_MAX_AGE.as_micros() as i64 {
            tracing::warn!(age_ms = age / 1000, "a change record arrived too late to be ordered; the tenant's cached views are dropped");
            self.dropped("late_record");
            for slot in 0..SLOTS {
                shelf.drop_slot(&mut st, slot);
            }
            return;
        }
        let change = match record {
            Record::Drop { slots, .. } => {
                self.dropped("cascade");
                for slot in slots {
                    shelf.drop_slot(&mut st, *slot);
                }
                return;
            }
            Record::Row(change) => Arc::new((**change).clone()),
        };
        let now = Instant::now();
        let row = (change.slot, change.id);
        let newest = st.newest.get(&row).map(|(v, _)| *v);
        let version = change.version();
        st.newest
            .insert(row, (newest.map_or(version, |n| n.max(version)), now));
        st.applied += 1;
        if st.applied % 1024 == 0 {
            st.newest
                .retain(|_, (_, at)| now.duration_since(*at) < REMEMBER);
        }
        for (_, kept) in &mut st.fills {
            kept.push((change.clone(), newest));
        }
        let tenant = shelf.tenant;
        st.windows.retain(|(slot, wkey), weak| {
            if *slot != change.slot {
                return true;
            }
            let Some(e) = weak.upgrade() else {
                return false;
            };
            if !self.valid(&e) {
                return false;
            }
            let key = (tenant, ViewKey::Window(*slot as u8, wkey.clone()));
            let mut view = e.view();
            let View::Window(w) = &mut *view else {
                return false;
            };
            match w.apply(&change, newest) {
                Applied::Unchanged => true,
                Applied::Changed => {
                    let bytes = w.bytes();
                    drop(view);
                    self.reweigh(&key, &e, bytes);
                    true
                }
                Applied::Drop => {
                    drop(view);
                    self.entries.remove(&key);
                    self.dropped("undecidable");
                    false
                }
            }
        });
        self.apply_object(&shelf, &change, newest);
        let key = (tenant, ViewKey::Dashboard);
        if let Some(e) = self.entries.get(&key).filter(|e| self.valid(e)) {
            let mut view = e.view();
            if let View::Dashboard(d) = &mut *view {
                if !d.apply(&change) {
                    drop(view);
                    self.entries.remove(&key);
                    self.dropped("undecidable");
                }
            }
        }
    }

    fn apply_object(&self, shelf: &Arc<Shelf>, change: &RowChange, newest: Option<i64>) {
        let key = (shelf.tenant, ViewKey::Object(change.slot as u8, change.id));
        let current = self.entries.get(&key).filter(|e| self.valid(e));
        match (current, &change.new) {
            (Some(_), None) => {
                self.entries.remove(&key);
            }
            (Some(e), Some((facts, json))) => {
                let mut view = e.view();
                if let View::Object { version, body } = &mut *view {
                    if facts.version() > *version {
                        *version = facts.version();
                        *body = Tagged::new(json.to_vec());
                        let bytes = body.len();
                        drop(view);
                        self.reweigh(&key, &e, bytes);
                    }
                }
            }
            // The row as it was committed is its object's view: a client that wrote it
            // usually reads it back next, on any instance.
            (None, Some((facts, json))) if newest.is_none_or(|n| facts.version() > n) => {
                let epoch = self.epoch.load(Ordering::Acquire);
                let now = Instant::now();
                let body = Tagged::new(json.to_vec());
                let life = self.lifetimes.objects;
                let entry = Arc::new(Entry {
                    shelf: shelf.clone(),
                    slot: change.slot,
                    generation: shelf.generation(change.slot),
                    epoch,
                    installed: now,
                    fresh_until: now + life,
                    stale_until: now + life + self.lifetimes.fail_safe,
                    position: change.position,
                    weight: AtomicU64::new(body.len() as u64),
                    view: Mutex::new(View::Object {
                        version: facts.version(),
                        body,
                    }),
                });
                self.entries.insert(key, entry);
            }
            (None, _) => {}
        }
    }

    fn valid(&self, e: &Entry) -> bool {
        e.epoch == self.epoch.load(Ordering::Acquire) && e.generation == e.shelf.generation(e.slot)
    }
}

impl Dash {
    /// Applies a change: `false` when it cannot be placed (drop the view).
    fn apply(&mut self, change: &RowChange) -> bool {
        match self.base.sees(change.token) {
            Some(true) => return true,
            None => return false,
            Some(false) => {}
        }
        if let Some((old, _)) = &change.old {
            stats::add(&mut self.stats, &stats::contribution(old, self.now), -1);
        }
        if let Some((new, _)) = &change.new {
            stats::add(&mut self.stats, &stats::contribution(new, self.now), 1);
        }
        self.body = None;
        true
    }
}

/// What a fill knows when it starts: where its view belongs and what may end it.
struct Filling {
    generation: u64,
    epoch: u64,
    slot: FillSlot,
    slot_index: usize,
    /// The position read at (before the read: the floor asked for).
    position: u64,
    key: EntryKey,
}

fn slot_of<R: Resource>() -> Result<usize, AppError> {
    super::record::slot(R::SPEC.name)
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("no live slot for {}", R::SPEC.name)))
}

/// A read context that needs position `position` (0: any).
fn own_ctx(position: u64) -> ReadCtx {
    ReadCtx::new((position > 0).then(|| Lsn::from_u64(position)))
}

/// Where a fill read: a replica's replayed position, or (the primary) at least the floor.
fn read_position(ctx: &ReadCtx, floor: u64) -> u64 {
    ctx.source()
        .and_then(|s| s.replayed)
        .map_or(floor, Lsn::as_u64)
}
