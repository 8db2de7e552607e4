//! Where `strata serve` gets its listening socket: SO_REUSEPORT lets a new
//! instance listen beside one that drains, `STRATA_REUSEPORT=false` makes a
//! busy port an error, and a socket passed the systemd way outlives the
//! process, so a request sent during a restart waits instead of failing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::instances::{
    database_with_admin, free_addr, serve, serve_activated, Instance, EMAIL, PASSWORD,
};

/// A client that opens a new connection for every request, so the kernel
/// picks a listening socket each time.
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_a_port_with_reuseport() {
    let database = database_with_admin().await;
    let addr = free_addr();
    // Each instance knows a different operator token: which one answered a
    // request shows in whether its token was accepted.
    let mut first = serve(database.url(), addr);
    first.env("STRATA_ADMIN_TOKEN", "token-first");
    let first = Instance::start(first);
    let mut second = serve(database.url(), addr);
    second.env("STRATA_ADMIN_TOKEN", "token-second");
    let second = Instance::start(second);
    assert_eq!(
        (first.addr, second.addr),
        (addr, addr),
        "one port, two processes"
    );

    let client = fresh_connections();
    let (mut by_first, mut by_second) = (0, 0);
    for _ in 0..400 {
        let resp = client
            .get(format!("http://{addr}/metrics"))
            .bearer_auth("token-first")
            .send()
            .await
            .expect("every connection is accepted");
        match resp.status() {
            StatusCode::OK => by_first += 1,
            StatusCode::UNAUTHORIZED => by_second += 1,
            other => panic!("unexpected status {other}"),
        }
        if by_first >= 5 && by_second >= 5 {
            break;
        }
    }
    assert!(
        by_first >= 5 && by_second >= 5,
        "both processes accept connections on the shared port: {by_first} and {by_second}"
    );

    // Opting out of SO_REUSEPORT makes the busy port a start-up error that
    // says what to do.
    let mut exclusive = serve(database.url(), addr);
    exclusive.env("STRATA_REUSEPORT", "false");
    let stderr = Instance::start_failing(exclusive);
    for words in [
        &format!("listening on {addr} (STRATA_LISTEN)"),
        "Address already in use",
        "STRATA_REUSEPORT=true",
    ] {
        assert!(stderr.contains(words), "the error says {words:?}: {stderr}");
    }
    drop((first, second));

    // A port held by a process without SO_REUSEPORT cannot be shared either;
    // the error says why.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let held = holder.local_addr().expect("addr");
    let stderr = Instance::start_failing(serve(database.url(), held));
    assert!(
        stderr.contains(&format!("listening on {held}")) && stderr.contains("without SO_REUSEPORT"),
        "the error names the address and the cause: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_passed_by_systemd_keeps_requests_across_a_restart() {
    let database = database_with_admin().await;
    // The test plays systemd's socket unit: it owns the listening socket for
    // the whole test and passes it to each process it starts.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    let login = json!({"email": EMAIL, "password": PASSWORD});
    let client = fresh_connections();

    let mut first = Instance::start(serve_activated(database.url(), &socket));
    assert_eq!(first.addr, addr, "serves on the socket it was passed");
    assert!(
        first.log().contains("socket activation"),
        "logs that it uses the passed socket:\n{}",
        first.log()
    );
    let resp = client
        .post(format!("http://{addr}/api/auth/login"))
        .json(&login)
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::OK);

    first.terminate();
    assert!(first.exited(Duration::from_secs(30)).await.success());
    // No process runs now. A login sent meanwhile is queued by the kernel on
    // the socket that systemd (here, the test) still holds...
    let pending = tokio::spawn({
        let client = client.clone();
        let url = format!("http://{addr}/api/auth/login");
        async move { client.post(url).json(&login).send().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pending.is_finished(), "the request waits for a process");

    // ... and answered by the next process.
    let second = Instance::start(serve_activated(database.url(), &socket));
    let resp = pending
        .await
        .expect("task")
        .expect("the request sent during the restart is answered");
    assert_eq!(resp.status(), StatusCode::OK, "{}", second.log());
}
