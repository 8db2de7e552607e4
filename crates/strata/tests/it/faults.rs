//! The primary stops under a running instance (PostgreSQL primary with a
//! streaming replica, Redis for the cache and sessions): writes answer 503
//! with `Retry-After` at once, reads go on from the replica and the caches,
//! and everything recovers by itself when the primary is back.

use std::time::Duration;

use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use testkit::RedisServer;

use crate::cluster::{eventually, pg_ctl_in, Cluster};
use crate::support::{replica_contact_reads, test_config, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_stopped_writes_503_reads_go_on_then_recover() {
    let cluster = Cluster::start("0");
    let redis = RedisServer::start();
    let mut config = test_config(&cluster.url(cluster.primary_port));
    config.database_read_url = vec![cluster.url(cluster.replica_port)];
    config.redis_url = Some(redis.url());
    let app = TestApp::start(config, None).await;
    let alice = app.tenant("acme").await;
    let ann = alice
        .create_id("contacts", json!({"first_name": "Ann", "company": "Acme"}))
        .await;
    let bob = alice
        .create_id("contacts", json!({"first_name": "Bob"}))
        .await;
    let list = alice.get("/api/contacts").await;
    list.assert_status(200);
    let cached_object = alice.get(&format!("/api/contacts/{ann}")).await;
    cached_object.assert_status(200);

    // Let the replica replay everything the primary has written.
    let primary = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url(cluster.primary_port))
        .await
        .expect("primary connection");
    let replica = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url(cluster.replica_port))
        .await
        .expect("replica connection");
    let end: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&primary)
        .await
        .expect("primary position");
    primary.close().await;
    eventually(
        "the replica replays the primary's writes",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, bool>("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
                .bind(&end)
                .fetch_one(&replica)
                .await
                .unwrap_or(false)
        },
    )
    .await;

    let root = cluster.dir.path().to_owned();
    let dir = root.clone();
    tokio::task::spawn_blocking(move || pg_ctl_in(&dir, "primary", "stop"))
        .await
        .expect("primary stopped");

    // Writes: 503 with Retry-After, never a 500 or a hang.
    let writes = [
        alice
            .post("/api/contacts", &json!({"first_name": "During"}))
            .await,
        alice
            .patch(&format!("/api/contacts/{bob}"), &json!({"last_name": "X"}))
            .await,
        alice.delete(&format!("/api/contacts/{ann}")).await,
    ];
    for resp in &writes {
        resp.assert_error(503, "unavailable");
        assert!(
            resp.header("retry-after").is_some(),
            "Retry-After on a write"
        );
    }

    // Reads: what was cached, and what was not (from the replica, by its
    // own statistics), for the writer's session and for its session only.
    let before = replica_contact_reads(&replica).await;
    let during = alice.get("/api/contacts").await;
    during.assert_status(200);
    assert_eq!(during.text, list.text, "the cached page, unchanged");
    assert_eq!(
        alice.get(&format!("/api/contacts/{ann}")).await.text,
        cached_object.text
    );
    let search = alice.get("/api/contacts?q=acme").await;
    search.assert_status(200);
    assert_eq!(search.json()["total"], 1, "{}", search.text);
    alice
        .get(&format!("/api/contacts/{bob}"))
        .await
        .assert_status(200);
    let stats = alice.get("/api/dashboard/stats").await;
    stats.assert_status(200);
    assert_eq!(stats.json()["contacts"]["total"], 2);
    alice.get("/api/auth/me").await.assert_status(200);
    eventually(
        "the replica counts the reads that missed the cache",
        Duration::from_secs(20),
        || async { replica_contact_reads(&replica).await > before },
    )
    .await;
    // Nothing written during the outage shows up anywhere.
    assert_eq!(alice.get("/api/contacts?q=during").await.json()["total"], 0);

    // The primary comes back: writes succeed again without a restart of
    // the instance, and the session reads them at once.
    tokio::task::spawn_blocking(move || pg_ctl_in(&root, "primary", "start"))
        .await
        .expect("primary restarted");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let created = loop {
        let resp = alice
            .post("/api/contacts", &json!({"first_name": "After"}))
            .await;
        match resp.status.as_u16() {
            201 => break resp.json()["id"].as_str().expect("id").to_owned(),
            503 => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "writes still answer 503 30 s after the primary returned"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("a write while the primary returns: {other} {}", resp.text),
        }
    };
    alice
        .get(&format!("/api/contacts/{created}"))
        .await
        .assert_status(200);
    let page = alice.get("/api/contacts").await.json();
    assert_eq!(page["total"], 3, "{page}");
    app.anonymous().get("/readyz").await.assert_status(200);
}
