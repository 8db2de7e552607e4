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
