//! A rolling restart behind nginx fails no request. Two `strata serve`
//! instances share one PostgreSQL database and one Redis behind nginx, configured with the
//! shipped `deploy/nginx/strata.conf`. While clients read and write through
//! nginx, each instance in turn gets SIGTERM and a replacement is started on
//! its port (SO_REUSEPORT), as a deploy would do. Every request must get the
//! answer it would have got without the restart, and every write must be
//! readable afterwards.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use testkit::RedisServer;
use tokio::sync::watch;

use crate::instances::{database_with_admin, free_addr, serve, Instance, EMAIL, PASSWORD};

/// Seconds a stopping instance keeps serving (and answering `/readyz` 503)
/// before it closes its listener: the value `deploy/strata.env.example`
/// recommends, above the nginx config's upstream `keepalive_timeout`.
const GRACE: &str = "5";

/// Concurrent clients, each with its own session.
const CLIENTS: usize = 16;

/// The nginx binary: on PATH, else where Debian installs it. Missing nginx
/// fails the test rather than skipping it.
fn nginx_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test needs nginx, found neither on PATH nor at /usr/sbin/nginx; \
                 `scripts/test` installs it (Debian package nginx-light, or nginx)"
            )
        })
}

/// nginx in the foreground with a private prefix (config, pid, logs and
/// temporary files in a temporary directory), stopped on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx with the shipped config, its upstream servers replaced by
    /// `upstreams` and its port by a free one on 127.0.0.1.
    async fn start(upstreams: [SocketAddr; 2]) -> Nginx {
        use std::os::unix::fs::PermissionsExt;
        let binary = nginx_binary();
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Started as root, nginx runs its workers as another user, who must
        // reach the temporary files inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let addr = free_addr();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx/strata.conf");
        let mut site = std::fs::read_to_string(&shipped).expect("deploy/nginx/strata.conf");
        let access_log = dir.path().join("access.log");
        for (from, to) in [
            ("listen 80;".to_owned(), format!("listen {addr};")),
            (
                "server 127.0.0.1:8081 ".to_owned(),
                format!("server {} ", upstreams[0]),
            ),
            (
                "server 127.0.0.1:8082 ".to_owned(),
                format!("server {} ", upstreams[1]),
            ),
            (
                "/var/log/nginx/strata.access.log".to_owned(),
                access_log.display().to_string(),
            ),
        ] {
            assert!(
                site.contains(&from),
                "deploy/nginx/strata.conf no longer has {from:?}; update this test with it"
            );
            site = site.replace(&from, &to);
        }
        std::fs::write(dir.path().join("strata.conf"), site).expect("write");
        let d = dir.path().display();
        let main = format!(
            "worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
                 client_body_temp_path {d}/client_body;\n\
                 proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n\
                 include {d}/strata.conf;\n\
             }}\n"
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, main).expect("write");
        let command = |extra: &[&str]| {
            let mut command = Command::new(&binary);
            command
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .args(extra);
            command
        };
        let check = command(&["-t"]).output().expect("nginx -t runs");
        assert!(
            check.status.success(),
            "nginx accepts the config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = command(&["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Nginx { child, dir, addr };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(resp) = client.get(format!("http://{addr}/healthz")).send().await {
                if resp.status().is_success() {
                    return nginx;
                }
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", nginx.error_log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nginx does not answer on {addr}:\n{}",
                nginx.error_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; a killed master would
        // leave them holding the port.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client's session: what it sent, what went wrong, what it wrote.
struct Session {
    http: reqwest::Client,
    base: String,
    token: String,
    requests: u64,
    failures: Vec<String>,
    /// Every contact it created, with the `last_name` it must have now.
    written: Vec<(String, &'static str)>,
}

impl Session {
    async fn login(base: &str) -> Session {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let resp = http
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"email": EMAIL, "password": PASSWORD}))
            .send()
            .await
            .expect("login through nginx");
        assert_eq!(resp.status().as_u16(), 200, "login through nginx");
        let body: Value = resp.json().await.expect("login body");
        let token = body["token"].as_str().expect("token").to_owned();
        Session {
            http,
            base: base.to_owned(),
            token,
            requests: 0,
            failures: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Sends one request; records a failure unless it is answered with
    /// `expected`. Returns the body on success.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: u16,
    ) -> Option<Value> {
        self.requests += 1;
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let at = chrono::Utc::now().format("%H:%M:%S%.3f");
        match request.send().await {
            Err(e) => {
                self.failures
                    .push(format!("{at} {method} {path}: no response: {e}"));
                None
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                if status != expected {
                    self.failures.push(format!(
                        "{at} {method} {path}: {status} (expected {expected}): {text}"
                    ));
                    return None;
                }
                match serde_json::from_str(&text) {
                    Ok(value) => Some(value),
                    Err(e) => {
                        self.failures.push(format!(
                            "{at} {method} {path}: body is not JSON ({e}): {text}"
                        ));
                        None
                    }
                }
            }
        }
    }

    /// Creates, reads, sometimes changes a contact, and reads a list page,
    /// until told to stop.
    async fn run(mut self, worker: usize, stop: watch::Receiver<bool>) -> Session {
        let mut round = 0usize;
        while !*stop.borrow() {
            round += 1;
            let first_name = format!("w{worker}r{round}");
            let body = json!({"first_name": first_name, "last_name": "Created"});
            let Some(created) = self
                .call(Method::POST, "/api/contacts", Some(body), 201)
                .await
            else {
                continue;
            };
            let Some(id) = created["id"].as_str().map(str::to_owned) else {
                self.failures.push(format!("no id in {created}"));
                continue;
            };
            self.written.push((id.clone(), "Created"));
            let path = format!("/api/contacts/{id}");
            if let Some(read) = self.call(Method::GET, &path, None, 200).await {
                if read["first_name"] != first_name.as_str() {
                    self.failures
                        .push(format!("GET {path} right after creating it: {read}"));
                }
            }
            if round.is_multiple_of(2) {
                let patch = json!({"last_name": "Patched"});
                if self
                    .call(Method::PATCH, &path, Some(patch), 200)
                    .await
                    .is_some()
                {
                    if let Some(written) = self.written.last_mut() {
                        written.1 = "Patched";
                    }
                }
            }
            self.call(
                Method::GET,
                "/api/contacts?per_page=5&sort=-created_at",
                None,
                200,
            )
            .await;
        }
        self
    }
}

/// Starts an instance on `addr` the way the deploy examples run them:
/// several instances share one Redis (their caches' invalidations and the
/// sessions); without it each would serve its own stale copies.
fn instance(db_url: &str, redis: &RedisServer, addr: SocketAddr) -> Instance {
    let mut command = serve(db_url, addr);
    command
        .env("REDIS_URL", redis.url())
        .env("STRATA_SHUTDOWN_GRACE", GRACE)
        .env("STRATA_TRUST_FORWARDED_FOR", "true")
        // The clients write far faster than a person: no 429 in this test.
        .env("STRATA_WRITE_RATE", "1000000")
        .env("STRATA_WRITE_BURST", "1000000");
    Instance::start(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_nginx_fails_no_request() {
    let database = database_with_admin().await;
    let redis = RedisServer::start();
    let addrs = [free_addr(), free_addr()];
    let mut instances = [
        instance(database.url(), &redis, addrs[0]),
        instance(database.url(), &redis, addrs[1]),
    ];
    let nginx = Nginx::start(addrs).await;
    let base = format!("http://{}", nginx.addr);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut clients = Vec::new();
    for worker in 0..CLIENTS {
        let session = Session::login(&base).await;
        clients.push(tokio::spawn(session.run(worker, stop_rx.clone())));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut replaced = Vec::new();
    for slot in 0..instances.len() {
        instances[slot].terminate();
        // The replacement binds the same port while the old one drains.
        let replacement = instance(database.url(), &redis, addrs[slot]);
        let mut old = std::mem::replace(&mut instances[slot], replacement);
        let status = old.exited(Duration::from_secs(60)).await;
        assert!(
            status.success(),
            "a clean exit on SIGTERM: {status}\n{}",
            old.log()
        );
        replaced.push(old);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let _ = stop_tx.send(true);
    let mut sessions = Vec::new();
    for client in clients {
        sessions.push(client.await.expect("client task"));
    }
    let requests: u64 = sessions.iter().map(|s| s.requests).sum();
    let failures: Vec<&String> = sessions.iter().flat_map(|s| &s.failures).collect();
    let logs = || {
        let instance_logs: Vec<String> = replaced
            .iter()
            .chain(instances.iter())
            .map(|i| format!("--- strata pid {}\n{}", i.pid(), i.log()))
            .collect();
        format!(
            "--- nginx error.log\n{}\n{}",
            nginx.error_log(),
            instance_logs.join("\n")
        )
    };
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed during the restarts; the first:\n{}\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        logs()
    );
    assert!(
        requests >= 200,
        "the clients kept busy: {requests} requests"
    );
    eprintln!("{requests} requests through nginx during two restarts, none failed");

    // Every write is there, as last written, for the session that made it.
    let mut verified = 0;
    for session in &mut sessions {
        for (id, last_name) in std::mem::take(&mut session.written) {
            let path = format!("/api/contacts/{id}");
            if let Some(read) = session.call(Method::GET, &path, None, 200).await {
                assert_eq!(read["last_name"], last_name, "{path} after the restarts");
                verified += 1;
            }
        }
        assert!(session.failures.is_empty(), "{:?}", session.failures);
    }
    assert!(verified > 0);

    // nginx saw no error either, and spread requests over both ports.
    let access = nginx.access_log();
    let mut upstreams = BTreeSet::new();
    for line in access.lines() {
        let status = line
            .split('"')
            .nth(2)
            .and_then(|rest| rest.split_whitespace().next());
        assert!(
            status.is_some_and(|s| !s.starts_with('5')),
            "nginx logged a failed request: {line}"
        );
        if let Some(upstream) = line
            .split("upstream=")
            .nth(1)
            .and_then(|u| u.split_whitespace().next())
        {
            upstreams.insert(upstream.to_owned());
        }
    }
    for addr in addrs {
        assert!(
            upstreams.iter().any(|u| u.contains(&addr.to_string())),
            "{addr} served requests: {upstreams:?}"
        );
    }
}
