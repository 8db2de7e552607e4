//! The race test: fills and invalidations hammered concurrently. Once `invalidate` has
//! returned, no `get_or_fill` that starts afterwards may return a value produced before it.
//! Fills already in flight may return their old value to their own callers, but must not store
//! it. Never checks readers of the other instance: the bus makes them consistent soon, not at
//! once (their fills still share L2 with the checked ones, which is the point).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tiered_cache::{Bytes, Namespace, TieredCache};

use crate::support::{builder, l1_only, Boom, RedisServer};

const KEYS: usize = 4;
const READERS: usize = 6;
const WRITES: u64 = 200;

/// `source` is the data: each write increments it, then invalidates. A fill reads it, then
/// dawdles (so invalidations overtake fills), then returns what it read.
async fn hammer(cache: TieredCache, other: Option<TieredCache>) -> u64 {
    let ns = Namespace::with_hash_tag("acme", "contacts", "contacts");
    let source = Arc::new(AtomicU64::new(0));
    // The newest version whose invalidation has returned.
    let committed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let fill_from = |source: Arc<AtomicU64>| {
        move |_| async move {
            let v = source.load(Ordering::SeqCst);
            let pause = rand::rng().random_range(0..1500);
            tokio::time::sleep(Duration::from_micros(pause)).await;
            Ok::<_, Boom>(Bytes::from(v.to_string()))
        }
    };

    let mut readers = Vec::new();
    for r in 0..READERS {
        // Some readers use the other instance: its fills share L2 with ours, and must never
        // place an old value where our readers can find it.
        let (checked, cache) = match (&other, r % 3) {
            (Some(o), 0) => (false, o.clone()),
            _ => (true, cache.clone()),
        };
        let (ns, source, committed, done) =
            (ns.clone(), source.clone(), committed.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(Ordering::SeqCst) {
                let key = ns.key((reads as usize % KEYS).to_string());
                let floor = committed.load(Ordering::SeqCst);
                let got = cache
                    .get_or_fill(&key, fill_from(source.clone()))
                    .await
                    .expect("fill never fails here");
                let got: u64 = std::str::from_utf8(&got).unwrap().parse().unwrap();
                if checked {
                    assert!(
                        got >= floor,
                        "read version {got} after the invalidation of version {floor} returned"
                    );
                }
                reads += 1;
            }
            reads
        }));
    }

    for _ in 0..WRITES {
        let v = source.fetch_add(1, Ordering::SeqCst) + 1;
        cache.invalidate(&ns).await;
        committed.fetch_max(v, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_micros(rand::rng().random_range(0..3000))).await;
    }
    done.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for r in readers {
        reads += r.await.expect("reader panicked");
    }
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_after_an_invalidation_returns_an_older_value_l1_only() {
    let cache = l1_only().await;
    let reads = hammer(cache.clone(), None).await;
    let s = &cache.snapshot().labels["contacts"];
    assert!(reads > 0);
    eprintln!(
        "l1 only: {reads} reads, {} fills, {} discarded",
        s.fills, s.fills_discarded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_after_an_invalidation_returns_an_older_value_with_redis() {
    let redis = RedisServer::start();
    let a = builder(&redis).build().await.unwrap();
    let b = builder(&redis).build().await.unwrap();
    let reads = hammer(a.clone(), Some(b.clone())).await;
    let (sa, sb) = (a.snapshot(), b.snapshot());
    assert!(reads > 0);
    eprintln!(
        "redis: {reads} reads; a: {} fills, {} discarded, {} l2 hits; b: {} fills, {} discarded",
        sa.labels["contacts"].fills,
        sa.labels["contacts"].fills_discarded,
        sa.labels["contacts"].l2.hits,
        sb.labels["contacts"].fills,
        sb.labels["contacts"].fills_discarded,
    );
}

/// The same with generations re-read from Redis every millisecond (as after a reconnect): a read
/// that left before an invalidation and returns after it must not roll the mirror back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_after_an_invalidation_returns_an_older_value_when_rereading_generations() {
    let redis = RedisServer::start();
    let a = builder(&redis)
        .generation_max_age(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    let reads = hammer(a.clone(), None).await;
    assert!(reads > 0);
}
