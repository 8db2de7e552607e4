//! Read replicas against a real streaming replica: a private primary and a
//! `pg_basebackup` standby (with `recovery_min_apply_delay`), each its own
//! postmaster on a free port, run as the postgres user and killed on drop.
//! Where reads ran is judged by each server's own table statistics, never by
//! trusting the router. Never touches the shared server at 127.0.0.1:5432.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use strata_db::model::{db_time, Contact};
use strata_db::repo::{self, auth, stats, Resource};
use strata_db::{Db, DbConfig, ReadCtx, ReplicaSettings, ServedBy};
use uuid::Uuid;

use crate::support::TestDb;

use crate::cluster::{eventually, pg_ctl_in, Cluster};

/// How many times the server itself has scanned `contacts` (its statistics,
/// flushed by each backend within about a second).
async fn contact_scans(pool: &PgPool) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) \
         FROM pg_stat_user_tables WHERE relname = 'contacts'",
    )
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
    .unwrap_or(0)
}

fn contact(tenant: Uuid, name: &str) -> Contact {
    let now = db_time(Utc::now());
    Contact {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        first_name: name.to_owned(),
        last_name: None,
        email: None,
        phone: None,
        company: None,
        tags: vec![],
        created_at: now,
        updated_at: now,
    }
}

/// One read, with what served it (a fresh context per read).
async fn get_traced(db: &Db, tenant: Uuid, id: Uuid) -> Result<(bool, ServedBy), String> {
    let ctx = ReadCtx::new(None);
    let found = repo::get::<Contact>(&db.with_ctx(&ctx), tenant, id)
        .await
        .map_err(|e| e.to_string())?;
    let source = ctx.source().ok_or("a read records its source")?;
    Ok((found.is_some(), source.served_by))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_serves_reads_sessions_read_their_writes_and_outages_fail_nothing() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start("2s"))
        .await
        .expect("start the cluster");
    let mut config = DbConfig::new(cluster.url(cluster.primary_port));
    config.read_urls = vec![cluster.url(cluster.replica_port)];
    config.max_connections = 8;
    config.replicas = ReplicaSettings {
        // The apply delay alone is 2 s; the replica must stay in rotation.
        max_lag: Duration::from_secs(30),
        ban_base: Duration::from_secs(1),
        ban_max: Duration::from_secs(4),
        probe_interval: Duration::from_millis(200),
        // Loaded 2-core machines stall; a false ban here is only slower.
        probe_timeout: Duration::from_secs(3),
        max_primary_fallback_reads: None,
    };
    let db = Db::connect(&config).await.expect("connect");
    db.migrate().await.expect("migrate the primary");
    let raw = |port| {
        PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(&cluster.url(port))
            .expect("a raw pool")
    };
    let (primary_raw, replica_raw) = (raw(cluster.primary_port), raw(cluster.replica_port));

    let tenant = auth::create_tenant(&db, "replicated", "EUR")
        .await
        .expect("tenant")
        .id;
    let seeded = contact(tenant, "Seeded");
    repo::insert(&db, tenant, &seeded).await.expect("insert");
    let seeded_at = db.primary_lsn().await.expect("lsn").expect("postgres");
    eventually(
        "the replica is admitted and has replayed the seed",
        Duration::from_secs(30),
        || async {
            db.replica_status()
                .first()
                .is_some_and(|r| r.usable && r.replayed.is_some_and(|at| at >= seeded_at))
        },
    )
    .await;

    // 1. Reads land on the replica, by the replica's own statistics.
    let before = contact_scans(&replica_raw).await;
    for _ in 0..20 {
        let (found, by) = get_traced(&db, tenant, seeded.id).await.expect("read");
        assert!(found);
        assert_eq!(by, ServedBy::Replica(0));
    }
    eventually(
        "the replica counts 20 more scans of contacts",
        Duration::from_secs(20),
        || async { contact_scans(&replica_raw).await - before >= 20 },
    )
    .await;

    // 2. Read-your-writes with a 2 s apply delay: a context that wrote reads
    // its write at once, on every route; a read without it may not.
    let ctx = ReadCtx::new(None);
    let session = db.with_ctx(&ctx);
    let fresh = contact(tenant, "Fresh");
    repo::insert(&session, tenant, &fresh)
        .await
        .expect("insert");
    let written = ctx
        .last_write()
        .expect("a commit through a context reports its position");
    assert_eq!(ctx.min_lsn(), Some(written));
    // Without the context, nothing promises the write is visible yet; say
    // what happened rather than assert on timing.
    let (seen, by) = get_traced(&db, tenant, fresh.id).await.expect("read");
    eprintln!("read without min_lsn right after the write: found={seen} served_by={by:?}");
    let primary_before = contact_scans(&primary_raw).await;
    let got = repo::get::<Contact>(&session, tenant, fresh.id)
        .await
        .expect("get");
    assert_eq!(got.map(|c| c.id), Some(fresh.id));
    let (items, total) = repo::list::<Contact>(
        &session,
        tenant,
        &Contact::SPEC.default_params(),
        Utc::now(),
    )
    .await
    .expect("list");
    assert_eq!(total, 2);
    assert!(items.iter().any(|c| c.id == fresh.id));
    let dashboard = stats::dashboard(&session, tenant, Utc::now())
        .await
        .expect("stats");
    assert_eq!(dashboard.contacts.total, 2);
    // The guarantee is "what served these reads had the write", which is
    // the primary unless the replica replayed it meanwhile (a stalled
    // machine can take longer than the 2 s delay); its own statistics must
    // agree when it was the primary.
    let source = ctx.source().expect("reads record their source");
    assert!(
        source.has_replayed(written),
        "{source:?} had not replayed {written}"
    );
    eprintln!(
        "reads right after the write were served by {:?}",
        source.served_by
    );
    if source.served_by == ServedBy::Primary {
        eventually(
            "the primary counts the session's scans",
            Duration::from_secs(20),
            || async { contact_scans(&primary_raw).await - primary_before >= 3 },
        )
        .await;
    }
    // Once the replica has replayed the write, the same context uses it.
    eventually(
        "the replica replays the write",
        Duration::from_secs(30),
        || async {
            db.replica_status()
                .first()
                .is_some_and(|r| r.replayed.is_some_and(|at| at >= written))
        },
    )
    .await;
    let later = ReadCtx::new(Some(written));
    let got = repo::get::<Contact>(&db.with_ctx(&later), tenant, fresh.id)
        .await
        .expect("get");
    assert!(got.is_some());
    let source = later.source().expect("source");
    assert_eq!(source.served_by, ServedBy::Replica(0));
    assert!(source.has_replayed(written));
    // Deletes (a plain `execute`) report their position too.
    assert!(repo::delete::<Contact>(&session, tenant, fresh.id)
        .await
        .expect("delete")
        .is_some());
    assert!(ctx.last_write().is_some_and(|at| at > written));

    // 3. Stopping the replica mid-traffic fails no read; reads move to the
    // primary, and come back once it restarts.
    #[derive(Default)]
    struct Tally {
        replica: u64,
        primary: u64,
        errors: Vec<String>,
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (db, tally, stop) = (db.clone(), tally.clone(), stop.clone());
        let id = seeded.id;
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let result = get_traced(&db, tenant, id).await;
                {
                    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                    match result {
                        Ok((true, ServedBy::Replica(_))) => t.replica += 1,
                        Ok((true, ServedBy::Primary)) => t.primary += 1,
                        Ok((false, by)) => t.errors.push(format!("row missing on {by:?}")),
                        Err(e) => t.errors.push(e),
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let counts = || {
        let t = tally.lock().unwrap_or_else(|p| p.into_inner());
        (t.replica, t.primary)
    };
    eventually(
        "traffic reaches the replica",
        Duration::from_secs(20),
        || async { counts().0 >= 5 },
    )
    .await;

    let root = cluster.dir.path().to_owned();
    let dir = root.clone();
    let stopping = tokio::task::spawn_blocking(move || pg_ctl_in(&dir, "replica", "stop"));
    stopping.await.expect("stop the replica");
    let (_, primary_at_stop) = counts();
    eventually(
        "reads move to the primary",
        Duration::from_secs(30),
        || async { counts().1 >= primary_at_stop + 20 },
    )
    .await;
    assert!(db.replica_status().first().is_some_and(|r| !r.usable));

    let (replica_at_restart, _) = counts();
    let starting = tokio::task::spawn_blocking(move || pg_ctl_in(&root, "replica", "start"));
    starting.await.expect("restart the replica");
    eventually(
        "reads come back to the restarted replica",
        Duration::from_secs(45),
        || async { counts().0 >= replica_at_restart + 20 },
    )
    .await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.expect("the reader task");
    {
        let t = tally.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            t.errors.is_empty(),
            "reads failed during the outage: {:?}",
            t.errors
        );
        eprintln!(
            "reads: {} on the replica, {} on the primary, none failed",
            t.replica, t.primary
        );
    }
    db.close().await;
    drop(cluster);
}

/// A read that needs a write made a moment ago asks the replica how far it
/// has replayed instead of going straight to the primary: the prober's last
/// look (here long ago, its interval being 20 s) is not the replica's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_write_asks_the_replica_before_falling_back() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start("0"))
        .await
        .expect("start the cluster");
    let mut config = DbConfig::new(cluster.url(cluster.primary_port));
    config.read_urls = vec![cluster.url(cluster.replica_port)];
    config.replicas = ReplicaSettings {
        max_lag: Duration::from_secs(30),
        probe_interval: Duration::from_secs(20),
        probe_timeout: Duration::from_secs(3),
        ..ReplicaSettings::default()
    };
    let db = Db::connect(&config).await.expect("connect");
    db.migrate().await.expect("migrate the primary");
    let tenant = auth::create_tenant(&db, "catching-up", "EUR")
        .await
        .expect("tenant")
        .id;
    eventually(
        "the replica is admitted",
        Duration::from_secs(30),
        || async { db.replica_status().first().is_some_and(|r| r.usable) },
    )
    .await;
    let replica_raw = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy(&cluster.url(cluster.replica_port))
        .expect("a raw pool");
    let before = contact_scans(&replica_raw).await;

    let mut on_replica = 0;
    for attempt in 0..20 {
        let ctx = ReadCtx::new(None);
        let session = db.with_ctx(&ctx);
        let fresh = contact(tenant, &format!("Fresh {attempt}"));
        repo::insert(&session, tenant, &fresh)
            .await
            .expect("insert");
        let written = ctx.last_write().expect("a commit reports its position");
        let known = db.replica_status().first().and_then(|r| r.replayed);
        assert!(
            known.is_none_or(|at| at < written),
            "the router cannot have learned of the write yet"
        );
        // The session's next request, a moment later.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let got = repo::get::<Contact>(&session, tenant, fresh.id)
            .await
            .expect("get");
        assert_eq!(got.map(|c| c.id), Some(fresh.id), "read-your-writes");
        let source = ctx.source().expect("a read records its source");
        assert!(source.has_replayed(written), "{source:?} before {written}");
        if source.served_by == ServedBy::Replica(0) {
            on_replica += 1;
        }
    }
    eprintln!("{on_replica} of 20 reads right after their write were served by the replica");
    assert!(
        on_replica > 0,
        "every read after a write went to the primary"
    );
    eventually(
        "the replica's own statistics count those reads",
        Duration::from_secs(20),
        || async { contact_scans(&replica_raw).await - before >= on_replica },
    )
    .await;
    db.close().await;
    drop(cluster);
}

/// SQLite keeps the routing shape: reads on the reader pool (replica 0,
/// never behind), writes on the writer; commit positions come from a
/// counter (the cache orders writes and fills by them), and reads never wait
/// for one.
#[tokio::test]
async fn sqlite_reads_use_the_reader_pool_which_is_never_behind() {
    let t = TestDb::sqlite().await;
    let ctx = ReadCtx::new(None);
    let db = t.db.with_ctx(&ctx);
    assert_eq!(ctx.last_write(), None);
    let tenant = auth::create_tenant(&db, "embedded", "EUR")
        .await
        .expect("tenant")
        .id;
    let first = ctx.last_write().expect("a commit's position");
    let row = contact(tenant, "Local");
    repo::insert(&db, tenant, &row).await.expect("insert");
    let second = ctx.last_write().expect("a commit's position");
    assert!(second > first, "positions grow: {first} then {second}");
    // A context demanding a position far ahead reads at once all the same.
    let ahead = ReadCtx::new(Some(strata_db::Lsn::from_u64(second.as_u64() + 1_000_000)));
    assert!(repo::get::<Contact>(&t.db.with_ctx(&ahead), tenant, row.id)
        .await
        .expect("get")
        .is_some());
    assert!(repo::get::<Contact>(&db, tenant, row.id)
        .await
        .expect("get")
        .is_some());
    let source = ctx.source().expect("a read happened");
    assert_eq!(source.served_by, ServedBy::Replica(0));
    assert_eq!(source.replayed, None);
    assert!(source.has_replayed(strata_db::Lsn::MAX));
    assert!(t.db.replica_status().is_empty());
}
