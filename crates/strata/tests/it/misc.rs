//! The dashboard figures, health routes, routing errors and the OpenAPI
//! document.

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::json;

use crate::both;
use crate::support::{Backend, Client, TestApp};

both!(
    dashboard_figures,
    health_and_routing,
    openapi_document,
    prometheus_metrics
);

async fn prometheus_metrics(backend: Backend) {
    let hidden = TestApp::spawn(backend).await;
    hidden
        .anonymous()
        .get("/metrics")
        .await
        .assert_error(404, "not_found");

    let app = TestApp::spawn_with(backend, |c| {
        c.admin_token = Some("operator-secret".to_owned())
    })
    .await;
    let anon = app.anonymous();
    anon.get("/metrics")
        .await
        .assert_error(401, "unauthenticated");
    let wrong = anon
        .request(
            Method::GET,
            "/metrics",
            None,
            &[("authorization", "Bearer operator-secreT")],
        )
        .await;
    wrong.assert_error(401, "unauthenticated");
    let alice = app.tenant("acme").await;
    alice.get("/api/contacts").await.assert_status(200);
    // A tenant's session is not an operator token.
    alice
        .get("/metrics")
        .await
        .assert_error(401, "unauthenticated");
    let scrape = app.scrape_metrics("operator-secret").await;
    assert!(scrape
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    let text = scrape.text;
    for needle in [
        "strata_http_requests_total{method=\"GET\",route=\"/api/contacts\",status=\"200\"}",
        "strata_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/contacts\",le=\"0.001\"}",
        "strata_db_queries_total{target=\"",
    ] {
        assert!(text.contains(needle), "metrics expose {needle}");
    }
    let tenant = alice.tenant_id.expect("tenant").to_string();
    assert!(!text.contains(&tenant), "no tenant id in any label");
}

async fn dashboard_figures(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    let c = alice
        .create_id("contacts", json!({"first_name": "A"}))
        .await;
    alice
        .create_id("contacts", json!({"first_name": "B"}))
        .await;
    alice
        .create("deals", json!({"title": "open1", "amount_cents": 1000}))
        .await;
    alice
        .create(
            "deals",
            json!({"title": "open2", "amount_cents": 250, "stage": "negotiation"}),
        )
        .await;
    alice
        .create(
            "deals",
            json!({"title": "won", "amount_cents": 7000, "stage": "won"}),
        )
        .await;
    alice
        .create(
            "deals",
            json!({"title": "lost", "amount_cents": 9999, "stage": "lost"}),
        )
        .await;
    let past = (Utc::now() - Duration::hours(3)).to_rfc3339();
    alice
        .create("tasks", json!({"title": "late", "due_at": past}))
        .await;
    alice
        .create(
            "tasks",
            json!({"title": "late but going", "due_at": past, "status": "in_progress"}),
        )
        .await;
    alice
        .create(
            "tasks",
            json!({"title": "done", "due_at": past, "status": "done"}),
        )
        .await;
    alice.create("tasks", json!({"title": "pending"})).await;
    let line = |cents: i64| json!([{"description": "x", "quantity": 1, "unit_price_cents": cents}]);
    alice.create("invoices", json!({"number": "1", "contact_id": c, "status": "sent", "lines": line(100), "due_on": "2099-01-01"})).await;
    alice.create("invoices", json!({"number": "2", "contact_id": c, "status": "sent", "lines": line(200), "due_on": "2000-01-01"})).await;
    alice
        .create(
            "invoices",
            json!({"number": "3", "contact_id": c, "status": "overdue", "lines": line(400)}),
        )
        .await;
    alice
        .create(
            "invoices",
            json!({"number": "4", "contact_id": c, "status": "paid", "lines": line(800)}),
        )
        .await;
    alice
        .create("orders", json!({"number": "1", "lines": line(50)}))
        .await;
    alice
        .create(
            "orders",
            json!({"number": "2", "lines": line(70), "status": "cancelled"}),
        )
        .await;
    alice
        .create(
            "orders",
            json!({"number": "3", "lines": line(90), "placed_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    let stats = alice.get("/api/dashboard/stats").await;
    stats.assert_status(200);
    assert!(stats.header("etag").is_some());
    assert_eq!(
        stats.json(),
        json!({
            "contacts": {"total": 2},
            "deals": {"open": 2, "pipeline_cents": 1250, "won_this_month": 1, "won_cents_this_month": 7000},
            "tasks": {"pending": 2, "overdue": 2},
            "invoices": {"outstanding": 3, "outstanding_cents": 700, "overdue": 2},
            "orders": {"this_month": 2, "revenue_cents_this_month": 50}
        })
    );
}

async fn health_and_routing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let anon = app.anonymous();
    let health = anon.get("/healthz").await;
    health.assert_status(200);
    assert_eq!(health.json()["status"], "ok");
    let ready = anon.get("/readyz").await;
    ready.assert_status(200);
    assert!(
        ready
            .header("x-request-id")
            .is_some_and(|id| id.len() == 36),
        "every response carries a request id"
    );
    let echoed = anon
        .request(
            Method::GET,
            "/healthz",
            None,
            &[("x-request-id", "trace-me-123")],
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("trace-me-123"));
    anon.get("/nope").await.assert_error(404, "not_found");
    anon.get("/api/widgets")
        .await
        .assert_error(404, "not_found");
    anon.request(Method::PUT, "/api/contacts", None, &[])
        .await
        .assert_error(405, "method_not_allowed");
    anon.request(Method::DELETE, "/healthz", None, &[])
        .await
        .assert_error(405, "method_not_allowed");
    // Operator routes stay hidden without STRATA_ADMIN_TOKEN.
    anon.get("/api/admin/cache/metrics")
        .await
        .assert_error(404, "not_found");
}

async fn openapi_document(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let resp = app.anonymous().get("/openapi.json").await;
    resp.assert_status(200);
    let doc = resp.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/api/auth/login",
        "/api/auth/logout",
        "/api/auth/me",
        "/api/dashboard/stats",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(path), "{path}");
    }
    let filters = [
        ("contacts", vec!["company", "tag"]),
        ("deals", vec!["stage", "contact_id", "open"]),
        (
            "tasks",
            vec![
                "status",
                "priority",
                "contact_id",
                "deal_id",
                "overdue",
                "due_before",
            ],
        ),
        ("invoices", vec!["status", "contact_id"]),
        ("orders", vec!["status", "contact_id"]),
    ];
    for (resource, names) in filters {
        let collection = &paths[&format!("/api/{resource}")];
        let item = &paths[&format!("/api/{resource}/{{id}}")];
        for (op, method) in [
            (collection, "get"),
            (collection, "post"),
            (item, "get"),
            (item, "patch"),
            (item, "delete"),
        ] {
            assert!(op[method].is_object(), "{method} {resource}");
        }
        let params: Vec<&str> = collection["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for name in ["page", "per_page", "q", "sort"].into_iter().chain(names) {
            assert!(
                params.contains(&name),
                "{resource} documents {name}: {params:?}"
            );
        }
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "Contact",
        "Deal",
        "Task",
        "Invoice",
        "Order",
        "ContactInput",
        "DashboardStats",
        "ErrorBody",
        "LoginResponse",
    ] {
        assert!(schemas.contains_key(name), "schema {name}");
    }
    assert!(
        schemas["Contact"]["properties"].get("tenant_id").is_none(),
        "tenant ids are not part of the API"
    );
    let stages = &schemas["DealStage"]["enum"];
    assert_eq!(
        stages,
        &json!([
            "lead",
            "qualified",
            "proposal",
            "negotiation",
            "won",
            "lost"
        ])
    );
}

/// A database that stops answering: what is cached keeps being served,
/// everything else is a 503 + Retry-After (never a 500 or a hang), and
/// service comes back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_a_503_and_recovers() {
    use sqlx::Connection;
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.request_timeout_secs = 20).await;
    let alice = app.tenant("acme").await;
    alice
        .create("contacts", json!({"first_name": "Before"}))
        .await;
    let cached = alice.get("/api/contacts").await;
    cached.assert_status(200);
    let name = app.database_name().expect("a PostgreSQL test database");
    let admin_url = format!("{}/postgres", crate::support::pg_admin_url());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin connection");
    let refuse = format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false");
    sqlx::query(&refuse)
        .execute(&mut admin)
        .await
        .expect("refuse connections");
    let kick =
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'");
    sqlx::query(&kick)
        .execute(&mut admin)
        .await
        .expect("terminate sessions");

    // Read before the outage: still served, the same bytes.
    let during = alice.get("/api/contacts").await;
    during.assert_status(200);
    assert_eq!(during.text, cached.text);
    alice.get("/api/auth/me").await.assert_status(200);
    // Never read: the database is needed.
    for path in ["/api/contacts?q=before", "/api/tasks?status=done"] {
        let resp = alice.get(path).await;
        resp.assert_error(503, "unavailable");
        assert!(
            resp.header("retry-after").is_some(),
            "Retry-After on {path}"
        );
    }
    alice
        .post("/api/contacts", &json!({"first_name": "During"}))
        .await
        .assert_error(503, "unavailable");
    app.anonymous()
        .get("/readyz")
        .await
        .assert_error(503, "unavailable");
    app.anonymous().get("/healthz").await.assert_status(200);

    let allow = format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true");
    sqlx::query(&allow)
        .execute(&mut admin)
        .await
        .expect("allow connections");
    app.anonymous().get("/readyz").await.assert_status(200);
    let list = alice.get("/api/contacts").await;
    list.assert_status(200);
    assert_eq!(
        list.json()["total"],
        1,
        "nothing lost, nothing half-written"
    );
}

/// What another transaction holds, as a long report or a bulk import would.
enum Hold {
    /// The deal's row: an update of it waits, while it executes.
    Deal,
    /// The sessions' rows: a write gets past its commit, then waits to
    /// record itself with the session (sessions in the database).
    Sessions,
}

/// A deal, created and read (so cached), and rows another transaction
/// holds until [`HeldDeal::release`].
struct HeldDeal {
    path: String,
    id: String,
    holder: sqlx::PgConnection,
    admin: sqlx::PgConnection,
}

impl HeldDeal {
    async fn new(app: &TestApp, client: &Client, hold: Hold) -> HeldDeal {
        use sqlx::Connection;
        let id = client.create_id("deals", json!({"title": "Ada"})).await;
        let path = format!("/api/deals/{id}");
        client.get(&path).await.assert_status(200);
        let name = app.database_name().expect("a PostgreSQL test database");
        let url = format!("{}/{name}", crate::support::pg_admin_url());
        let connect = || async { sqlx::PgConnection::connect(&url).await.expect("connect") };
        let mut holder = connect().await;
        sqlx::raw_sql("BEGIN")
            .execute(&mut holder)
            .await
            .expect("begin");
        let held = match hold {
            Hold::Deal => sqlx::query("SELECT 1 FROM deals WHERE id = $1::uuid FOR UPDATE")
                .bind(&id)
                .execute(&mut holder),
            Hold::Sessions => sqlx::query("SELECT 1 FROM sessions FOR UPDATE").execute(&mut holder),
        };
        held.await.expect("hold the rows");
        HeldDeal {
            path,
            id,
            holder,
            admin: connect().await,
        }
    }

    /// Releases the rows, waits until the server's connections to the
    /// database are idle (the held write has then ended, one way or the
    /// other), and returns the deal's title as the database holds it and as
    /// `client` reads it.
    async fn release(mut self, client: &Client) -> (String, String) {
        self.unhold().await;
        let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut self.holder)
            .await
            .expect("holder pid");
        let mut busy = i64::MAX;
        for _ in 0..200 {
            busy = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND pid <> $1 AND state IS DISTINCT FROM 'idle'",
            )
            .bind(holder_pid)
            .fetch_one(&mut self.admin)
            .await
            .expect("pg_stat_activity");
            if busy == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(busy, 0, "the server's connections never became idle");
        let stored = sqlx::query_scalar("SELECT title FROM deals WHERE id = $1::uuid")
            .bind(&self.id)
            .fetch_one(&mut self.admin)
            .await
            .expect("the deal");
        // A write's task ends right after its last statement.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let read = client.get(&self.path).await.json()["title"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (stored, read)
    }
    /// Lets the held write go on.
    async fn unhold(&mut self) {
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut self.holder)
            .await
            .expect("release the rows");
    }

    /// `client` patches the held deal's title to "Held" and hangs up 300 ms
    /// later, while the write waits for the held rows.
    async fn patch_and_hang_up(&self, client: &Client) {
        let patch = json!({"title": "Held"});
        let after = std::time::Duration::from_millis(300);
        client
            .hang_up(Method::PATCH, &self.path, &patch, after)
            .await;
    }

    /// The write position recorded with the session (`sessions.last_write_lsn`;
    /// the tests' servers have one session each).
    async fn recorded_position(&mut self) -> Option<i64> {
        sqlx::query_scalar("SELECT max(last_write_lsn) FROM sessions")
            .fetch_one(&mut self.admin)
            .await
            .expect("the session's position")
    }
}

/// A server told to stop while a write whose client hung up after its commit
/// is still running (it waits to record itself with the session): the server
/// does not stop until that write has ended, so a restart loses none of a
/// committed write's aftermath (its invalidations, its session's position).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_write_whose_client_hung_up() {
    let mut app = TestApp::spawn_with(Backend::Postgres, |c| c.cache_settle_ms = 1000).await;
    let alice = app.tenant("acme").await;
    let mut held = HeldDeal::new(&app, &alice, Hold::Sessions).await;
    let before = held.recorded_position().await;
    held.patch_and_hang_up(&alice).await;

    app.begin_shutdown();
    // Without the write, the server stops after its linger (1 s).
    assert!(
        !app.stopped_within(std::time::Duration::from_secs(3)).await,
        "the server stopped while a committed write was still running"
    );
    held.unhold().await;
    assert!(
        app.stopped_within(std::time::Duration::from_secs(10)).await,
        "the server did not stop once the write had ended"
    );
    let recorded = held.recorded_position().await;
    assert!(
        recorded > before,
        "the write's position never reached the session ({before:?} -> {recorded:?})"
    );
}

/// The drain deadline holds even for a write that never ends (here, one
/// held behind another transaction's lock): the server stops at the
/// deadline instead of waiting for it, as an orchestrator expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_at_the_drain_deadline_with_a_write_still_running() {
    let mut app = TestApp::spawn_with(Backend::Postgres, |c| c.drain_timeout_secs = 3.0).await;
    let alice = app.tenant("acme").await;
    let mut held = HeldDeal::new(&app, &alice, Hold::Sessions).await;
    held.patch_and_hang_up(&alice).await;

    app.begin_shutdown();
    let stopped = app.stopped_within(std::time::Duration::from_secs(15)).await;
    held.unhold().await;
    assert!(
        stopped,
        "the server was still running 15 s after a shutdown with a 3 s drain deadline"
    );
}

/// A request still running at the request timeout is answered 503 with
/// Retry-After, in the contract's shape, instead of holding its client; the
/// server goes on serving the others meanwhile; and the write the 503
/// turned away does not happen later behind the client's back (which would
/// make its retry a second write, and leave caches showing the old row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_is_a_503_and_its_write_does_not_happen() {
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.request_timeout_secs = 2).await;
    let alice = app.tenant("acme").await;
    let held = HeldDeal::new(&app, &alice, Hold::Deal).await;
    let path = held.path.clone();

    let late = alice.patch(&path, &json!({"title": "Held"})).await;
    let body = late.assert_error(503, "unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("took too long")),
        "{body}"
    );
    assert_eq!(late.header("retry-after"), Some("1"));
    alice.get("/api/auth/me").await.assert_status(200);

    let (stored, read) = held.release(&alice).await;
    assert_eq!(stored, "Ada", "the write answered 503 committed afterwards");
    assert_eq!(read, "Ada");
}

/// Alice patches the held deal's title to "Held" and hangs up while the
/// write waits; then the rows are released. Returns the title the database
/// holds and the one Alice then reads. The settle window is the longest the
/// contract allows, so that the deal cached before the write is still
/// served to other sessions when Alice reads.
async fn hung_up_patch(hold: Hold) -> (String, String) {
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.cache_settle_ms = 1000).await;
    let alice = app.tenant("acme").await;
    let held = HeldDeal::new(&app, &alice, hold).await;
    held.patch_and_hang_up(&alice).await;
    // The server notices the closed connection at once; give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    held.release(&alice).await
}

/// A client that hangs up while its write waits: the write is cancelled
/// (its request is gone before it committed), and the caches keep showing
/// what the database holds. Were the write to commit anyway, after its
/// handler was dropped, nothing would invalidate the cached deal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_client_hangs_up_before_it_commits_does_not_happen() {
    let (stored, read) = hung_up_patch(Hold::Deal).await;
    assert_eq!(stored, "Ada", "a write whose client hung up committed");
    assert_eq!(read, "Ada");
}

/// The other side of the gate: a client that hangs up once its write has
/// committed. The write's aftermath still runs to its end; here, recording
/// the write with the session, so that the session's next read shows it
/// rather than the copy cached before it (which other sessions may still be
/// served for the settle window). The recording waits for the sessions'
/// rows while the client gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_client_hangs_up_after_it_commits_still_reaches_its_session() {
    let (stored, read) = hung_up_patch(Hold::Sessions).await;
    assert_eq!(stored, "Held", "the write committed");
    assert_eq!(
        read, "Held",
        "the writer was served the copy from before its write"
    );
}
