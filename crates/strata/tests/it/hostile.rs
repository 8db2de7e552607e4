//! Hostile input, beyond the malformed bodies of `resources.rs`: SQL and
//! LIKE metacharacters, NUL bytes, bad percent-encoding, header abuse sent
//! over a raw socket, bodies whose length lies, and a client that sends its
//! headers too slowly. Every answer is the contract's 4xx, nothing is
//! stored by mistake, and the server keeps serving.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Backend, Client, TestApp};

crate::both!(
    metacharacters_are_data,
    nul_bytes_and_bad_encoding,
    header_abuse
);

/// An HTTP/1.1 exchange over a raw socket: whatever bytes the test wants
/// sent, and the status and body the server answered (the connection is
/// closed by the request).
async fn raw_exchange(base: &str, request: &[u8]) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A `POST /api/contacts` whose body is sent chunked: `chunks` chunks of
/// 64 KiB of spaces, no declared length.
fn chunked_create(token: &str, chunks: usize) -> Vec<u8> {
    let mut request = format!(
        "POST /api/contacts HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..chunks {
        request.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend(&chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    request
}

/// Asserts a raw answer is `status` in the contract's error shape.
#[track_caller]
fn assert_raw_error((status, body): &(u16, String), want: u16, code: &str) {
    assert_eq!(*status, want, "body: {body}");
    let json: Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    assert_eq!(json["error"]["code"], code, "{json}");
}

async fn metacharacters_are_data(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    let hostile = [
        "'; DROP TABLE contacts; --",
        "R\"); DELETE FROM contacts; --",
        "100%",
        "a_b",
        "back\\slash",
        "$1",
        "?",
    ];
    for name in hostile {
        alice
            .create(
                "contacts",
                json!({"first_name": name, "company": name, "tags": [name]}),
            )
            .await;
    }
    alice
        .create(
            "contacts",
            json!({"first_name": "Plain", "company": "Plain"}),
        )
        .await;
    for name in hostile {
        let encoded: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
        // Search, exact filter and tag filter each find exactly the one row
        // holding those characters: `%` and `_` are not wildcards, quotes do
        // not end a string.
        for param in ["q", "company", "tag"] {
            let page = alice.get(&format!("/api/contacts?{param}={encoded}")).await;
            page.assert_status(200);
            let page = page.json();
            assert_eq!(page["total"], 1, "{param}={name:?}: {page}");
            assert_eq!(page["items"][0]["first_name"], name);
        }
        // As a sort field or in a path, it is a 400, not a query.
        alice
            .get(&format!("/api/contacts?sort={encoded}"))
            .await
            .assert_error(400, "bad_request");
        alice
            .get(&format!("/api/contacts/{encoded}"))
            .await
            .assert_error(400, "bad_request");
    }
    assert_eq!(
        alice.get("/api/contacts").await.json()["total"],
        hostile.len() + 1,
        "every row is still there"
    );
}

async fn nul_bytes_and_bad_encoding(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    // A NUL character cannot be stored in PostgreSQL text: a field rule,
    // named, on every string field.
    for (field, body) in [
        ("first_name", json!({"first_name": "A\u{0}B"})),
        ("company", json!({"first_name": "A", "company": "x\u{0}"})),
        ("tags", json!({"first_name": "A", "tags": ["t\u{0}"]})),
    ] {
        let resp = alice.post("/api/contacts", &body).await;
        resp.assert_error(422, "validation_failed");
        assert!(
            resp.error_fields().iter().any(|f| f.starts_with(field)),
            "{field}: {}",
            resp.text
        );
    }
    alice
        .post("/api/deals", &json!({"title": "\u{0}"}))
        .await
        .assert_error(422, "validation_failed");
    // In query parameters: a 400 naming the parameter.
    for param in ["q", "company", "tag"] {
        let resp = alice.get(&format!("/api/contacts?{param}=a%00b")).await;
        resp.assert_error(400, "bad_request");
        assert_eq!(resp.error_fields(), vec![param.to_owned()], "{}", resp.text);
    }
    // Percent-encoding that is not UTF-8, in a parameter, its name or a path.
    for path in [
        "/api/contacts?q=%ff%fe",
        "/api/contacts?%ff=1",
        "/api/contacts/%ff",
        "/api/contacts?page=%31%",
    ] {
        alice.get(path).await.assert_error(400, "bad_request");
    }
    // Login with the same characters: 400/401, never a 500.
    let anon = app.anonymous();
    for body in [
        json!({"email": "a\u{0}@x.example", "password": "p"}),
        json!({"email": "alice@acme.example", "password": "\u{0}"}),
    ] {
        let resp = anon.post("/api/auth/login", &body).await;
        assert!(
            [401, 422].contains(&resp.status.as_u16()),
            "login with NUL: {} {}",
            resp.status,
            resp.text
        );
    }
    assert_eq!(alice.get("/api/contacts").await.json()["total"], 0);
}

async fn header_abuse(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    let token = alice.token.clone().expect("token");
    let base = app.base.clone();
    let get = |headers: &str| {
        format!("GET /api/contacts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n")
            .into_bytes()
    };

    // Too many header fields, or too many bytes of them: 431 in our shape.
    let junk = |n: usize| -> String { (0..n).map(|i| format!("X-Junk-{i}: {i}\r\n")).collect() };
    assert_raw_error(
        &raw_exchange(&base, &get(&junk(80))).await,
        431,
        "headers_too_large",
    );
    // Beyond hyper's own limit (100 fields) the 431 is hyper's, bare, and
    // the server goes on serving.
    assert_eq!(raw_exchange(&base, &get(&junk(150))).await.0, 431);
    let big = format!("X-Junk: {}\r\n", "a".repeat(64 * 1024));
    assert_raw_error(
        &raw_exchange(&base, &get(&big)).await,
        431,
        "headers_too_large",
    );
    // A large but sane set of headers (a browser's cookies) is fine.
    let cookies = format!(
        "Authorization: Bearer {token}\r\nCookie: {}\r\n",
        (0..100)
            .map(|i| format!("c{i}={}", "v".repeat(60)))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert_eq!(raw_exchange(&base, &get(&cookies)).await.0, 200);

    // Credentials that are not credentials: 401, whatever the bytes.
    for auth in [
        "Authorization: Bearer\r\n".to_owned(),
        format!("Authorization: Bearer {}\r\n", "x".repeat(20_000)),
        "Authorization: Basic YWxpY2U6cGFzcw==\r\n".to_owned(),
        "Authorization: Bearer \u{fffd}\u{fffd}\r\n".to_owned(),
        format!("Authorization: Bearer {token}\r\nAuthorization: Bearer other\r\n"),
        "Cookie: strata_session=\r\n".to_owned(),
        "Cookie: strata_session=%00%ff; strata_session=x\r\n".to_owned(),
    ] {
        assert_raw_error(
            &raw_exchange(&base, &get(&auth)).await,
            401,
            "unauthenticated",
        );
    }
    let mut bad_bytes = get("");
    let at = bad_bytes.len() - 2;
    bad_bytes.splice(
        at..at,
        b"Authorization: Bearer \xff\xfe\x80\r\n".iter().copied(),
    );
    assert_raw_error(
        &raw_exchange(&base, &bad_bytes).await,
        401,
        "unauthenticated",
    );

    // Conditional headers with junk: a mismatch, not a crash.
    let id = alice
        .create_id("contacts", json!({"first_name": "Ann"}))
        .await;
    for value in ["garbage", "\"\"", "W/", "*, \"x\"", &"\"a\",".repeat(2000)] {
        let resp = alice
            .request(
                Method::GET,
                &format!("/api/contacts/{id}"),
                None,
                &[("if-none-match", value)],
            )
            .await;
        assert!(
            [200, 304].contains(&resp.status.as_u16()),
            "If-None-Match {value:?}: {}",
            resp.status
        );
        let resp = alice
            .request(
                Method::PATCH,
                &format!("/api/contacts/{id}"),
                Some(&json!({"last_name": "X"})),
                &[("if-match", value)],
            )
            .await;
        if value.starts_with('*') {
            resp.assert_status(200);
        } else {
            resp.assert_error(409, "conflict");
        }
    }

    // A body whose declared length is far beyond the limit is refused
    // before it is read; one that is chunked past the limit too.
    let huge = format!(
        "POST /api/contacts HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{{"
    );
    assert_raw_error(
        &raw_exchange(&base, huge.as_bytes()).await,
        413,
        "payload_too_large",
    );
    assert_raw_error(
        &raw_exchange(&base, &chunked_create(&token, 20)).await,
        413,
        "payload_too_large",
    );
    // A content type that is JSON in name only.
    for content_type in ["application/jsonp", "text/json", "application/json-seq"] {
        alice
            .raw(
                Method::POST,
                "/api/contacts",
                content_type,
                b"{\"first_name\":\"A\"}".to_vec(),
            )
            .await
            .assert_error(415, "unsupported_media_type");
    }

    // The server is unharmed, and nothing above was stored.
    let page = Client::new(&base, Some(token)).get("/api/contacts").await;
    page.assert_status(200);
    assert_eq!(page.json()["total"], 1);
}

/// A client that sends its headers a byte at a time gets its connection
/// closed after the header timeout; it holds no request open forever, and
/// other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.header_timeout_secs = 1).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&addr).await.expect("connect");
    let started = std::time::Instant::now();
    let mut closed = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        app.anonymous().get("/healthz").await.assert_status(200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !closed {
        // Whatever was sent, the server ends the connection on its own.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut rest)).await;
        closed = read.is_ok();
    }
    assert!(
        closed,
        "the connection was still open {:?} after it started sending headers",
        started.elapsed()
    );
    // An idle keep-alive connection is closed after the same time.
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), idle.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "an idle keep-alive connection stays open");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "the request on it was answered first"
    );
}

/// A body sent in chunks (no declared length) past the limit: the server
/// finds the limit while reading, then reads and drops the rest before its
/// 413, so a client still sending gets the answer, not a reset connection
/// (answering at the limit reset some of these eight-MiB uploads under
/// their client, which saw a failed send instead of the 413).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_gets_its_413_while_still_being_sent() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let alice = app.tenant("acme").await;
    let token = alice.token.clone().expect("token");
    let request = chunked_create(&token, 128);
    for _ in 0..10 {
        assert_raw_error(
            &raw_exchange(&app.base, &request).await,
            413,
            "payload_too_large",
        );
    }
    assert_eq!(alice.get("/api/contacts").await.json()["total"], 0);
}
