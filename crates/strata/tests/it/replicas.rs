//! Read replicas through the HTTP API, against a real streaming replica
//! that applies WAL 2 s late: reads land on the replica (by its own
//! statistics), a session reads its own writes at once on every route and
//! on every instance, and a replica outage fails no request.

use std::time::Duration;

use serde_json::json;
use sqlx::postgres::PgPoolOptions;

use crate::cluster::{eventually, pg_ctl_in, Cluster};
use crate::support::{replica_contact_reads, test_config, Client, TestApp};

async fn instance(cluster: &Cluster) -> TestApp {
    let mut config = test_config(&cluster.url(cluster.primary_port));
    config.database_read_url = vec![cluster.url(cluster.replica_port)];
    // The database's own guarantees, without the cache in front (the
    // cached path has its own tests, with Redis, in `cached.rs`).
    config.cache_mode = strata::config::CacheMode::Off;
    // The replica runs 2 s behind on purpose; within this bound it still
    // serves sessions that have not written (bounded staleness).
    config.replica_max_lag_ms = 10_000;
    config.admin_token = Some("operator".to_owned());
    TestApp::start(config, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_read_their_writes_through_a_lagging_replica() {
    let cluster = Cluster::start("2s");
    let a = instance(&cluster).await;
    let b = instance(&cluster).await;
    let replica = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url(cluster.replica_port))
        .await
        .expect("replica connection");

    let alice = a.tenant("acme").await;
    // The same session on the other instance.
    let alice_on_b = Client::new(&b.base, alice.token.clone());

    // Every route shows a write at once, on both instances, although the
    // replica will not apply it for 2 s.
    let contact = alice
        .create("contacts", json!({"first_name": "Fresh", "tags": ["new"]}))
        .await;
    let id = contact["id"].as_str().expect("id").to_owned();
    for client in [&alice, &alice_on_b] {
        client
            .get(&format!("/api/contacts/{id}"))
            .await
            .assert_status(200);
        assert_eq!(client.get("/api/contacts").await.json()["total"], 1);
        assert_eq!(
            client.list_ids("/api/contacts?tag=new").await,
            vec![id.clone()]
        );
        assert_eq!(
            client.get("/api/dashboard/stats").await.json()["contacts"]["total"],
            1
        );
    }
    let deal = alice_on_b
        .create(
            "deals",
            json!({"title": "Won", "stage": "won", "amount_cents": 500, "contact_id": id}),
        )
        .await;
    for client in [&alice, &alice_on_b] {
        let stats = client.get("/api/dashboard/stats").await.json();
        assert_eq!(stats["deals"]["won_cents_this_month"], 500, "{stats}");
        assert_eq!(
            client
                .get(&format!("/api/deals?contact_id={id}"))
                .await
                .json()["total"],
            1
        );
    }
    let path = format!("/api/deals/{}", deal["id"].as_str().expect("id"));
    alice
        .patch(&path, &json!({"title": "Renamed"}))
        .await
        .assert_status(200);
    assert_eq!(alice_on_b.get(&path).await.json()["title"], "Renamed");
    alice.delete(&path).await.assert_status(204);
    alice_on_b.get(&path).await.assert_error(404, "not_found");
    assert_eq!(
        alice_on_b.get("/api/dashboard/stats").await.json()["deals"]["won_cents_this_month"],
        0
    );

    // A session that has not written reads from the replica: its own
    // statistics count the reads.
    let tenant = alice.tenant_id.expect("tenant");
    a.user(tenant, "reader@acme.example", "reader-password")
        .await;
    let mut reader = a.anonymous();
    reader.login("reader@acme.example", "reader-password").await;
    // Wait until the replica has applied the schema and the writes (2 s).
    eventually(
        "the replica catches up",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM contacts")
                .fetch_one(&replica)
                .await
                .is_ok_and(|n| n == 1)
        },
    )
    .await;
    let before = replica_contact_reads(&replica).await;
    for _ in 0..20 {
        let page = reader.get("/api/contacts").await;
        page.assert_status(200);
        assert_eq!(page.json()["total"], 1);
    }
    eventually(
        "the replica counts the reader's reads",
        Duration::from_secs(20),
        || async { replica_contact_reads(&replica).await >= before + 20 },
    )
    .await;

    // The router's own figures: reads per target, lag.
    let scrape = a.scrape_metrics("operator").await;
    for needle in [
        "strata_db_queries_total{target=\"replica\"",
        "strata_db_replica_lag_seconds",
        "strata_db_replica_usable",
    ] {
        assert!(scrape.text.contains(needle), "metrics expose {needle}");
    }

    // A replica outage fails no request; reads move to the primary and
    // come back to the replica when it returns.
    let root = cluster.dir.path().to_owned();
    let dir = root.clone();
    let stop = tokio::task::spawn_blocking(move || pg_ctl_in(&dir, "replica", "stop"));
    for _ in 0..40 {
        reader.get("/api/contacts").await.assert_status(200);
        alice
            .get(&format!("/api/contacts/{id}"))
            .await
            .assert_status(200);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.await.expect("replica stopped");
    for _ in 0..20 {
        reader.get("/api/contacts").await.assert_status(200);
        reader.get("/api/dashboard/stats").await.assert_status(200);
    }
    let created = alice
        .create_id("contacts", json!({"first_name": "During outage"}))
        .await;
    alice_on_b
        .get(&format!("/api/contacts/{created}"))
        .await
        .assert_status(200);

    let restart = tokio::task::spawn_blocking(move || pg_ctl_in(&root, "replica", "start"));
    restart.await.expect("replica restarted");
    let replica = PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url(cluster.replica_port))
        .await
        .expect("replica connection after restart");
    let before = replica_contact_reads(&replica).await;
    eventually(
        "reads return to the replica",
        Duration::from_secs(60),
        || async {
            reader.get("/api/contacts").await.assert_status(200);
            replica_contact_reads(&replica).await > before + 5
        },
    )
    .await;
}
