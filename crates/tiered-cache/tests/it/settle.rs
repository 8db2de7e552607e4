//! Settling invalidations (`Policy::settle`): a write's invalidation keeps older entries
//! servable to other readers for the window, never to the writer, and never past the window,
//! on one instance and across two sharing a Redis.
//! The data source is a counter standing for a database's commit position; each fill reads it
//! and reports the position it read at, as a replica read would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tiered_cache::{Bytes, FillContext, Filled, Key, Namespace, Policy, TieredCache};
use tokio::sync::oneshot;

use crate::support::{builder, Boom, RedisServer};

const WINDOW: Duration = Duration::from_millis(400);

/// A source at a position, and how many times it was read.
#[derive(Clone, Default)]
struct Source {
    position: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
}

impl Source {
    /// A write: the source moves to `position`.
    fn write(&self, position: u64) {
        self.position.store(position, Ordering::SeqCst);
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// A fill reading the source: `v<position>`, reported at that position.
    fn fill(
        &self,
    ) -> impl FnOnce(FillContext) -> std::future::Ready<Result<Filled, Boom>> + Send + 'static {
        let source = self.clone();
        move |ctx: FillContext| {
            source.reads.fetch_add(1, Ordering::SeqCst);
            let at = source.position.load(Ordering::SeqCst);
            assert!(at >= ctx.position(), "the test source never lags");
            std::future::ready(Ok(Filled::new(format!("v{at}")).at_position(at)))
        }
    }
}

/// The policy of the `contacts` label in these tests.
fn settling_policy() -> Policy {
    Policy::new(Duration::from_secs(60)).settle(WINDOW)
}

fn settling(b: tiered_cache::CacheBuilder) -> tiered_cache::CacheBuilder {
    b.policy("contacts", settling_policy())
}

/// The namespace the tests write to, and the key they read.
fn contacts() -> (Namespace, Key) {
    let ns = Namespace::new("acme/contacts", "contacts");
    let key = ns.key("page=1");
    (ns, key)
}

async fn read(cache: &TieredCache, own: u64, source: &Source) -> Bytes {
    cache
        .get_or_fill_after(&contacts().1, own, source.fill())
        .await
        .expect("fill")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_coalesce_for_others_but_never_hide_from_their_writer_across_instances() {
    let redis = RedisServer::start();
    let a = settling(builder(&redis)).build().await.expect("cache a");
    let b = settling(builder(&redis)).build().await.expect("cache b");
    let (ns, _) = contacts();
    let source = Source::default();
    source.write(10);
    assert_eq!(read(&a, 0, &source).await, "v10");
    assert_eq!(read(&b, 0, &source).await, "v10"); // from L2
    assert_eq!(source.reads(), 1);

    // Three writes in a burst, made through a.
    for position in [20, 30, 40] {
        source.write(position);
        a.invalidate_at(&ns, position).await;
    }
    a.sync_peers().await;
    // Other readers, on both instances, are served the entry: no refill per write.
    assert_eq!(read(&a, 0, &source).await, "v10");
    assert_eq!(read(&b, 0, &source).await, "v10");
    // So is a reader whose own changes it already has.
    assert_eq!(read(&b, 10, &source).await, "v10");
    assert_eq!(source.reads(), 1);
    // The writer of any of the three is not, on either instance.
    let behind_own = |c: &TieredCache| c.snapshot().labels["contacts"].behind_own;
    assert_eq!(behind_own(&b), 0);
    assert_eq!(read(&b, 20, &source).await, "v40");
    assert_eq!(source.reads(), 2);
    // That miss is counted as one only the reader's own write caused.
    assert_eq!(behind_own(&b), 1);
    // That fill replaced the entry in L2 and b's L1, so b's other readers now see it too...
    assert_eq!(read(&b, 0, &source).await, "v40");
    // ...and a's writer finds it in L2 instead of reading the source again.
    assert_eq!(read(&a, 40, &source).await, "v40");
    assert_eq!(source.reads(), 2);
    assert_eq!(behind_own(&a), 1); // a's L1 copy was behind its writer

    // After the window, nobody is served an entry that misses a write.
    source.write(50);
    b.invalidate_at(&ns, 50).await;
    b.sync_peers().await;
    tokio::time::sleep(WINDOW + Duration::from_millis(50)).await;
    assert_eq!(read(&a, 0, &source).await, "v50");
    assert_eq!(read(&b, 0, &source).await, "v50");
    assert_eq!(source.reads(), 3);
    // Those misses are the window's, not a reader's own write's.
    assert_eq!(behind_own(&a) + behind_own(&b), 2);

    // A plain invalidation (no position) still drops everything at once, everywhere.
    source.write(60);
    a.invalidate(&ns).await;
    a.sync_peers().await;
    assert_eq!(read(&b, 0, &source).await, "v60");
}

#[tokio::test]
async fn a_fill_that_raced_a_write_is_not_served_past_the_window_without_redis() {
    let cache = settling(TieredCache::builder())
        .build()
        .await
        .expect("cache");
    let (ns, key) = contacts();
    let source = Source::default();
    source.write(10);

    // A fill reads the source at 10, then stalls; meanwhile a write moves it to 20.
    let (read_done, stalled) = oneshot::channel();
    let (resume, resumed) = oneshot::channel::<()>();
    let racing = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move {
            cache
                .get_or_fill(&key, move |_: FillContext| async move {
                    let _ = read_done.send(());
                    let _ = resumed.await;
                    Ok::<_, Boom>(Filled::new("v10").at_position(10))
                })
                .await
        })
    };
    stalled.await.expect("fill started");
    source.write(20);
    cache.invalidate_at(&ns, 20).await;
    resume.send(()).expect("fill waiting");
    assert_eq!(racing.await.expect("task").expect("fill"), "v10");

    // The old value went in, but its writer never sees it...
    assert_eq!(read(&cache, 20, &source).await, "v20");
    // ...and, once the window has passed, neither does anyone else.
    source.write(30);
    cache.invalidate_at(&ns, 30).await;
    assert_eq!(read(&cache, 0, &source).await, "v20");
    tokio::time::sleep(WINDOW + Duration::from_millis(50)).await;
    assert_eq!(read(&cache, 0, &source).await, "v30");
    // A namespace without a settle window drops entries at the write, as before.
    let plain = Namespace::new("acme/deals", "deals");
    let deals = plain.key("page=1");
    let fill = |v: &'static str| move |_: FillContext| async move { Ok::<_, Boom>(v) };
    assert_eq!(cache.get_or_fill(&deals, fill("old")).await.unwrap(), "old");
    cache.invalidate_at(&plain, 40).await;
    assert_eq!(cache.get_or_fill(&deals, fill("new")).await.unwrap(), "new");
}

#[tokio::test]
async fn an_entry_a_write_settled_is_no_fail_safe_fallback() {
    let cache = TieredCache::builder()
        .policy(
            "contacts",
            settling_policy().fail_safe(Duration::from_secs(300)),
        )
        .build()
        .await
        .expect("cache");
    let (ns, key) = contacts();
    let source = Source::default();
    source.write(10);
    assert_eq!(read(&cache, 0, &source).await, "v10");
    cache.invalidate_at(&ns, 20).await;
    // The source is down from here on.
    let down = |_: FillContext| async { Err::<Bytes, _>(Boom) };

    // Within the window, other readers are served the entry without a fill...
    assert_eq!(cache.get_or_fill(&key, down).await.expect("hit"), "v10");
    // ...but its writer gets the fill's error, not a value missing its write.
    let writer = cache.get_or_fill_after(&key, 20, down).await;
    assert!(writer.is_err(), "the writer was served {writer:?}");
    // After the window, nobody is served it, not even as a fail-safe fallback.
    tokio::time::sleep(WINDOW + Duration::from_millis(50)).await;
    let other = cache.get_or_fill(&key, down).await;
    assert!(other.is_err(), "another reader was served {other:?}");
}

/// `prime` stores what another fill read (a list page's objects) only where a fill of the key
/// reading the same would be stored, and a primed entry is then a hit like a filled one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primed_values_follow_the_rules_of_fills() {
    let redis = RedisServer::start();
    let cache = settling(builder(&redis)).build().await.expect("cache");
    let (ns, key) = contacts();
    let source = Source::default();
    source.write(10);
    let now = std::time::Instant::now;
    let primed = |c: &TieredCache| c.snapshot().labels["contacts"].primed;

    // The primed value is a hit: no fill reads the source.
    assert!(cache.prime(&key, "v10", 10, now()).await);
    assert_eq!(read(&cache, 0, &source).await, "v10");
    assert_eq!(source.reads(), 0);
    assert_eq!(primed(&cache), 1);

    // A write at 20: a value read before it is not primed...
    source.write(20);
    cache.invalidate_at(&ns, 20).await;
    assert!(!cache.prime(&key, "v15", 15, now()).await);
    // ...so its writer reads the source, and one read after it is primed.
    assert_eq!(read(&cache, 20, &source).await, "v20");
    assert_eq!(source.reads(), 1);
    assert!(cache.prime(&key, "v25", 25, now()).await);
    assert_eq!(read(&cache, 20, &source).await, "v25");
    assert_eq!(source.reads(), 1);

    // A deletion of the key after the read started fences what it read.
    let started = now();
    cache.delete(&key).await;
    source.write(30);
    assert!(!cache.prime(&key, "v28", 28, started).await);
    assert_eq!(read(&cache, 0, &source).await, "v30");
    assert_eq!(source.reads(), 2);
    assert_eq!(primed(&cache), 2);

    // Without an L1 there is nothing to prime.
    let l2_only = settling(builder(&redis))
        .l1_max_bytes(0)
        .build()
        .await
        .expect("cache without L1");
    assert_eq!(l2_only.get(&key).await.as_deref(), Some(&b"v30"[..]));
    assert!(!l2_only.prime(&key, "v30", 30, now()).await);
}
