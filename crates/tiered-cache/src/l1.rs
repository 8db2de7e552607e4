//! L1: the in-process store of values, bounded by total bytes, with per-entry deadlines.
//! Never decides policy or generations: it stores what it is given and answers by key and age.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::key::{L1Key, L1KeyRef};

/// Per-entry bookkeeping charged to the byte bound on top of key and value bytes (the entry
/// struct, the key's headers, the table slot), so many tiny entries cannot blow the bound.
pub(crate) const ENTRY_OVERHEAD: u64 = 96;

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    /// Served as a hit until then.
    pub(crate) fresh_until: Instant,
    /// Kept for the fail-safe until then; equal to `fresh_until` without a grace period.
    pub(crate) stale_until: Instant,
    /// When it was stored: while generations cannot be confirmed, only young entries are served.
    pub(crate) stored_at: Instant,
    /// The source position the value was read at: served only to lookups needing no more.
    pub(crate) position: u64,
}

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<L1Key, Entry> for Weigh {
    fn weight(&self, key: &L1Key, e: &Entry) -> u64 {
        key.len() as u64 + e.value.len() as u64 + ENTRY_OVERHEAD
    }
}

/// quick_cache was chosen over moka by measurement (`benches/cache.rs`, `bench/RESULTS.md`).
/// Its eviction is S3-FIFO (scan resistant, hit ratio on par with W-TinyLFU), and the weight
/// bound is enforced synchronously on insert, so the byte bound holds at every moment, not
/// after a maintenance pass. It has no TTL: deadlines live in the entry and are checked on read;
/// an expired entry still counts against the bound until read, evicted or replaced.
pub(crate) struct L1 {
    /// `None` when the bound is 0 bytes: L1 is off and every lookup goes to L2.
    cache: Option<quick_cache::sync::Cache<L1Key, Entry, Weigh>>,
}

pub(crate) enum Lookup {
    Fresh(Bytes),
    /// Read at `position`, below what the reader needs: a miss, and not even a fallback if the
    /// fill fails (it misses a change the reader must see). The position tells the caller
    /// whether other readers would have been served it.
    Behind {
        position: u64,
    },
    /// Not fresh (expired, or too old to be trusted now) but within the fail-safe grace: usable
    /// only if a fill fails.
    Stale(Bytes),
    Miss,
}

impl L1 {
    pub(crate) fn new(max_bytes: u64) -> Self {
        // The item estimate only sizes the tables up front; 2 KiB per entry is a guess.
        let estimated_items = (max_bytes / 2048).clamp(16, 1 << 22) as usize;
        Self {
            cache: (max_bytes > 0).then(|| {
                quick_cache::sync::Cache::with_weighter(estimated_items, max_bytes, Weigh)
            }),
        }
    }

    /// Looks `key` up; `max_age` (when set) makes entries stored longer ago than that count as
    /// stale (the generation could not be confirmed: they may have missed an invalidation), and
    /// so does an entry read at a position below `min_position` (it misses a change).
    pub(crate) fn get(
        &self,
        key: &L1KeyRef<'_>,
        now: Instant,
        max_age: Option<Duration>,
        min_position: u64,
    ) -> Lookup {
        let Some(cache) = &self.cache else {
            return Lookup::Miss;
        };
        let Some(e) = cache.get(key) else {
            return Lookup::Miss;
        };
        if e.position < min_position {
            return Lookup::Behind {
                position: e.position,
            };
        }
        let trusted = max_age.is_none_or(|age| now.saturating_duration_since(e.stored_at) <= age);
        if trusted && now < e.fresh_until {
            Lookup::Fresh(e.value)
        } else if now < e.stale_until {
            Lookup::Stale(e.value)
        } else {
            // Only remove the entry we looked at: a concurrent fill may have replaced it.
            cache.remove_if(key, |cur| cur.stale_until <= now);
            Lookup::Miss
        }
    }

    /// Stores an entry. quick_cache refuses (silently) one heavier than a shard's share of the
    /// bound; that is right for a cache: such a value is served but not kept.
    pub(crate) fn insert(&self, key: L1Key, entry: Entry) {
        if let Some(cache) = &self.cache {
            cache.insert(key, entry);
        }
    }

    pub(crate) fn remove(&self, key: &L1KeyRef<'_>) {
        if let Some(cache) = &self.cache {
            cache.remove(key);
        }
    }

    /// Whether there is an L1 at all (a bound above 0 bytes).
    pub(crate) fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    pub(crate) fn entries(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.len() as u64)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.weight())
    }
}
