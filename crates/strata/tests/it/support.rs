//! The test harness: `TestApp::spawn(backend)` starts the server in-process
//! on port 0 with its own database; `app.tenant("acme")` creates a tenant
//! with an admin and returns a logged-in client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use strata::app::AppState;
use strata_db::model::Role;
use strata_db::repo::auth as repo;
use strata_db::Db;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server every PostgreSQL test creates its database on.
pub fn pg_admin_url() -> String {
    std::env::var("STRATA_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database that exists for one test and is removed after it.
pub enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        name: String,
        url: String,
    },
}

impl TestDb {
    pub async fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let path: PathBuf = dir.path().join("strata.db");
                TestDb::Sqlite {
                    url: format!("sqlite://{}", path.display()),
                    _dir: dir,
                }
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let name = format!("strata_test_{}", Uuid::now_v7().simple());
                let admin = format!("{}/postgres", pg_admin_url());
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL must be running for the tests ({admin}): {e}; `scripts/test` starts it")
                });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                TestDb::Postgres {
                    url: format!("{}/{name}", pg_admin_url()),
                    name,
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { name, .. } = self {
            let name = name.clone();
            // Drop runs inside the test's runtime, which cannot block on
            // itself: drop the database from a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) =
                        sqlx::PgConnection::connect(&format!("{}/postgres", pg_admin_url())).await
                    {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A running server with its own database.
pub struct TestApp {
    pub base: String,
    pub db: Db,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    // Dropped last: the server must stop before its database goes.
    _database: Option<TestDb>,
}

/// Settings a test may change before the server starts.
pub type Tweak = fn(&mut strata::Config);

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: Tweak) -> TestApp {
        let database = TestDb::create(backend).await;
        let mut config = test_config(database.url());
        tweak(&mut config);
        Self::start(config, Some(database)).await
    }

    /// Starts a server with this configuration; `database`, when given, is
    /// dropped after the server stops.
    pub async fn start(config: strata::Config, database: Option<TestDb>) -> TestApp {
        let db = Db::connect(&config.db()).await.expect("connect");
        db.migrate().await.expect("migrate");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let state = AppState::new(config, db.clone()).await.expect("state");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(strata::app::serve(state, listener, async move {
            let _ = rx.await;
        }));
        TestApp {
            base: format!("http://{addr}"),
            db,
            shutdown: Some(tx),
            server,
            _database: database,
        }
    }

    /// Begins a graceful shutdown, as SIGTERM does.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Whether the server has stopped (`serve` returned) within `wait`;
    /// panics if it stopped with an error.
    pub async fn stopped_within(&mut self, wait: std::time::Duration) -> bool {
        match tokio::time::timeout(wait, &mut self.server).await {
            Ok(ended) => {
                ended.expect("the server task").expect("serve");
                true
            }
            Err(_) => false,
        }
    }

    /// The PostgreSQL database's name (`None` on SQLite).
    pub fn database_name(&self) -> Option<&str> {
        match &self._database {
            Some(TestDb::Postgres { name, .. }) => Some(name),
            _ => None,
        }
    }

    /// A client with no session.
    pub fn anonymous(&self) -> Client {
        Client::new(&self.base, None)
    }

    /// `GET /metrics` with the operator `token`, asserted 200: the
    /// Prometheus text.
    pub async fn scrape_metrics(&self, token: &str) -> Resp {
        let bearer = format!("Bearer {token}");
        let scrape = self
            .anonymous()
            .request(
                reqwest::Method::GET,
                "/metrics",
                None,
                &[("authorization", bearer.as_str())],
            )
            .await;
        scrape.assert_status(200);
        scrape
    }

    /// Creates a tenant with an admin `admin@{name}.example` (password
    /// `password-{name}`) and returns the admin, logged in.
    pub async fn tenant(&self, name: &str) -> Client {
        let tenant = repo::create_tenant(&self.db, name, "EUR")
            .await
            .expect("tenant");
        let email = format!("admin@{name}.example");
        let password = format!("password-{name}");
        self.user(tenant.id, &email, &password).await;
        let mut client = self.anonymous();
        client.login(&email, &password).await;
        client
    }

    /// Creates a user (admin) in a tenant.
    pub async fn user(&self, tenant: Uuid, email: &str, password: &str) {
        let hash = strata::auth::password::hash(password).expect("hash");
        let new = repo::NewUser {
            tenant_id: tenant,
            email,
            name: "Test User",
            role: Role::Admin,
            password_hash: &hash,
        };
        repo::create_user(&self.db, new).await.expect("user");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The configuration a test server starts from: everything default but the
/// database.
/// How often the replica itself has read `contacts` (its own statistics).
pub async fn replica_contact_reads(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'contacts'",
    )
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
    .unwrap_or(0)
}

pub fn test_config(url: &str) -> strata::Config {
    use clap::Parser;
    let mut cli = strata::cli::Cli::try_parse_from(["strata"]).expect("defaults parse");
    cli.config.database_url = url.to_owned();
    cli.config.db_max_connections = 5;
    cli.config
}

/// An HTTP client, optionally logged in with a bearer token.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    pub token: Option<String>,
    pub tenant_id: Option<Uuid>,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        self
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    /// Asserts the contract's error shape with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        self.assert_status(status);
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "error code; body: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error message: {body}"
        );
        assert!(body["error"]["details"].is_array(), "error details: {body}");
        body
    }

    /// The fields named in an error's details.
    pub fn error_fields(&self) -> Vec<String> {
        self.json()["error"]["details"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .cookie_store(false)
            .build()
            .expect("client");
        Client {
            base: base.to_owned(),
            http,
            token,
            tenant_id: None,
        }
    }

    pub async fn login(&mut self, email: &str, password: &str) -> Value {
        let resp = self
            .post(
                "/api/auth/login",
                &serde_json::json!({"email": email, "password": password}),
            )
            .await;
        resp.assert_status(200);
        let body = resp.json();
        self.token = Some(body["token"].as_str().expect("token").to_owned());
        self.tenant_id = body["tenant"]["id"].as_str().and_then(|s| s.parse().ok());
        body
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, HeaderValue::from_str(value).expect("header value"));
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("request reaches the server");
        Resp {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.expect("body"),
        }
    }

    /// A request with a raw body and content type.
    pub async fn raw(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("request reaches the server");
        Resp {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.expect("body"),
        }
    }

    /// Sends a request and hangs up before its answer, after `after`, as a
    /// client with a short timeout does. Panics if the answer came first.
    pub async fn hang_up(&self, method: Method, path: &str, body: &Value, after: Duration) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(body)
            .timeout(after);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        match req.send().await {
            Err(e) if e.is_timeout() => {}
            other => panic!("expected to hang up before the answer, got {other:?}"),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::POST, path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::PATCH, path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request(Method::DELETE, path, None, &[]).await
    }

    /// Creates a row and returns it (asserting 201).
    pub async fn create(&self, resource: &str, body: Value) -> Value {
        let resp = self.post(&format!("/api/{resource}"), &body).await;
        assert_eq!(
            resp.status.as_u16(),
            201,
            "create {resource} {body}: {}",
            resp.text
        );
        resp.json()
    }

    /// The id of a created row.
    pub async fn create_id(&self, resource: &str, body: Value) -> String {
        self.create(resource, body).await["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// The ids of a list page, in order.
    pub async fn list_ids(&self, path: &str) -> Vec<String> {
        let resp = self.get(path).await;
        assert_eq!(resp.status.as_u16(), 200, "GET {path}: {}", resp.text);
        resp.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["id"].as_str().expect("id").to_owned())
            .collect()
    }
}
