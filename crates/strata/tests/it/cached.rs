//! The cache in the request path, the way production runs it: two server
//! instances sharing one Redis (L2, invalidation bus, sessions) and one
//! PostgreSQL primary with a streaming replica that applies WAL 2 s late.
//! Checks every consistency rule of the contract across instances, logout
//! on one instance at once on the other, tenant isolation in every cache
//! layer, warming at login, the operator routes, sessions surviving a
//! restart, and a Redis outage that fails no request.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::RedisServer;

use crate::cluster::{eventually, Cluster};
use crate::support::{test_config, Client, TestApp};

const ADMIN: (&str, &str) = ("authorization", "Bearer operator");

async fn instance(cluster: &Cluster, redis: &RedisServer) -> TestApp {
    let mut config = test_config(&cluster.url(cluster.primary_port));
    config.database_read_url = vec![cluster.url(cluster.replica_port)];
    config.replica_max_lag_ms = 10_000;
    config.redis_url = Some(redis.url());
    config.admin_token = Some("operator".to_owned());
    TestApp::start(config, None).await
}

/// Two instances on one PostgreSQL primary and replica (`lag` behind) and
/// one Redis, and tenant acme's admin logged in on `a`, with the same
/// session addressed to `b`: `(cluster, redis, a, b, alice, alice_b)`. Bind
/// them in this order, so that the servers stop before the databases.
async fn two_instances(lag: &str) -> (Cluster, RedisServer, TestApp, TestApp, Client, Client) {
    let cluster = Cluster::start(lag);
    let redis = RedisServer::start();
    let a = instance(&cluster, &redis).await;
    let b = instance(&cluster, &redis).await;
    let alice = a.tenant("acme").await;
    let alice_b = Client::new(&b.base, alice.token.clone());
    (cluster, redis, a, b, alice, alice_b)
}

async fn admin(app: &TestApp, path: &str) -> Value {
    let resp = app
        .anonymous()
        .request(reqwest::Method::GET, path, None, &[ADMIN])
        .await;
    resp.assert_status(200);
    resp.json()
}

async fn reset(app: &TestApp) {
    app.anonymous()
        .request(
            reqwest::Method::POST,
            "/api/admin/cache/reset",
            None,
            &[ADMIN],
        )
        .await
        .assert_status(204);
}

fn view(metrics: &Value, view: &str, field: &str) -> u64 {
    let v = &metrics["views"][view];
    match field.split_once('.') {
        Some((layer, f)) => v[layer][f].as_u64().unwrap_or(0),
        None => v[field].as_u64().unwrap_or(0),
    }
}

/// Everything a session reads after its own write shows the write, on
/// either instance, although the replica is 2 s behind and both instances
/// had the old answers cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_on_every_route_and_instance() {
    let (_cluster, _redis, a, b, alice, alice_b) = two_instances("2s").await;
    let routes = |id: &str| {
        [
            "/api/contacts".to_owned(),
            "/api/contacts?tag=vip".to_owned(),
            "/api/contacts?sort=first_name&per_page=5".to_owned(),
            format!("/api/contacts/{id}"),
            format!("/api/deals?contact_id={id}"),
            "/api/deals?open=true".to_owned(),
            "/api/dashboard/stats".to_owned(),
        ]
    };
    let contact = alice
        .create_id("contacts", json!({"first_name": "Ann", "tags": ["vip"]}))
        .await;
    // Both instances cache every view (twice: the second read is a hit).
    for client in [&alice, &alice_b, &alice, &alice_b] {
        for path in routes(&contact) {
            client.get(&path).await.assert_status(200);
        }
    }

    for round in 0..5 {
        let (writer, reader) = if round % 2 == 0 {
            (&alice, &alice_b)
        } else {
            (&alice_b, &alice)
        };
        let name = format!("Ann{round}");
        writer
            .patch(
                &format!("/api/contacts/{contact}"),
                &json!({"first_name": name}),
            )
            .await
            .assert_status(200);
        let deal = writer
            .create_id(
                "deals",
                json!({"title": format!("D{round}"), "contact_id": contact, "amount_cents": 100}),
            )
            .await;
        for client in [reader, writer] {
            let c = client.get(&format!("/api/contacts/{contact}")).await.json();
            assert_eq!(c["first_name"], name.as_str(), "round {round}: object");
            let list = client.get("/api/contacts?tag=vip").await.json();
            assert_eq!(
                list["items"][0]["first_name"],
                name.as_str(),
                "round {round}: list"
            );
            let sorted = client
                .get("/api/contacts?per_page=5&sort=first_name")
                .await
                .json();
            assert_eq!(
                sorted["items"][0]["first_name"],
                name.as_str(),
                "normalised key"
            );
            let deals = client
                .get(&format!("/api/deals?contact_id={contact}"))
                .await
                .json();
            assert_eq!(deals["total"], round + 1, "round {round}: deals by contact");
            let stats = client.get("/api/dashboard/stats").await.json();
            assert_eq!(stats["deals"]["open"], round + 1, "round {round}: {stats}");
            assert_eq!(stats["deals"]["pipeline_cents"], 100 * (round + 1));
            client
                .get(&format!("/api/deals/{deal}"))
                .await
                .assert_status(200);
        }
    }

    // A delete that changes other resources (deals lose their contact).
    let spare = alice
        .create_id("contacts", json!({"first_name": "Spare"}))
        .await;
    let orphan = alice
        .create_id("deals", json!({"title": "Orphan", "contact_id": spare}))
        .await;
    for client in [&alice, &alice_b] {
        let d = client.get(&format!("/api/deals/{orphan}")).await.json();
        assert_eq!(d["contact_id"], spare.as_str());
        client.get("/api/deals?open=true").await.assert_status(200);
    }
    alice_b
        .delete(&format!("/api/contacts/{spare}"))
        .await
        .assert_status(204);
    for client in [&alice, &alice_b] {
        client
            .get(&format!("/api/contacts/{spare}"))
            .await
            .assert_error(404, "not_found");
        let d = client.get(&format!("/api/deals/{orphan}")).await.json();
        assert_eq!(d["contact_id"], Value::Null, "the deal lost its contact");
        let open = client.get("/api/deals?open=true").await.json();
        let item = open["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|d| d["id"] == orphan.as_str())
            .cloned()
            .expect("orphan listed");
        assert_eq!(item["contact_id"], Value::Null);
    }
    // The cache served those: hits on both instances, each having applied
    // its own writes' records and the other instance's.
    for app in [&a, &b] {
        let m = admin(app, "/api/admin/cache/metrics").await;
        assert!(m["l1"]["hits"].as_u64().unwrap_or(0) > 0, "{m}");
        assert!(m["live"]["records_own"].as_u64().unwrap_or(0) > 0, "{m}");
        assert!(m["live"]["records_peers"].as_u64().unwrap_or(0) > 0, "{m}");
    }
}

/// A row just created through the API is read at once by every session on
/// either instance (its record made it every instance's cached object,
/// although the replica is 2 s behind). A row the API never heard of (written
/// straight into the database, as `strata seed` does beside a running server)
/// may be missing for another session until the replica has it, but no more:
/// "no such object" is never cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_object_is_read_at_once_and_never_cached_as_missing() {
    let (cluster, _redis, a, b, alice, alice_b) = two_instances("2s").await;
    let tenant = alice.tenant_id.expect("tenant");
    a.user(tenant, "bob@acme.example", "bob-password").await;
    let mut bob = b.anonymous();
    bob.login("bob@acme.example", "bob-password").await;
    // Let the replica replay the schema and the users (2 s behind), so that
    // reads go there.
    let replica = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url(cluster.replica_port))
        .await
        .expect("replica connection");
    eventually("the replica has Bob", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users WHERE email = 'bob@acme.example'")
            .fetch_one(&replica)
            .await
            .is_ok_and(|n| n == 1)
    })
    .await;
    // First, with no write record yet for the tenant (whose position would
    // send fills to the primary until the replica has replayed it).
    let mut early_misses = 0;
    for round in 0..3 {
        let id = insert_behind_the_api(&a, tenant, &format!("Behind {round}")).await;
        let path = format!("/api/contacts/{id}");
        // Bob asks before the replica has the row: a 404 is allowed
        // (bounded staleness) but must not stick.
        let early = bob.get(&path).await;
        match early.status.as_u16() {
            200 => {}
            404 => early_misses += 1,
            other => panic!("{other}: {}", early.text),
        }
        eventually(
            "another session sees the new row",
            Duration::from_secs(10),
            || async { bob.get(&path).await.status.as_u16() == 200 },
        )
        .await;
    }
    // The replica really was behind when Bob first asked (else this test
    // proves nothing about what gets cached).
    assert!(early_misses > 0, "every early read found the row");
    for round in 0..4 {
        let (writer, other) = if round % 2 == 0 {
            (&alice, &alice_b)
        } else {
            (&alice_b, &alice)
        };
        let id = writer
            .create_id("tasks", json!({"title": format!("T{round}")}))
            .await;
        let path = format!("/api/tasks/{id}");
        for client in [&bob, writer, other, writer] {
            let task = client.get(&path).await;
            task.assert_status(200);
            assert_eq!(task.json()["title"], format!("T{round}"));
        }
    }
}

/// Writes a contact straight into the primary, as a bulk load does: no
/// cache hears of it.
async fn insert_behind_the_api(app: &TestApp, tenant: uuid::Uuid, name: &str) -> uuid::Uuid {
    let now = strata_db::model::db_time(chrono::Utc::now());
    let row = strata_db::model::Contact {
        id: uuid::Uuid::now_v7(),
        tenant_id: tenant,
        first_name: name.to_owned(),
        last_name: None,
        email: None,
        phone: None,
        company: Some("Acme".to_owned()),
        tags: vec!["vip".to_owned()],
        created_at: now,
        updated_at: now,
    };
    strata_db::repo::insert(&app.db, tenant, &row)
        .await
        .expect("insert");
    row.id
}

/// Opening an object seen in a list reads no database: the list's fill
/// cached the objects it showed, with the bytes (so the ETag) that reading
/// the object itself gives. A later write to one of them is seen by its
/// writer at once, on either instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_seen_in_a_list_open_without_a_database_read() {
    let (cluster, _redis, a, b, alice, alice_b) = two_instances("2s").await;
    // Rows no write record announced, so no instance has their objects yet.
    let tenant = alice.tenant_id.expect("tenant");
    for name in ["Ann", "Bo", "Cy"] {
        insert_behind_the_api(&a, tenant, name).await;
    }
    let replica = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.url(cluster.replica_port))
        .await
        .expect("replica connection");
    eventually(
        "the replica has the rows",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM contacts")
                .fetch_one(&replica)
                .await
                .is_ok_and(|n| n == 3)
        },
    )
    .await;
    reset(&a).await;
    reset(&b).await;
    // A list login warming did not fill.
    let page = alice.get("/api/contacts?tag=vip").await;
    page.assert_status(200);
    let items = page.json()["items"].as_array().cloned().expect("items");
    assert_eq!(items.len(), 3);
    for item in &items {
        let path = format!("/api/contacts/{}", item["id"].as_str().expect("id"));
        let on_a = alice.get(&path).await;
        on_a.assert_status(200);
        assert_eq!(on_a.json(), *item);
        // b never saw the list (and primed copies stay in a's L1): it reads
        // the database, and answers the same bytes under the same tag.
        let on_b = alice_b.get(&path).await;
        on_b.assert_status(200);
        assert_eq!(on_a.text, on_b.text);
        assert_eq!(on_a.header("etag"), on_b.header("etag"));
    }
    let m = admin(&a, "/api/admin/cache/metrics").await;
    assert_eq!(view(&m, "contacts.object", "l1.hits"), 3, "{m}");
    assert_eq!(view(&m, "contacts.object", "fills"), 0, "{m}");
    // (Primed by this list's fill, or by login warming's fill of the first
    // contacts page before the counters were reset.)
    let m = admin(&b, "/api/admin/cache/metrics").await;
    assert_eq!(view(&m, "contacts.object", "fills"), 3, "{m}");

    // The list primed the old version of Ann on a; her writer never sees it.
    let path = format!("/api/contacts/{}", items[0]["id"].as_str().expect("id"));
    alice_b
        .patch(&path, &json!({"company": "Renamed"}))
        .await
        .assert_status(200);
    for client in [&alice, &alice_b] {
        assert_eq!(client.get(&path).await.json()["company"], "Renamed");
    }
    // A list read after the write primes the new version.
    alice.get("/api/contacts").await.assert_status(200);
    assert_eq!(alice.get(&path).await.json()["company"], "Renamed");
}

/// Another session's reads show a write within the contract's bound, and
/// once they do they never go back to the old value: no fill that raced
/// the write (or read the lagging replica) put it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sessions_see_writes_soon_and_never_see_them_undone() {
    let (_cluster, _redis, a, b, alice, _) = two_instances("2s").await;
    let tenant = alice.tenant_id.expect("tenant");
    b.user(tenant, "bob@acme.example", "bob-password").await;
    let mut bob = b.anonymous();
    bob.login("bob@acme.example", "bob-password").await;
    let id = alice.create_id("tasks", json!({"title": "v0"})).await;
    let path = format!("/api/tasks/{id}");

    // Bob reads continuously on instance b (object and list) while alice
    // writes 20 versions on instance a.
    let stop = Instant::now() + Duration::from_secs(60);
    let reader = {
        let (bob, path) = (bob.clone(), path.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while Instant::now() < stop {
                let task = bob.get(&path).await;
                task.assert_status(200);
                let list = bob.get("/api/tasks?status=pending").await;
                list.assert_status(200);
                let title = task.json()["title"].as_str().unwrap_or("").to_owned();
                seen.push((Instant::now(), title));
                if seen.last().is_some_and(|(_, t)| t == "v20") && seen.len() > 400 {
                    break;
                }
            }
            seen
        })
    };
    let mut written = Vec::new();
    for n in 1..=20 {
        alice
            .patch(&path, &json!({"title": format!("v{n}")}))
            .await
            .assert_status(200);
        written.push((Instant::now(), n));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let seen = reader.await.expect("reader");
    let version = |t: &str| t.trim_start_matches('v').parse::<u32>().unwrap_or(0);
    // Monotonic: once bob saw version n, he never saw an older one.
    let mut highest = 0;
    for (_, title) in &seen {
        let v = version(title);
        assert!(
            v >= highest,
            "bob saw v{v} after v{highest}: a stale value came back"
        );
        highest = v;
    }
    // Bounded staleness: a read that started 1 s after a write shows it.
    for (at, n) in &written {
        for (read_at, title) in &seen {
            if *read_at > *at + Duration::from_secs(1) {
                assert!(version(title) >= *n, "v{n} not visible 1 s later");
            }
        }
    }
    assert_eq!(highest, 20);
    // The replica has long replayed everything: still v20 on both.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for client in [&bob, &alice, &Client::new(&a.base, bob.token.clone())] {
        assert_eq!(client.get(&path).await.json()["title"], "v20");
    }
}

/// Logout on one instance is refused at once on the other, and the same
/// list parameters in two tenants never share a cache entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_and_tenant_isolation_in_every_layer() {
    let (_cluster, redis, a, b, alice, alice_b) = two_instances("0").await;
    let zed = a.tenant("zeta").await;
    alice
        .create("contacts", json!({"first_name": "Acme person"}))
        .await;
    zed.create("contacts", json!({"first_name": "Zeta person"}))
        .await;

    // Same parameters, both tenants, both instances, twice (L2 then L1).
    let zed_b = Client::new(&b.base, zed.token.clone());
    for _ in 0..2 {
        for (client, name) in [
            (&alice, "Acme"),
            (&alice_b, "Acme"),
            (&zed, "Zeta"),
            (&zed_b, "Zeta"),
        ] {
            let list = client.get("/api/contacts?per_page=10").await.json();
            assert_eq!(list["total"], 1);
            assert_eq!(list["items"][0]["first_name"], format!("{name} person"));
            let stats = client.get("/api/dashboard/stats").await.json();
            assert_eq!(stats["contacts"]["total"], 1);
        }
    }
    // In Redis, every data key carries exactly one tenant's hash tag (in
    // tiered mode data views live in each instance, so there may be none).
    let acme = alice.tenant_id.expect("acme").to_string();
    let zeta = zed.tenant_id.expect("zeta").to_string();
    let keys = redis.command(&["KEYS", "strata:c:*"]);
    let data_keys: Vec<&str> = keys
        .lines()
        .filter(|l| l.starts_with("strata:c:{") && !l.starts_with("strata:c:{sessions/"))
        .collect();
    for k in &data_keys {
        assert!(
            k.contains(&acme) != k.contains(&zeta),
            "a key names both or neither tenant: {k}"
        );
    }
    // Metrics name views, never tenants.
    let m = admin(&a, "/api/admin/cache/metrics").await.to_string();
    let scrape = a.scrape_metrics("operator").await.text;
    for text in [&m, &scrape] {
        assert!(!text.contains(&acme) && !text.contains(&zeta));
    }
    assert!(scrape.contains("tiered_cache_hits_total{layer=\"l1\",label=\"contacts.list\"}"));

    // Logout on a: b refuses the session at once (it had it cached).
    alice_b.get("/api/auth/me").await.assert_status(200);
    alice
        .post("/api/auth/logout", &json!({}))
        .await
        .assert_status(204);
    alice_b
        .get("/api/auth/me")
        .await
        .assert_error(401, "unauthenticated");
    alice_b
        .get("/api/contacts")
        .await
        .assert_error(401, "unauthenticated");
    // Zed's session, in another shard or the same, is untouched.
    zed_b.get("/api/auth/me").await.assert_status(200);
}

/// Login warms the tenant's first views in the background: the first
/// dashboard read after it is a hit, on either instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_warms_what_the_user_sees_first() {
    let (_cluster, _redis, a, b, alice, alice_b) = two_instances("0").await; // logs in on a
    eventually(
        "warming fills its views",
        Duration::from_secs(20),
        || async {
            let m = admin(&a, "/api/admin/cache/metrics").await;
            view(&m, "dashboard", "fills_stored") >= 1
                && view(&m, "contacts.list", "fills_stored") >= 1
                && view(&m, "tasks.list", "fills_stored") >= 1
                && view(&m, "deals.list", "fills_stored") >= 1
                && view(&m, "invoices.list", "fills_stored") >= 2
        },
    )
    .await;
    reset(&a).await;
    reset(&b).await;
    alice.get("/api/dashboard/stats").await.assert_status(200);
    alice.get("/api/contacts").await.assert_status(200);
    alice.get("/api/deals?open=true").await.assert_status(200);
    alice_b
        .get("/api/invoices?status=sent")
        .await
        .assert_status(200);
    let m = admin(&a, "/api/admin/cache/metrics").await;
    assert_eq!(view(&m, "dashboard", "l1.hits"), 1, "{m}");
    assert_eq!(view(&m, "contacts.list", "l1.hits"), 1, "{m}");
    assert_eq!(view(&m, "deals.list", "l1.hits"), 1, "{m}");
    assert_eq!(m["fills"], 0, "{m}");
    // The other instance fills its own views (they live in each instance),
    // once.
    let m = admin(&b, "/api/admin/cache/metrics").await;
    assert_eq!(view(&m, "invoices.list", "fills_stored"), 1, "{m}");

    // A second login of the tenant finds it warm and fills nothing.
    reset(&a).await;
    let mut again = a.anonymous();
    again.login("admin@acme.example", "password-acme").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = admin(&a, "/api/admin/cache/metrics").await;
    assert_eq!(m["fills"], 0, "{m}");
}

/// Redis killed under traffic fails no request; health says degraded; when
/// Redis returns, L2 and the bus come back by themselves and the instances
/// agree again. Sessions live in Redis, so they survive a server restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_nothing_and_sessions_survive_restarts() {
    let (cluster, mut redis, a, b, alice, alice_b) = two_instances("0").await;
    let id = alice
        .create_id("contacts", json!({"first_name": "Before"}))
        .await;
    for client in [&alice, &alice_b] {
        client.get("/api/contacts").await.assert_status(200);
        client
            .get(&format!("/api/contacts/{id}"))
            .await
            .assert_status(200);
    }
    let health = admin(&a, "/api/admin/cache/health").await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["l2"]["status"], "up", "{health}");

    redis.kill();
    let mut n = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for client in [&alice, &alice_b] {
            client.get("/api/contacts").await.assert_status(200);
            client.get("/api/dashboard/stats").await.assert_status(200);
            client
                .get(&format!("/api/contacts/{id}"))
                .await
                .assert_status(200);
            client.get("/api/auth/me").await.assert_status(200);
        }
        n += 1;
        alice
            .create("tasks", json!({"title": format!("during {n}")}))
            .await;
    }
    let health = admin(&a, "/api/admin/cache/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["l2"]["status"], "down", "{health}");

    redis.restart();
    eventually("the cache reconnects", Duration::from_secs(20), || async {
        let h = admin(&a, "/api/admin/cache/health").await;
        h["status"] == "ok" && h["l2"]["bus_connected"] == true
    })
    .await;
    // Redis came back empty: the sessions went with it (no persistence);
    // a new login works and both instances agree on writes again.
    let mut carol = a.anonymous();
    carol.login("admin@acme.example", "password-acme").await;
    let carol_b = Client::new(&b.base, carol.token.clone());
    carol_b.get("/api/tasks").await.assert_status(200);
    let total = carol.get("/api/tasks").await.json()["total"]
        .as_u64()
        .unwrap_or(0);
    carol.create("tasks", json!({"title": "after"})).await;
    assert_eq!(carol_b.get("/api/tasks").await.json()["total"], total + 1);

    // A session survives a restart of the instance that created it.
    drop(a);
    let a2 = instance(&cluster, &redis).await;
    let carol_a2 = Client::new(&a2.base, carol.token.clone());
    carol_a2.get("/api/auth/me").await.assert_status(200);
    assert_eq!(carol_a2.get("/api/tasks").await.json()["total"], total + 1);
}

/// An instance that may have missed a change record starts again: a peer
/// whose heartbeat claims records that never arrived, and then a peer gone
/// silent, each make every instance drop its views, which then refill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_may_be_lost_makes_every_instance_start_again() {
    let (_cluster, redis, a, b, alice, alice_b) = two_instances("0").await;
    let resyncs = |m: &Value| m["live"]["resyncs"].as_u64().unwrap_or(0);
    for client in [&alice, &alice_b, &alice, &alice_b] {
        client.get("/api/contacts").await.assert_status(200);
    }
    let before = [
        resyncs(&admin(&a, "/api/admin/cache/metrics").await),
        resyncs(&admin(&b, "/api/admin/cache/metrics").await),
    ];
    // A peer (instance 77) says it has published records up to 5, of which
    // this bus heard none but the first.
    let channel = "strata:c:invalidations";
    redis.command(&["PUBLISH", channel, "h 77 1"]);
    redis.command(&["PUBLISH", channel, "h 77 5"]);
    for (i, app) in [&a, &b].into_iter().enumerate() {
        eventually("the hole is noticed", Duration::from_secs(5), || async {
            resyncs(&admin(app, "/api/admin/cache/metrics").await) > before[i]
        })
        .await;
    }
    // The view was dropped: the next read fills it again from the database.
    let fills = |m: &Value| view(m, "contacts.list", "fills_stored");
    let filled = fills(&admin(&a, "/api/admin/cache/metrics").await);
    alice.get("/api/contacts").await.assert_status(200);
    let m = admin(&a, "/api/admin/cache/metrics").await;
    assert_eq!(fills(&m), filled + 1, "{m}");
    // Instance 77 then says nothing more: silence past five seconds is a
    // possible loss too.
    let after_hole = resyncs(&m);
    eventually(
        "the silence is noticed",
        Duration::from_secs(10),
        || async { resyncs(&admin(&a, "/api/admin/cache/metrics").await) > after_hole },
    )
    .await;
}
