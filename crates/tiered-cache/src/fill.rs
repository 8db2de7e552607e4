//! The seam between the cache and the caller's `fill`: what a fill is told when it starts, what
//! it hands back, and the caller's condition on storing it.
//! Never runs or stores anything itself; `lib.rs` does, by these rules.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::key::Key;

/// What a fill is told when it starts.
///
/// The cache stores the fill's value only if the namespace's generation is still
/// [`generation`](Self::generation) when the value is written (checked atomically in Redis and
/// again locally), so a fill that raced with an invalidation never stores its possibly old value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FillContext {
    pub(crate) key: Key,
    pub(crate) generation: u64,
    pub(crate) position: u64,
}

impl FillContext {
    /// The key being filled.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The namespace's generation when the fill started: the "version" of the namespace that
    /// the value will be stored under. It changes on every invalidation of the namespace, so it
    /// can serve as a cheap validator (e.g. part of an ETag).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The highest position passed to [`TieredCache::invalidate_at`](crate::TieredCache::invalidate_at)
    /// for the namespace when the fill started (0 if none), or the reader's own position given
    /// to [`get_or_fill_after`](crate::TieredCache::get_or_fill_after) if higher: the point that
    /// the source the fill reads from must have reached for the value to be current. A server reading from replicas
    /// compares it with a replica's replay position (e.g. a PostgreSQL LSN) and reads from the
    /// primary if no replica has reached it, or reports the position it read at with
    /// [`Filled::at_position`] so that the cache refuses to store a value from behind it.
    pub fn position(&self) -> u64 {
        self.position
    }
}

/// What a fill returns: the value and whether (and as of when) it may be stored.
///
/// Every `fill` may return anything that converts into it: [`Bytes`], `Vec<u8>`, `String`,
/// `&'static str`, `&'static [u8]`, or a `Filled` built for more control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filled {
    pub(crate) value: Bytes,
    pub(crate) cacheable: bool,
    pub(crate) position: Option<u64>,
}

impl Filled {
    /// A value that may be stored.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Self {
            value: value.into(),
            cacheable: true,
            position: None,
        }
    }

    /// Returns the value to every waiter but never stores it (e.g. a partial result).
    pub fn uncacheable(mut self) -> Self {
        self.cacheable = false;
        self
    }

    /// The position the value was read at (e.g. the LSN a replica had replayed). The cache
    /// refuses to store it if it is below [`FillContext::position`], i.e. if the source had not
    /// yet seen the write behind the namespace's latest invalidation. A value stored without
    /// one counts as read at `FillContext::position`: report a position whenever the source
    /// may have been behind, or could have missed a write made while the fill ran.
    pub fn at_position(mut self, position: u64) -> Self {
        self.position = Some(position);
        self
    }

    /// The value.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// The position set by [`at_position`](Self::at_position).
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// Whether the fill allowed storing it.
    pub fn is_cacheable(&self) -> bool {
        self.cacheable
    }

    /// Whether the built-in rules allow storing it (cacheable, not behind the position).
    pub(crate) fn storable(&self, ctx: &FillContext) -> bool {
        self.cacheable && self.position.is_none_or(|p| p >= ctx.position)
    }
}

impl From<Bytes> for Filled {
    fn from(value: Bytes) -> Self {
        Filled::new(value)
    }
}

impl From<Vec<u8>> for Filled {
    fn from(value: Vec<u8>) -> Self {
        Filled::new(value)
    }
}

impl From<String> for Filled {
    fn from(value: String) -> Self {
        Filled::new(value)
    }
}

impl From<&'static str> for Filled {
    fn from(value: &'static str) -> Self {
        Filled::new(value)
    }
}

impl From<&'static [u8]> for Filled {
    fn from(value: &'static [u8]) -> Self {
        Filled::new(value)
    }
}

/// A condition every filled value must meet to be stored, set once with
/// [`CacheBuilder::store_condition`](crate::CacheBuilder::store_condition). It runs after the
/// built-in rules and before the generation-checked write; returning `false` still returns the
/// value to the callers, it just is not cached.
///
/// Any `Fn(&FillContext, &Filled) -> bool + Send + Sync` closure is one.
pub trait StoreCondition: Send + Sync + 'static {
    /// Whether `filled`, produced by the fill that started with `ctx`, may be stored.
    fn may_store(&self, ctx: &FillContext, filled: &Filled) -> bool;
}

impl<F> StoreCondition for F
where
    F: Fn(&FillContext, &Filled) -> bool + Send + Sync + 'static,
{
    fn may_store(&self, ctx: &FillContext, filled: &Filled) -> bool {
        self(ctx, filled)
    }
}

/// A shared [`StoreCondition`], so the builder stays `Clone` and `Debug`.
#[derive(Clone)]
pub(crate) struct Condition(pub(crate) Arc<dyn StoreCondition>);

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCondition")
    }
}
