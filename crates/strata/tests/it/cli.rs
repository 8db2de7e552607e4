//! The `strata` binary itself: its subcommands, their output and exit
//! status, the demo tenant of a first start, and start-up errors.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Backend, Client, TestDb};

fn strata(db_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env_remove("DATABASE_READ_URL")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the strata binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[track_caller]
fn assert_fails(out: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(
        stderr.contains(message),
        "stderr names the problem ({message}): {stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout when failing");
}

/// A `strata serve` child process, killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(db_url: &str, args: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
        command
            .arg("serve")
            .args(args)
            .env("DATABASE_URL", db_url)
            .env("STRATA_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("strata serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.push(line.clone());
                if let Some(addr) = line.strip_prefix("strata listening on ") {
                    let _ = tx.send(Ok((addr.to_owned(), lines.clone())));
                }
            }
            let _ = tx.send(Err(lines));
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok((base, _))) => Server { child, base },
            other => {
                let _ = child.kill();
                panic!("the server did not start: {other:?}");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_creates_the_demo_tenant() {
    let db = TestDb::create(Backend::Sqlite).await;
    let server = Server::start(db.url(), &[]);
    let mut admin = Client::new(&server.base, None);
    let login = admin.login("admin@tenant1.example", "strata-demo").await;
    assert_eq!(login["user"]["role"], "admin");
    for resource in ["contacts", "deals", "tasks", "invoices", "orders"] {
        let total = admin.get(&format!("/api/{resource}")).await.json()["total"]
            .as_i64()
            .unwrap_or_default();
        assert!(total > 0, "the demo tenant has {resource}");
    }
    let stats = admin.get("/api/dashboard/stats").await.json();
    assert!(stats["contacts"]["total"].as_i64().unwrap_or_default() > 0);
    let contacts = admin.get("/api/contacts").await.json()["total"].clone();
    drop(server);
    // A second start finds the tenant and does not add another.
    let server = Server::start(db.url(), &[]);
    let mut again = Client::new(&server.base, None);
    again.login("admin@tenant1.example", "strata-demo").await;
    assert_eq!(
        again.get("/api/contacts").await.json()["total"],
        contacts,
        "no second demo tenant"
    );
    let _ = db;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_demo_flag_and_graceful_sigterm() {
    let db = TestDb::create(Backend::Sqlite).await;
    let mut server = Server::start(db.url(), &["--no-demo", "--shutdown-grace-secs", "2"]);
    let anon = Client::new(&server.base, None);
    anon.post(
        "/api/auth/login",
        &json!({"email": "admin@tenant1.example", "password": "strata-demo"}),
    )
    .await
    .assert_error(401, "unauthenticated");
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    // During the grace period: not ready (load balancers stop sending),
    // yet still alive and still serving.
    let drained = || async { anon.get("/readyz").await.status.as_u16() == 503 };
    let started = Instant::now();
    while !drained().await {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "/readyz turns 503 at once"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anon.get("/readyz").await.assert_error(503, "unavailable");
    anon.get("/healthz").await.assert_status(200);
    anon.get("/api/contacts")
        .await
        .assert_error(401, "unauthenticated");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server stops on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a clean exit on SIGTERM: {status}");
}

async fn cli_commands(backend: Backend) {
    let db = TestDb::create(backend).await;
    let url = db.url().to_owned();
    let out = strata(&url, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let tenant = stdout(&strata(
        &url,
        &["tenant", "create", "--name", "Initech", "--currency", "USD"],
    ));
    uuid::Uuid::parse_str(&tenant).expect("the tenant id alone on stdout");
    let user = strata(
        &url,
        &[
            "user",
            "create",
            "--tenant",
            &tenant,
            "--email",
            "Peter@Initech.example",
            "--password",
            "tps-reports",
            "--role",
            "admin",
        ],
    );
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
    uuid::Uuid::parse_str(&stdout(&user)).expect("the user id alone on stdout");

    let create_user = |tenant: &str, email: &str, password: &str| {
        strata(
            &url,
            &[
                "user",
                "create",
                "--tenant",
                tenant,
                "--email",
                email,
                "--password",
                password,
            ],
        )
    };
    assert_fails(
        &create_user(&tenant, "peter@initech.example", "another-one"),
        "already exists",
    );
    assert_fails(&create_user(&tenant, "bad", "long-enough"), "email");
    assert_fails(
        &create_user(&tenant, "m@initech.example", "short"),
        "password",
    );
    let missing = uuid::Uuid::now_v7().to_string();
    assert_fails(
        &create_user(&missing, "m@initech.example", "long-enough"),
        "no tenant",
    );
    assert_fails(
        &create_user("nope", "m@initech.example", "long-enough"),
        "--tenant",
    );
    assert_fails(
        &strata(
            &url,
            &["tenant", "create", "--name", "X", "--currency", "euro"],
        ),
        "currency",
    );
    assert_fails(&strata(&url, &["seed", "--tenants", "0"]), "--tenants");

    let seeded = strata(
        &url,
        &[
            "seed",
            "--tenants",
            "3",
            "--scale",
            "0.01",
            "--password",
            "load-test-pw",
        ],
    );
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );

    let server = Server::start(&url, &[]);
    let mut peter = Client::new(&server.base, None);
    let me = peter.login("peter@initech.example", "tps-reports").await;
    assert_eq!(me["tenant"]["currency"], "USD");
    assert_eq!(
        peter.get("/api/contacts").await.json()["total"],
        0,
        "the CLI's tenant starts empty"
    );
    let mut sizes = Vec::new();
    for i in 1..=3 {
        let mut admin = Client::new(&server.base, None);
        admin
            .login(&format!("admin@tenant{i}.example"), "load-test-pw")
            .await;
        let total = admin.get("/api/contacts").await.json()["total"]
            .as_i64()
            .unwrap_or_default();
        assert!(total > 0, "tenant {i} has contacts");
        sizes.push(total);
        let contact = admin
            .create_id("contacts", json!({"first_name": "New"}))
            .await;
        admin
            .get(&format!("/api/contacts/{contact}"))
            .await
            .assert_status(200);
    }
    assert!(sizes[0] > sizes[2], "tenant sizes are skewed: {sizes:?}");
}

crate::both!(cli_commands);

#[test]
fn bad_configuration_stops_start_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("migrate")
        .env("DATABASE_URL", "mysql://localhost/x")
        .output()
        .expect("runs");
    assert_fails(&out, "DATABASE_URL");
    for (var, value) in [
        ("STRATA_LISTEN", "256.0.0.1:1"),
        ("STRATA_BODY_LIMIT", "lots"),
        ("STRATA_COOKIE_SECURE", "maybe"),
        ("REDIS_URL", "http://x"),
        ("STRATA_SESSION_TTL", "5"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("migrate")
            .env(var, value)
            .output()
            .expect("runs");
        assert_fails(&out, var);
    }
}
