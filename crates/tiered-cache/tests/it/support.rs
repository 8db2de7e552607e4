//! Test support: a private redis-server per test (killed on drop), cache builders with test
//! settings, and polling for things that happen "soon" (bus delivery, reconnects).
//! Never shares a Redis between tests, so tests run in any order and in parallel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use testkit::{RedisServer, PATIENCE};
use tiered_cache::{Bytes, CacheBuilder, FillContext, TieredCache};

/// Test settings: timeouts generous enough that a loaded machine does not trip the breaker.
pub fn builder(redis: &RedisServer) -> CacheBuilder {
    TieredCache::builder()
        .redis_url(redis.url())
        .l2_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
        .breaker(5, Duration::from_millis(200))
}

pub async fn cache(redis: &RedisServer) -> TieredCache {
    builder(redis).build().await.expect("build cache")
}

pub async fn l1_only() -> TieredCache {
    TieredCache::builder().build().await.expect("build cache")
}

/// Polls `check` until it holds, failing the test after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The error every test fill fails with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

/// Counts the fills it hands out.
#[derive(Clone, Default)]
pub struct Fills(Arc<AtomicUsize>);

impl Fills {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Counts one fill (for fills written inline).
    pub fn tick(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// A fill that returns `value`.
    pub fn value(
        &self,
        value: &'static str,
    ) -> impl FnOnce(FillContext) -> std::future::Ready<Result<Bytes, Boom>> + Send + 'static {
        let n = self.0.clone();
        move |_| {
            n.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Bytes::from_static(value.as_bytes())))
        }
    }

    /// A fill that fails.
    pub fn error(
        &self,
    ) -> impl FnOnce(FillContext) -> std::future::Ready<Result<Bytes, Boom>> + Send + 'static {
        let n = self.0.clone();
        move |_| {
            n.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err(Boom))
        }
    }
}
