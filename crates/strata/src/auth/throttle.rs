//! Login throttling: counts failed logins per email and per client address
//! in a fixed window and refuses further attempts (429 + `Retry-After`)
//! once a key reaches its limit. In memory per instance (moka, bounded);
//! never stores a password.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

struct Window {
    failures: AtomicU32,
    started: Instant,
}

/// Failed-attempt counters that expire a window after their first failure.
pub struct Throttle {
    windows: Cache<String, Arc<Window>>,
    window: Duration,
}

impl Throttle {
    pub fn new(window: Duration) -> Self {
        Throttle {
            // Bounded so a flood of distinct keys cannot grow memory; under
            // such a flood the oldest counters are dropped first.
            windows: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(window)
                .build(),
            window,
        }
    }

    /// Seconds to wait when `key` has `limit` failures in its window already.
    pub fn blocked(&self, key: &str, limit: u32) -> Option<u64> {
        let window = self.windows.get(key)?;
        if window.failures.load(Ordering::Relaxed) < limit {
            return None;
        }
        let left = self.window.saturating_sub(window.started.elapsed());
        Some(left.as_secs().max(1))
    }

    /// Counts one failure for `key`.
    pub fn failed(&self, key: &str) {
        let window = self.windows.get_with(key.to_owned(), || {
            Arc::new(Window {
                failures: AtomicU32::new(0),
                started: Instant::now(),
            })
        });
        window.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets `key`'s failures (after a successful login).
    pub fn clear(&self, key: &str) {
        self.windows.invalidate(key);
    }
}

/// A token bucket per key (a session): `rate` writes a second on average,
/// bursts up to `burst`. In memory per instance, bounded, idle buckets
/// dropped after ten minutes.
pub struct WriteLimiter {
    buckets: Cache<[u8; 32], Arc<std::sync::Mutex<Bucket>>>,
    rate: f64,
    burst: f64,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl WriteLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        WriteLimiter {
            buckets: Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            rate,
            burst: burst.max(1.0),
        }
    }

    /// Takes one token for `key`; `Err(seconds)` to wait when there is none.
    pub fn take(&self, key: &[u8; 32]) -> Result<(), u64> {
        let bucket = self.buckets.get_with(*key, || {
            Arc::new(std::sync::Mutex::new(Bucket {
                tokens: self.burst,
                updated: Instant::now(),
            }))
        });
        let mut bucket = bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}
