//! The crate's errors: a fill that failed, and a configuration that cannot be built.
//! Never carries a Redis error to a caller of a cache operation: Redis trouble is absorbed.

use std::sync::Arc;
use std::time::Duration;

/// Why [`get_or_fill`](crate::TieredCache::get_or_fill) or [`warm`](crate::TieredCache::warm)
/// returned no value. Only the fill can cause one: Redis trouble never does.
///
/// Every caller waiting on the same fill receives the same error, hence the [`Arc`].
#[derive(Debug, thiserror::Error)]
pub enum CacheError<E> {
    /// The fill returned this error.
    #[error("fill failed: {0}")]
    Fill(#[source] Arc<E>),
    /// The fill did not finish within the fill timeout; it was cancelled.
    #[error("fill timed out after {0:?}")]
    FillTimeout(Duration),
    /// The fill panicked, or its task was cancelled (runtime shutting down).
    #[error("fill aborted (panicked or cancelled)")]
    FillAborted,
}

impl<E> Clone for CacheError<E> {
    fn clone(&self) -> Self {
        match self {
            CacheError::Fill(e) => CacheError::Fill(e.clone()),
            CacheError::FillTimeout(d) => CacheError::FillTimeout(*d),
            CacheError::FillAborted => CacheError::FillAborted,
        }
    }
}

/// Why [`CacheBuilder::build`](crate::CacheBuilder::build) failed: a setting is invalid. An
/// unreachable Redis is not an error (the cache starts degraded and connects later).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Redis URL could not be parsed.
    #[error("invalid Redis URL: {0}")]
    RedisUrl(#[source] redis::RedisError),
    /// The key prefix contains `{` or `}`, which would move the Redis Cluster hash tag.
    #[error("key prefix {0:?} must not contain '{{' or '}}'")]
    KeyPrefix(String),
    /// `build` was not called inside a Tokio runtime (the cache spawns its fills and its bus there).
    #[error("a Tokio runtime is required")]
    NoRuntime,
}
