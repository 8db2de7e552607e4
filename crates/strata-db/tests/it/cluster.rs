//! A private PostgreSQL primary and a `pg_basebackup` streaming replica
//! (optionally with `recovery_min_apply_delay`), each its own postmaster on
//! a free port, run as the postgres user and stopped on drop. Shared by the
//! strata-db and strata test suites (the latter includes this file by path).
//! Never touches the shared server at 127.0.0.1:5432.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The newest installed PostgreSQL's programs (Debian's layout).
fn bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|v| v.parse::<u32>().ok())
        .max()
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL under {}; scripts/test installs it",
                root.display()
            )
        });
    root.join(newest.to_string()).join("bin")
}

/// A primary and one streaming replica in a temporary folder owned by the
/// postgres user. Dropping it stops both (immediately) and removes the folder.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub primary_port: u16,
    pub replica_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Runs a PostgreSQL program as the postgres user; panics with its output
/// when it fails (only during setup, where failing is the right answer).
pub fn as_postgres(cwd: &Path, program: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .current_dir(cwd)
        .args([
            "-u",
            "postgres",
            "--",
            bin().join(program).to_str().expect("utf-8 path"),
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} (needs runuser and PostgreSQL): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pg_ctl start` or `stop` (immediate: like a crash, so open connections
/// break mid-stream) on the server `name` of the cluster folder `root`.
/// Takes the folder rather than the cluster, so that a test can run it on a
/// blocking thread while it keeps sending requests.
pub fn pg_ctl_in(root: &Path, name: &str, action: &str) {
    let data = root.join(name);
    let log = root.join(format!("{name}.log"));
    let (d, l) = (data.to_str().expect("utf-8"), log.to_str().expect("utf-8"));
    match action {
        "start" => as_postgres(
            root,
            "pg_ctl",
            &["-D", d, "-l", l, "-w", "-t", "60", "start"],
        ),
        "stop" => as_postgres(root, "pg_ctl", &["-D", d, "-m", "immediate", "-w", "stop"]),
        other => panic!("unknown pg_ctl action {other}"),
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Cluster {
    pub fn start(apply_delay: &str) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("strata-replica-")
            .tempdir()
            .expect("a temporary folder");
        let chown = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown the cluster folder to postgres");
        let cluster = Cluster {
            primary_port: free_port(),
            replica_port: free_port(),
            dir,
        };
        // From here on the guard exists: a failing step still stops
        // whatever did start.
        let root = cluster.dir.path();
        let primary = cluster.data("primary");
        let p = primary.to_str().expect("utf-8 path");
        as_postgres(
            root,
            "initdb",
            &[
                "-D",
                p,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        // fsync off: a test cluster that crashes is thrown away anyway.
        let common = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 5\nfsync = off\n\
             shared_buffers = 16MB\nmax_connections = 60\nhot_standby_feedback = on\n",
            root.display()
        );
        append(
            &primary.join("postgresql.conf"),
            &format!("{common}port = {}\n", cluster.primary_port),
        );
        cluster.pg_ctl("primary", "start");
        let replica = cluster.data("replica");
        let port = cluster.primary_port.to_string();
        as_postgres(
            root,
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                replica.to_str().expect("utf-8 path"),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        append(
            &replica.join("postgresql.conf"),
            &format!(
                "\nport = {}\nrecovery_min_apply_delay = '{apply_delay}'\n",
                cluster.replica_port
            ),
        );
        cluster.pg_ctl("replica", "start");
        cluster
    }

    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pg_ctl(&self, name: &str, action: &str) {
        pg_ctl_in(self.dir.path(), name, action);
    }

    pub fn url(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for name in ["replica", "primary"] {
            let data = self.data(name);
            if data.join("postmaster.pid").exists() {
                let _ = Command::new("runuser")
                    .current_dir(self.dir.path())
                    .args([
                        "-u",
                        "postgres",
                        "--",
                        bin().join("pg_ctl").to_str().expect("utf-8 path"),
                    ])
                    .arg("-D")
                    .arg(&data)
                    .args(["-m", "immediate", "-w", "stop"])
                    .output();
            }
        }
        // The TempDir field then removes the folder (root may delete the
        // postgres user's files).
    }
}

/// Polls `check` every 100 ms until it holds; panics after `limit` with
/// `what`. Generous limits: this proves eventual behaviour, not speed.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
