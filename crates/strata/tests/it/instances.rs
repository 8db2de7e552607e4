//! `strata serve` as child processes on addresses a test chooses, for the
//! tests about listening sockets and restarts: started with SO_REUSEPORT or
//! with a socket handed over the way systemd does, stopped with SIGTERM,
//! killed on drop so a failing test leaves nothing running.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_db::model::Role;
use strata_db::repo::auth as repo;

use crate::support::{test_config, Backend, TestDb};

/// A fresh, migrated PostgreSQL database with one tenant whose admin can log
/// in as `admin@acme.example` / [`PASSWORD`].
pub async fn database_with_admin() -> TestDb {
    let database = TestDb::create(Backend::Postgres).await;
    let db = strata_db::Db::connect(&test_config(database.url()).db())
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");
    let tenant = repo::create_tenant(&db, "Acme", "EUR")
        .await
        .expect("tenant");
    let hash = strata::auth::password::hash(PASSWORD).expect("hash");
    repo::create_user(
        &db,
        repo::NewUser {
            tenant_id: tenant.id,
            email: EMAIL,
            name: "Admin",
            role: Role::Admin,
            password_hash: &hash,
        },
    )
    .await
    .expect("user");
    db.close().await;
    database
}

pub const EMAIL: &str = "admin@acme.example";
pub const PASSWORD: &str = "password-acme";

/// An address on 127.0.0.1 that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// `strata serve --no-migrate` on `listen`, everything else default.
pub fn serve(db_url: &str, listen: SocketAddr) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(["serve", "--no-migrate"])
        .env("STRATA_LISTEN", listen.to_string())
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    common_env(&mut command, db_url);
    command
}

/// `strata serve --no-migrate` as systemd starts it from a socket unit:
/// `socket` becomes its fd 3, and `LISTEN_FDS=1` with `LISTEN_PID` set to
/// its own pid say so. The shell moves the socket from stdin to fd 3 and
/// `exec`s, so the pid it puts in `LISTEN_PID` is strata's.
pub fn serve_activated(db_url: &str, socket: &std::net::TcpListener) -> Command {
    let fd = socket.try_clone().expect("a copy of the socket");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"exec 3<&0 0</dev/null; export LISTEN_FDS=1 LISTEN_PID=$$; exec "$0" serve --no-migrate"#)
        .arg(env!("CARGO_BIN_EXE_strata"))
        .stdin(Stdio::from(OwnedFd::from(fd)))
        // Must not be what the server uses: the socket it was given is.
        .env("STRATA_LISTEN", "127.0.0.1:1");
    common_env(&mut command, db_url);
    command
}

fn common_env(command: &mut Command, db_url: &str) {
    command
        .env("DATABASE_URL", db_url)
        .env("STRATA_DB_MAX_CONNECTIONS", "5")
        .env_remove("DATABASE_READ_URL")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "info,sqlx=warn");
}

/// A running `strata serve`, killed on drop.
pub struct Instance {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    /// Starts `command` and waits until it listens.
    pub fn start(mut command: Command) -> Instance {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("strata serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("strata listening on http://") {
                    let _ = tx.send(addr.parse::<SocketAddr>().ok());
                }
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line);
                }
            }
            let _ = tx.send(None);
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(addr)) => Instance { child, addr, log },
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("the server did not start:\n{}", joined(&log));
            }
        }
    }

    /// Runs `command`, which must fail to start; returns its stderr.
    pub fn start_failing(mut command: Command) -> String {
        let out = command.output().expect("strata runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "should not start: {stderr}");
        stderr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM: the server drains and exits.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM delivered to {}", self.pid());
    }

    /// Waits for the process to exit by itself.
    pub async fn exited(&mut self, within: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "strata (pid {}) did not exit within {within:?}:\n{}",
                self.pid(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        joined(&self.log)
    }
}

fn joined(log: &Mutex<Vec<String>>) -> String {
    log.lock().map(|l| l.join("\n")).unwrap_or_default()
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
