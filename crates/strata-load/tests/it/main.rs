//! The load tool against the real server: a Strata in-process on port 0
//! with a fresh SQLite database and two seeded tenants, driven for a few
//! seconds in a closed loop (every class must run, nothing may fail, and
//! the report's counts must add up) and in an open one (its whole schedule
//! is sent and answered).

use std::time::Duration;

use clap::Parser;
use strata::app::AppState;
use strata_db::seed::{seed, SeedOptions};
use strata_db::Db;
use strata_load::{Class, LoadConfig, Mode};

/// A server with its own database, stopped on drop.
struct Server {
    base: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn seeded_server(tenants: u32, password: &str) -> Server {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut cli = strata::cli::Cli::try_parse_from(["strata"]).expect("defaults parse");
    cli.config.database_url = format!("sqlite://{}", dir.path().join("strata.db").display());
    cli.config.db_max_connections = 4;
    let config = cli.config;
    let db = Db::connect(&config.db()).await.expect("connect");
    db.migrate().await.expect("migrate");
    let options = SeedOptions {
        tenants,
        scale: 0.01,
        password_hash: strata::auth::password::hash(password).expect("hash"),
        seed: 7,
    };
    seed(&db, &options, |_| {}).await.expect("seed");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let state = AppState::new(config, db).await.expect("state");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(strata::app::serve(state, listener, async move {
        let _ = rx.await;
    }));
    Server {
        base,
        shutdown: Some(tx),
        _dir: dir,
    }
}

const PASSWORD: &str = "load-test-password";

/// The smoke profile against `server`'s two tenants.
fn smoke_config(server: &Server) -> LoadConfig {
    let mut config = LoadConfig::smoke(vec![server.base.clone()]);
    config.tenants = 2;
    config.password = PASSWORD.to_owned();
    config
}

/// The open loop sends exactly its schedule: `rate × duration` requests,
/// spread over the sessions, each answered, whatever the machine's pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_sends_its_whole_schedule() {
    let server = seeded_server(2, PASSWORD).await;
    let mut config = smoke_config(&server);
    // 12.5 requests a second per session, about 1.3 writes: far under the
    // server's per-session write limit.
    config.mode = Mode::Open {
        rate: 100.0,
        users: 8,
        max_in_flight: 64,
    };
    config.duration = Duration::from_secs(2);
    config.warmup = Duration::ZERO;

    let report = strata_load::run(&config).await.expect("the run starts");
    println!("{}", report.table());

    assert_eq!(report.class(Class::Login).requests, 8);
    assert_eq!(report.all.requests, 200, "100 a second for 2 s");
    assert_eq!(report.all.ok, 200, "{:?}", report.errors_by_status);
    assert_eq!(
        report.transport_errors, 0,
        "{:?}",
        report.transport_error_samples
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_exercises_every_class_without_errors() {
    let server = seeded_server(2, PASSWORD).await;
    let mut config = smoke_config(&server);
    // At most 100 requests per second per user (think time ≥ 5 ms), so at
    // most ~10 writes per second per session: well under the server's
    // per-session write limit (STRATA_WRITE_RATE, 20/s) on any machine.
    config.mode = Mode::Closed {
        users: 16,
        think: Duration::from_millis(10),
    };
    config.duration = Duration::from_secs(3);
    config.warmup = Duration::from_secs(2);
    config.server_pid = Some(std::process::id());
    // The server has no /metrics yet: the hook must report that, not fail.
    config.metrics_url = Some(format!("{}/metrics", server.base));

    let report = strata_load::run(&config).await.expect("the run starts");
    println!("{}", report.table());

    for class in Class::ALL {
        let c = report.class(class);
        assert!(c.requests > 0, "class {} never ran", c.class);
        assert_eq!(
            c.requests,
            c.ok + c.http_errors + c.transport_errors,
            "{} counts",
            c.class
        );
        assert_eq!(
            c.statuses.values().sum::<u64>() + c.transport_errors,
            c.requests,
            "{} statuses",
            c.class
        );
    }
    assert_eq!(
        report.class(Class::Login).requests,
        16,
        "each user logs in once"
    );
    assert_eq!(
        report.server_errors(),
        0,
        "5xx answers: {:?}",
        report.errors_by_status
    );
    assert_eq!(
        report.transport_errors, 0,
        "{:?}",
        report.transport_error_samples
    );
    assert!(
        report.errors_by_status.is_empty(),
        "the mix only sends valid requests: {:?}",
        report.errors_by_status
    );
    let mix: u64 = Class::ALL
        .iter()
        .filter(|c| **c != Class::Login)
        .map(|c| report.class(*c).requests)
        .sum();
    assert_eq!(report.all.requests, mix);
    // Rates are over the measured phase alone (3 s and the last answers),
    // the 2 s warm-up left out.
    assert_eq!(report.warmup_secs, 2.0);
    assert!(
        (3.0..5.0).contains(&report.duration_secs),
        "{}",
        report.duration_secs
    );
    assert_eq!(report.requests, mix + 16);
    assert!(report.throughput_rps > 0.0);
    assert!(
        (0.02..0.25).contains(&report.write_share),
        "about 10 % writes, got {}",
        report.write_share
    );

    let rss = report.server.as_ref().expect("rss sampled");
    assert!(rss.after_kib > 0 && rss.peak_sampled_kib >= rss.after_kib);
    let metrics = report.metrics.as_ref().expect("metrics hook ran");
    assert!(metrics.unavailable.is_some(), "{metrics:?}");

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    assert_eq!(json["requests"].as_u64(), Some(report.requests));
    assert!(report.markdown("test").contains("| search |"));
}

#[tokio::test]
async fn targets_off_loopback_are_refused() {
    let config = LoadConfig::smoke(vec!["http://192.0.2.1:8080".into()]);
    let error = strata_load::run(&config).await.expect_err("refused");
    assert!(error.to_string().contains("loopback"), "{error}");
}
