//! Single flight: 1 000 concurrent misses of one key run the fill once, and all of them get its
//! value, or all of them its error.
//! Never relies on scheduling luck: the fill waits until every caller has joined.

use std::sync::Arc;
use std::time::Duration;

use tiered_cache::{Bytes, CacheError, FillContext, Namespace, TieredCache};

use crate::support::{cache, eventually, l1_only, Boom, Fills, RedisServer};

const CALLERS: usize = 1000;

type BoxedFill = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, Boom>> + Send>>;

/// A fill that holds until every other caller has joined it (so "exactly once" does not depend
/// on scheduling), then returns `result`.
fn gated_fill(
    cache: TieredCache,
    label: &'static str,
    fills: &Fills,
    result: Result<&'static str, Boom>,
) -> impl FnOnce(FillContext) -> BoxedFill + Send + 'static {
    let fills = fills.clone();
    move |_| {
        fills.tick();
        Box::pin(async move {
            eventually("every caller joined the flight", || {
                let joined = cache
                    .snapshot()
                    .labels
                    .get(label)
                    .map_or(0, |s| s.coalesced);
                std::future::ready(joined == (CALLERS - 1) as u64)
            })
            .await;
            result.map(|v| Bytes::from_static(v.as_bytes()))
        })
    }
}

async fn thousand_misses(cache: TieredCache, result: Result<&'static str, Boom>) -> Fills {
    let key = Namespace::new("acme:contacts", "contacts").key("hot");
    let fills = Fills::default();
    let mut tasks = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        let (cache, key) = (cache.clone(), key.clone());
        let fill = gated_fill(cache.clone(), "contacts", &fills, result);
        tasks.push(tokio::spawn(
            async move { cache.get_or_fill(&key, fill).await },
        ));
    }
    for t in tasks {
        let got = t.await.expect("caller task");
        match (&result, got) {
            (Ok(v), Ok(got)) => assert_eq!(got, *v),
            (Err(_), Err(CacheError::Fill(e))) => assert_eq!(*e, Boom),
            (_, got) => panic!("unexpected result {got:?}"),
        }
    }
    fills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_misses_fill_once_with_redis() {
    let redis = RedisServer::start();
    let cache = cache(&redis).await;
    let fills = thousand_misses(cache.clone(), Ok("v")).await;
    assert_eq!(fills.count(), 1);
    assert_eq!(cache.snapshot().labels["contacts"].fills, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_misses_share_one_error() {
    let cache = l1_only().await;
    let fills = thousand_misses(cache.clone(), Err(Boom)).await;
    assert_eq!(fills.count(), 1);
    // Errors are not cached: the next caller fills again.
    let key = Namespace::new("acme:contacts", "contacts").key("hot");
    let again = Fills::default();
    assert_eq!(
        cache.get_or_fill(&key, again.value("ok")).await.unwrap(),
        "ok"
    );
    assert_eq!(again.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_caller_does_not_cancel_the_fill_for_the_others() {
    let cache = Arc::new(l1_only().await);
    let key = Namespace::new("t:c", "c").key("k");
    let fills = Fills::default();
    let slow = {
        let fills = fills.clone();
        move |_| async move {
            fills.tick();
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, Boom>("slow")
        }
    };
    let leader = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move { cache.get_or_fill(&key, slow).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiter = {
        let (cache, key) = (cache.clone(), key.clone());
        let fill = fills.value("second");
        tokio::spawn(async move { cache.get_or_fill(&key, fill).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort();
    assert_eq!(waiter.await.unwrap().unwrap(), "slow");
    assert_eq!(fills.count(), 1);
}
