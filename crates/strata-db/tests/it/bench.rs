//! The load-time target of `strata seed`: 100 tenants at scale 1 (about
//! 1.9 million rows) into a fresh PostgreSQL database in under 3 minutes.
//! Ignored by default (it takes minutes); run it in release:
//! `cargo test --release -p strata-db --test it -- --ignored --nocapture seed_benchmark`
//! (`STRATA_SEED_TENANTS` and `STRATA_SEED_SCALE` change the size,
//! `STRATA_SEED_BACKEND=sqlite` measures SQLite instead).

use std::time::Instant;

use strata_db::seed::{seed, SeedOptions};
use strata_db::Backend;

use crate::support::TestDb;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: a benchmark, run on demand in release"]
async fn seed_benchmark() {
    let backend = match std::env::var("STRATA_SEED_BACKEND").as_deref() {
        Ok("sqlite") => Backend::Sqlite,
        _ => Backend::Postgres,
    };
    let t = TestDb::new(backend).await;
    let opts = SeedOptions {
        tenants: env_or("STRATA_SEED_TENANTS", 100),
        scale: env_or("STRATA_SEED_SCALE", 1.0),
        password_hash: "x".into(),
        seed: 1,
    };
    let start = Instant::now();
    let seeded = seed(&t.db, &opts, |s| {
        eprintln!(
            "{:>7.1}s tenant {:>3}: {:>7} contacts",
            start.elapsed().as_secs_f64(),
            s.index,
            s.contacts
        )
    })
    .await
    .expect("seed");
    let elapsed = start.elapsed();
    let rows: u64 = seeded
        .iter()
        .map(|s| s.contacts + s.deals + s.tasks + s.invoices + s.orders)
        .sum();
    let tags = t.raw.count("SELECT COUNT(*) FROM contact_tags").await;
    eprintln!(
        "{backend:?}: seeded {} tenants, {rows} resource rows (+{tags} contact_tags) in {:.1}s: {:.0} rows/s",
        seeded.len(),
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
}
