//! The consistency checker, in the spirit of Jepsen's Elle: two instances on one Redis and
//! one PostgreSQL primary whose replica applies WAL 200 ms late, several sessions in
//! several tenants writing and reading at once (creates, updates that move rows between
//! filtered lists and across sort positions, deletes; pages 1–5 of filtered and sorted
//! lists, objects, the dashboard), each operation recorded with its start and end. The
//! history is then checked against the contract:
//! - read-your-writes: a session's read that starts after its own write ended shows that
//!   write (or a later version), whichever instance serves it;
//! - bounded staleness: a read that starts more than 1 s after a write ended never shows
//!   the row older than that write, nor a row deleted by then;
//! - every response is one tenant's: no id of another tenant ever appears;
//! - every page is well formed: its rows match its filters and search, in its order, and
//!   its total agrees with its length on the last page;
//! - and in quiet moments (writers paused past the bound), every list on both instances,
//!   walked page by page, is exactly what the database answers (rows, order, total), and
//!   so are the dashboard and the objects.
//!
//! `STRATA_CHECKER_SECS` sets how long the writers run (default 40).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use strata::http::query::parse_list;
use strata_db::model::{Contact, Deal, Task};
use strata_db::repo::{self, stats, Resource};
use strata_db::{Db, DbConfig};
use testkit::RedisServer;
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::cluster::Cluster;
use crate::support::{test_config, Client, TestApp};

/// The contract's bound for other sessions (the replica's 200 ms lag is below it).
const BOUND: Duration = Duration::from_secs(1);
const TENANTS: usize = 3;
const SESSIONS_PER_TENANT: usize = 3;
const PER_PAGE: u32 = 5;

/// The lists read, by resource: filters, searches and sorts that writes move rows
/// between and across.
const SHAPES: &[(&str, &str)] = &[
    ("tasks", ""),
    ("tasks", "status=pending"),
    ("tasks", "status=done&sort=due_at"),
    ("tasks", "priority=high&sort=-priority"),
    ("tasks", "sort=-due_at"),
    ("tasks", "q=call"),
    ("tasks", "overdue=true&sort=due_at"),
    ("deals", ""),
    ("deals", "open=true&sort=-amount_cents"),
    ("deals", "stage=won"),
    ("deals", "stage=lead&sort=amount_cents"),
    ("contacts", "sort=last_name"),
    ("contacts", "q=an&sort=-last_name"),
    ("contacts", "tag=vip"),
    ("contacts", "company=acme"),
];

const LAST_NAMES: &[&str] = &[
    "Anders", "Brandt", "Chan", "Diaz", "Evans", "Fontana", "Grant", "Hanna", "Ito", "Jensen",
];

#[derive(Debug, Clone)]
enum Kind {
    /// A write that committed: the row's new version (`None`: deleted).
    Write {
        id: Uuid,
        version: Option<DateTime<Utc>>,
    },
    /// An object read: the version served (`None`: 404).
    Object {
        resource: &'static str,
        id: Uuid,
        version: Option<DateTime<Utc>>,
    },
    List {
        shape: usize,
        page: u32,
        items: Vec<Value>,
        total: i64,
    },
    Dashboard,
}

#[derive(Debug, Clone)]
struct Op {
    session: usize,
    tenant: usize,
    start: Instant,
    end: Instant,
    kind: Kind,
}

/// What the sessions of one tenant share: the ids they know of, and who owns which.
#[derive(Default)]
struct Known {
    ids: HashMap<&'static str, Vec<Uuid>>,
}

struct Tenant {
    id: Uuid,
    known: Mutex<Known>,
}

fn version(item: &Value) -> Option<DateTime<Utc>> {
    item["updated_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn uuid(item: &Value) -> Option<Uuid> {
    item["id"].as_str().and_then(|s| Uuid::parse_str(s).ok())
}

async fn instance(cluster: &Cluster, redis: &RedisServer) -> TestApp {
    let mut config = test_config(&cluster.url(cluster.primary_port));
    config.database_read_url = vec![cluster.url(cluster.replica_port)];
    config.replica_max_lag_ms = 5_000;
    config.redis_url = Some(redis.url());
    config.admin_token = Some("operator".to_owned());
    config.write_rate = 100_000.0;
    config.write_burst = 100_000;
    // Views live a second, so that fills race writes all the time rather than once per
    // view: the rules for a fill that overlaps a write are the ones most easily wrong.
    config.cache_ttl_lists_secs = 1;
    config.cache_ttl_objects_secs = 1;
    config.cache_ttl_stats_secs = 1;
    TestApp::start(config, None).await
}

/// A due time well away from now, so that `overdue` does not change while the test runs.
fn due(rng: &mut StdRng) -> Option<String> {
    let hours = if rng.random_bool(0.5) {
        -rng.random_range(24..240)
    } else {
        rng.random_range(24..240)
    };
    rng.random_bool(0.85)
        .then(|| (Utc::now() + chrono::Duration::hours(hours)).to_rfc3339())
}

struct Session {
    n: usize,
    tenant: usize,
    clients: [Client; 2],
    rng: StdRng,
}

impl Session {
    fn client(&mut self) -> Client {
        self.clients[self.rng.random_range(0..2)].clone()
    }

    fn pick(&mut self, tenant: &Tenant, resource: &'static str) -> Option<Uuid> {
        let known = tenant.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .ids
            .get(resource)
            .and_then(|ids| ids.choose(&mut self.rng).copied())
    }

    /// One random operation; `None` when it changed nothing and read nothing worth checking.
    async fn step(&mut self, tenant: &Tenant) -> Option<Kind> {
        let client = self.client();
        let roll: f64 = self.rng.random();
        let (resource, write) = match roll {
            r if r < 0.10 => ("tasks", Some("create")),
            r if r < 0.20 => ("tasks", Some("update")),
            r if r < 0.23 => ("tasks", Some("delete")),
            r if r < 0.27 => ("deals", Some("create")),
            r if r < 0.33 => ("deals", Some("update")),
            r if r < 0.35 => ("deals", Some("delete")),
            r if r < 0.38 => ("contacts", Some("create")),
            r if r < 0.41 => ("contacts", Some("update")),
            _ => ("", None),
        };
        if let Some(action) = write {
            return self.write(tenant, &client, resource, action).await;
        }
        let read: f64 = self.rng.random();
        if read < 0.6 {
            let shape = self.rng.random_range(0..SHAPES.len());
            let page = self.rng.random_range(1..=5);
            let (resource, query) = SHAPES[shape];
            let sep = if query.is_empty() { "" } else { "&" };
            let path = format!("/api/{resource}?{query}{sep}page={page}&per_page={PER_PAGE}");
            let resp = client.get(&path).await;
            resp.assert_status(200);
            let body = resp.json();
            return Some(Kind::List {
                shape,
                page,
                items: body["items"].as_array().cloned().unwrap_or_default(),
                total: body["total"].as_i64().unwrap_or(-1),
            });
        }
        if read < 0.9 {
            let resource = *["tasks", "deals", "contacts"].choose(&mut self.rng)?;
            let id = self.pick(tenant, resource)?;
            let resp = client.get(&format!("/api/{resource}/{id}")).await;
            let version = match resp.status.as_u16() {
                200 => version(&resp.json()),
                404 => None,
                other => panic!("GET {resource}/{id}: {other} {}", resp.text),
            };
            return Some(Kind::Object {
                resource,
                id,
                version,
            });
        }
        client.get("/api/dashboard/stats").await.assert_status(200);
        Some(Kind::Dashboard)
    }

    async fn write(
        &mut self,
        tenant: &Tenant,
        client: &Client,
        resource: &'static str,
        action: &str,
    ) -> Option<Kind> {
        let rng = &mut self.rng;
        let body = match (resource, action) {
            ("tasks", "create" | "update") => {
                let mut b = json!({
                    "status": *["pending", "in_progress", "done"].choose(rng)?,
                    "priority": *["low", "normal", "high"].choose(rng)?,
                    "due_at": due(rng),
                });
                if action == "create" || rng.random_bool(0.3) {
                    b["title"] = json!(format!(
                        "{} {}",
                        ["call", "mail", "visit", "Call back"].choose(rng)?,
                        rng.random_range(0..1000)
                    ));
                }
                b
            }
            ("deals", "create" | "update") => {
                let mut b = json!({
                    "stage": *["lead", "qualified", "proposal", "won", "lost"].choose(rng)?,
                    "amount_cents": rng.random_range(0..100_000),
                });
                if action == "create" {
                    b["title"] = json!(format!("Deal {}", rng.random_range(0..1000)));
                }
                b
            }
            ("contacts", "create" | "update") => {
                let mut b = json!({
                    "last_name": *LAST_NAMES.choose(rng)?,
                    "company": *["Acme", "acme", "Globex", "ACME"].choose(rng)?,
                    "tags": if rng.random_bool(0.5) { json!(["vip"]) } else { json!([]) },
                });
                if action == "create" {
                    b["first_name"] = json!("Person");
                }
                b
            }
            (_, "delete") => Value::Null,
            _ => return None,
        };
        if action == "create" {
            let resp = client.post(&format!("/api/{resource}"), &body).await;
            resp.assert_status(201);
            let row = resp.json();
            let id = uuid(&row)?;
            let mut known = tenant.known.lock().unwrap_or_else(|e| e.into_inner());
            known.ids.entry(resource).or_default().push(id);
            return Some(Kind::Write {
                id,
                version: version(&row),
            });
        }
        let id = self.pick(tenant, resource)?;
        let path = format!("/api/{resource}/{id}");
        if action == "delete" {
            let resp = client.delete(&path).await;
            return match resp.status.as_u16() {
                204 => Some(Kind::Write { id, version: None }),
                404 => None,
                other => panic!("DELETE {path}: {other} {}", resp.text),
            };
        }
        let resp = client.patch(&path, &body).await;
        match resp.status.as_u16() {
            200 => Some(Kind::Write {
                id,
                version: version(&resp.json()),
            }),
            // Deleted meanwhile, or changed by others three times in a row.
            404 | 409 => None,
            other => panic!("PATCH {path}: {other} {}", resp.text),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_history_of_writes_and_reads_keeps_the_contract() {
    let run = std::env::var("STRATA_CHECKER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(40), Duration::from_secs);
    let cluster = Cluster::start("200ms");
    let redis = RedisServer::start();
    let a = instance(&cluster, &redis).await;
    let b = instance(&cluster, &redis).await;
    let truth = Db::connect(&DbConfig::new(cluster.url(cluster.primary_port)))
        .await
        .expect("a primary handle for the truth");

    let mut tenants = Vec::new();
    let mut sessions = Vec::new();
    for t in 0..TENANTS {
        let admin = a.tenant(&format!("t{t}")).await;
        let id = admin.tenant_id.expect("tenant id");
        tenants.push(Arc::new(Tenant {
            id,
            known: Mutex::default(),
        }));
        for s in 0..SESSIONS_PER_TENANT {
            let email = format!("s{s}@t{t}.example");
            a.user(id, &email, "password-checker").await;
            let mut on_a = a.anonymous();
            on_a.login(&email, "password-checker").await;
            let on_b = Client::new(&b.base, on_a.token.clone());
            let n = sessions.len();
            sessions.push(Session {
                n,
                tenant: t,
                clients: [on_a, on_b],
                rng: StdRng::seed_from_u64(0x5eed + n as u64),
            });
        }
    }

    let gate = Arc::new(RwLock::new(()));
    let history = Arc::new(Mutex::new(Vec::<Op>::new()));
    let stop = Instant::now() + run;
    let mut workers = Vec::new();
    for mut session in sessions {
        let (gate, history, tenant) = (
            gate.clone(),
            history.clone(),
            tenants[session.tenant].clone(),
        );
        workers.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let _open = gate.read().await;
                let start = Instant::now();
                if let Some(kind) = session.step(&tenant).await {
                    let op = Op {
                        session: session.n,
                        tenant: session.tenant,
                        start,
                        end: Instant::now(),
                        kind,
                    };
                    history.lock().unwrap_or_else(|e| e.into_inner()).push(op);
                }
            }
        }));
    }
    // Quiet moments: writers paused past the bound, then everything compared with the
    // database on both instances.
    let mut quiet_checks = 0;
    let observers: Vec<Vec<Client>> = {
        let mut v = Vec::new();
        for (t, tenant) in tenants.iter().enumerate() {
            let email = format!("observer@t{t}.example");
            a.user(tenant.id, &email, "password-checker").await;
            let mut on_a = a.anonymous();
            on_a.login(&email, "password-checker").await;
            let on_b = Client::new(&b.base, on_a.token.clone());
            v.push(vec![on_a, on_b]);
        }
        v
    };
    while Instant::now() + Duration::from_secs(4) < stop {
        tokio::time::sleep(
            Duration::from_secs(8).min(stop.saturating_duration_since(Instant::now())),
        )
        .await;
        let _paused = gate.write().await;
        tokio::time::sleep(BOUND + Duration::from_millis(100)).await;
        quiet_checks += quiet_check(&truth, &tenants, &observers).await;
    }
    for w in workers {
        w.await.expect("a session panicked");
    }
    {
        let _paused = gate.write().await;
        tokio::time::sleep(BOUND + Duration::from_millis(100)).await;
        quiet_checks += quiet_check(&truth, &tenants, &observers).await;
    }

    let history = history
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let checked = check_history(&history, &tenants);
    let writes = history
        .iter()
        .filter(|o| matches!(o.kind, Kind::Write { .. }))
        .count();
    println!(
        "consistency checker: {} operations ({writes} writes) by {} sessions in {TENANTS} tenants on 2 instances over {:?}; {checked} observations checked against the history, {quiet_checks} views compared with the database in quiet moments",
        history.len(),
        TENANTS * SESSIONS_PER_TENANT,
        run
    );
    assert!(history.len() > 500, "too few operations to check anything");
    truth.close().await;
}

/// Compares every list shape (walked page by page), the dashboard and the known objects
/// of every tenant, on both instances, with the database. Returns how many views it
/// compared.
async fn quiet_check(truth: &Db, tenants: &[Arc<Tenant>], observers: &[Vec<Client>]) -> usize {
    let mut compared = 0;
    let now = Utc::now();
    for (t, tenant) in tenants.iter().enumerate() {
        for (shape, (resource, query)) in SHAPES.iter().enumerate() {
            let want = truth_list(truth, tenant.id, resource, query, now).await;
            for client in &observers[t] {
                let mut got = Vec::new();
                let mut total = -1;
                for page in 1.. {
                    let sep = if query.is_empty() { "" } else { "&" };
                    let resp = client
                        .get(&format!(
                            "/api/{resource}?{query}{sep}page={page}&per_page=100"
                        ))
                        .await;
                    resp.assert_status(200);
                    let body = resp.json();
                    total = body["total"].as_i64().unwrap_or(-1);
                    let items = body["items"].as_array().cloned().unwrap_or_default();
                    let n = items.len();
                    got.extend(items);
                    if n < 100 {
                        break;
                    }
                }
                let got_ids: Vec<Uuid> = got.iter().filter_map(uuid).collect();
                let want_ids: Vec<Uuid> = want.iter().filter_map(uuid).collect();
                assert_eq!(
                    got_ids, want_ids,
                    "tenant {t}, /api/{resource}?{query} (shape {shape}): the cached list's rows or order differ from the database's"
                );
                assert_eq!(
                    total,
                    want.len() as i64,
                    "tenant {t}, /api/{resource}?{query}: total"
                );
                assert_eq!(
                    got, want,
                    "tenant {t}, /api/{resource}?{query}: row contents"
                );
                compared += 1;
            }
        }
        let want = serde_json::to_value(
            stats::dashboard(truth, tenant.id, now)
                .await
                .expect("dashboard truth"),
        )
        .expect("json");
        let ids: Vec<(&'static str, Uuid)> = {
            let known = tenant.known.lock().unwrap_or_else(|e| e.into_inner());
            known
                .ids
                .iter()
                .flat_map(|(r, ids)| ids.iter().rev().take(20).map(move |id| (*r, *id)))
                .collect()
        };
        for client in &observers[t] {
            let got = client.get("/api/dashboard/stats").await.json();
            assert_eq!(
                got, want,
                "tenant {t}: the dashboard differs from the database's"
            );
            compared += 1;
            for (resource, id) in &ids {
                let want = truth_object(truth, tenant.id, resource, *id).await;
                let resp = client.get(&format!("/api/{resource}/{id}")).await;
                match want {
                    Some(want) => {
                        resp.assert_status(200);
                        assert_eq!(resp.json(), want, "tenant {t}: {resource}/{id} differs");
                    }
                    None => {
                        resp.assert_error(404, "not_found");
                    }
                }
                compared += 1;
            }
        }
    }
    compared
}

async fn truth_list(
    truth: &Db,
    tenant: Uuid,
    resource: &str,
    query: &str,
    now: DateTime<Utc>,
) -> Vec<Value> {
    async fn all<R: Resource>(
        truth: &Db,
        tenant: Uuid,
        query: &str,
        now: DateTime<Utc>,
    ) -> Vec<Value> {
        let mut params = parse_list(&R::SPEC, Some(query)).expect("shape parses");
        params.per_page = 100;
        let mut out = Vec::new();
        for page in 1.. {
            params.page = page;
            let (items, _) = repo::list::<R>(truth, tenant, &params, now)
                .await
                .expect("truth");
            let n = items.len();
            out.extend(items.iter().map(|r| serde_json::to_value(r).expect("json")));
            if n < 100 {
                break;
            }
        }
        out
    }
    match resource {
        "tasks" => all::<Task>(truth, tenant, query, now).await,
        "deals" => all::<Deal>(truth, tenant, query, now).await,
        _ => all::<Contact>(truth, tenant, query, now).await,
    }
}

async fn truth_object(truth: &Db, tenant: Uuid, resource: &str, id: Uuid) -> Option<Value> {
    let json = |v: Option<Value>| v;
    match resource {
        "tasks" => json(
            repo::get::<Task>(truth, tenant, id)
                .await
                .expect("truth")
                .map(|r| serde_json::to_value(r).expect("json")),
        ),
        "deals" => json(
            repo::get::<Deal>(truth, tenant, id)
                .await
                .expect("truth")
                .map(|r| serde_json::to_value(r).expect("json")),
        ),
        _ => json(
            repo::get::<Contact>(truth, tenant, id)
                .await
                .expect("truth")
                .map(|r| serde_json::to_value(r).expect("json")),
        ),
    }
}

/// One committed write of a row, as the history has it.
#[derive(Debug, Clone, Copy)]
struct Committed {
    session: usize,
    start: Instant,
    end: Instant,
    version: Option<DateTime<Utc>>,
}

/// Checks every read of the history against every write; returns how many observations
/// it checked.
fn check_history(history: &[Op], tenants: &[Arc<Tenant>]) -> usize {
    let mut writes: HashMap<Uuid, Vec<Committed>> = HashMap::new();
    let mut owner: HashMap<Uuid, usize> = HashMap::new();
    for op in history {
        if let Kind::Write { id, version, .. } = &op.kind {
            writes.entry(*id).or_default().push(Committed {
                session: op.session,
                start: op.start,
                end: op.end,
                version: *version,
            });
            owner.entry(*id).or_insert(op.tenant);
        }
    }
    let mut checked = 0;
    let seen = |op: &Op, id: Uuid, shown: Option<DateTime<Utc>>, what: &str| {
        // Isolation: every row shown is one of the reader's tenant.
        if shown.is_some() {
            assert_eq!(
                owner.get(&id).copied(),
                Some(op.tenant),
                "{what}: row {id} of another tenant (or unknown) shown to tenant {}",
                op.tenant
            );
        }
        for w in writes.get(&id).into_iter().flatten() {
            // The reader's own writes count at once, everyone else's after the bound.
            let due = if w.session == op.session {
                w.end
            } else {
                w.end + BOUND
            };
            if due >= op.start {
                continue;
            }
            match (w.version, shown) {
                (None, Some(v)) => panic!(
                    "{what}: row {id} shown (version {v}) after its delete ended {:?} before the read began (own: {})",
                    op.start - w.end,
                    w.session == op.session
                ),
                (Some(wv), Some(v)) if v < wv => panic!(
                    "{what}: row {id} shown at version {v} although version {wv} was committed {:?} before the read began (own: {})",
                    op.start - w.end,
                    w.session == op.session
                ),
                (Some(wv), None) => {
                    // Missing: only if no delete of it may have come first.
                    let deleted = writes[&id]
                        .iter()
                        .any(|d| d.version.is_none() && d.start < op.end);
                    assert!(
                        deleted,
                        "{what}: row {id} missing although version {wv} was committed {:?} before the read began",
                        op.start - w.end
                    );
                }
                _ => {}
            }
        }
    };
    for op in history {
        match &op.kind {
            Kind::Object {
                id,
                version,
                resource,
            } => {
                seen(op, *id, *version, &format!("GET /api/{resource}/{id}"));
                checked += 1;
            }
            Kind::List {
                shape,
                page,
                items,
                total,
            } => {
                let (resource, query) = SHAPES[*shape];
                let what = format!("GET /api/{resource}?{query} page {page}");
                for item in items {
                    let id = uuid(item).expect("an item has an id");
                    seen(op, id, version(item), &what);
                    assert!(
                        matches_shape(resource, query, item),
                        "{what}: {item} does not belong in this list"
                    );
                    checked += 1;
                }
                for pair in items.windows(2) {
                    assert!(
                        in_order(query, &pair[0], &pair[1]),
                        "{what}: {} before {}",
                        pair[0],
                        pair[1]
                    );
                }
                let before = i64::from((*page - 1) * PER_PAGE);
                let n = items.len() as i64;
                if n == 0 {
                    assert!(*total <= before, "{what}: empty, but total {total}");
                } else if n < i64::from(PER_PAGE) {
                    assert_eq!(*total, before + n, "{what}: a short page's total");
                } else {
                    assert!(
                        *total >= before + n,
                        "{what}: total {total} below the rows shown"
                    );
                }
                checked += 1;
            }
            Kind::Write { .. } | Kind::Dashboard => {}
        }
    }
    let _ = tenants;
    checked
}

/// Whether a row belongs in a list shape, by its own fields (an independent reading of
/// the contract, not the server's evaluation).
fn matches_shape(resource: &str, query: &str, item: &Value) -> bool {
    let s = |f: &str| item[f].as_str().unwrap_or("");
    query.split('&').filter(|p| !p.is_empty()).all(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        match k {
            "sort" => true,
            "status" | "priority" | "stage" => s(k) == v,
            "open" => !matches!(s("stage"), "won" | "lost"),
            "tag" => item["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x == v)),
            "company" => s("company").to_lowercase() == v.to_lowercase(),
            "overdue" => {
                let past = item["due_at"]
                    .as_str()
                    .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
                    .is_some_and(|d| d < Utc::now());
                s("status") != "done" && past
            }
            "q" => {
                let fields: &[&str] = if resource == "contacts" {
                    &["first_name", "last_name", "email", "company"]
                } else {
                    &["title"]
                };
                fields
                    .iter()
                    .any(|f| s(f).to_lowercase().contains(&v.to_lowercase()))
            }
            _ => false,
        }
    })
}

/// Whether `a` may come before `b` in the shape's order (ties broken by id).
fn in_order(query: &str, a: &Value, b: &Value) -> bool {
    let sort = query
        .split('&')
        .find_map(|p| p.strip_prefix("sort="))
        .unwrap_or("-created_at");
    let (field, descending) = match sort.strip_prefix('-') {
        Some(f) => (f, true),
        None => (sort, false),
    };
    // Comparable keys: NULL sorts last ascending, first descending.
    let key = |v: &Value| -> (u8, String) {
        let f = &v[field];
        if f.is_null() {
            return (1, String::new());
        }
        let text = match field {
            "priority" => match f.as_str() {
                Some("low") => "0".to_owned(),
                Some("normal") => "1".to_owned(),
                _ => "2".to_owned(),
            },
            "amount_cents" => format!("{:020}", f.as_i64().unwrap_or(0)),
            _ if field.ends_with("_at") => f
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map_or(String::new(), |t| format!("{:020}", t.timestamp_micros())),
            "last_name" | "first_name" => f.as_str().unwrap_or("").to_lowercase(),
            _ => f.as_str().unwrap_or("").to_owned(),
        };
        (0, text)
    };
    let (ka, kb) = ((key(a), uuid(a)), (key(b), uuid(b)));
    if descending {
        ka >= kb
    } else {
        ka <= kb
    }
}
