//! Login, sessions, logout and throttling.

use reqwest::Method;
use serde_json::json;

use crate::both;
use crate::support::{Backend, Client, TestApp};

both!(
    login_returns_session_usable_by_cookie_and_bearer,
    wrong_credentials_are_one_401,
    logout_revokes,
    login_rotates_session,
    throttles_failed_logins,
    every_private_route_needs_a_session,
    login_input_errors,
    writes_are_rate_limited_per_session
);

/// A login storm larger than the password-hashing queue: every login is
/// answered at once with a session or a 503 the client can retry (never
/// queued without bound, never a 401 or a 500), and the server is at once
/// usable again: the turned-away logins left no work behind. An operator
/// sees the storm in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_is_turned_away_with_503_not_queued() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.admin_token = Some("operator".to_owned());
    })
    .await;
    let _ = app.tenant("acme").await;
    let anon = app.anonymous();
    let queue = strata::auth::password::Verifier::capacity();
    let storm = 8 * queue;
    let body = json!({"email": "admin@acme.example", "password": "password-acme"});
    let answers =
        futures_util::future::join_all((0..storm).map(|_| anon.post("/api/auth/login", &body)))
            .await;

    let mut tokens = Vec::new();
    let mut turned_away = 0;
    for resp in &answers {
        if resp.status.as_u16() == 503 {
            resp.assert_error(503, "unavailable");
            assert_eq!(resp.header("retry-after"), Some("1"), "{}", resp.text);
            turned_away += 1;
        } else {
            resp.assert_status(200);
            tokens.push(resp.json()["token"].as_str().expect("token").to_owned());
        }
    }
    // Arrivals take far less than the queue's half second of work; asking
    // for an eighth of the storm to be turned away holds even if they took
    // seconds.
    assert!(
        turned_away >= queue,
        "{turned_away} of {storm} logins turned away; the queue holds {queue}"
    );
    assert!(!tokens.is_empty(), "the queue's logins succeeded");
    for token in [tokens.first(), tokens.last()].into_iter().flatten() {
        Client::new(&app.base, Some(token.clone()))
            .get("/api/auth/me")
            .await
            .assert_status(200);
    }
    // Turned away is not a failed attempt: no throttling follows.
    let mut again = app.anonymous();
    again.login("admin@acme.example", "password-acme").await;

    // The recorder is the process's, shared with the other tests: its
    // counts are at least this storm's.
    let scrape = app.scrape_metrics("operator").await;
    let count = |outcome: &str| {
        let series = format!("strata_password_checks_total{{outcome=\"{outcome}\"}} ");
        scrape
            .text
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {series}in {}", scrape.text))
    };
    assert!(count("turned_away") >= turned_away as f64);
    assert!(count("checked") > tokens.len() as f64);
    assert!(
        scrape.text.contains("\nstrata_password_checks_waiting "),
        "the queue's length is published: {}",
        scrape.text
    );
}

async fn login_returns_session_usable_by_cookie_and_bearer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let _ = app.tenant("acme").await;
    let anon = app.anonymous();
    let resp = anon
        .post(
            "/api/auth/login",
            &json!({"email": "ADMIN@acme.example", "password": "password-acme"}),
        )
        .await;
    resp.assert_status(200);
    let body = resp.json();
    let token = body["token"].as_str().expect("token");
    assert_eq!(token.len(), 43, "256-bit token, base64url");
    assert_eq!(body["user"]["email"], "admin@acme.example");
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(body["tenant"]["name"], "acme");
    assert_eq!(body["tenant"]["currency"], "EUR");
    assert!(
        body["user"].get("password_hash").is_none(),
        "never leaks the hash"
    );
    let cookie = resp.header("set-cookie").expect("cookie");
    assert!(
        cookie.starts_with(&format!("strata_session={token};")),
        "{cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "Secure only when configured: {cookie}"
    );

    let bearer = Client::new(&app.base, Some(token.to_owned()));
    let me = bearer.get("/api/auth/me").await;
    me.assert_status(200);
    assert_eq!(me.json()["user"]["email"], "admin@acme.example");
    assert_eq!(me.json()["tenant"]["id"], body["tenant"]["id"]);

    let by_cookie = anon
        .request(
            Method::GET,
            "/api/auth/me",
            None,
            &[("cookie", &format!("theme=dark; strata_session={token}"))],
        )
        .await;
    by_cookie.assert_status(200);
    assert_eq!(by_cookie.json()["user"]["id"], body["user"]["id"]);
}

async fn wrong_credentials_are_one_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let _ = app.tenant("acme").await;
    let anon = app.anonymous();
    let wrong_password = anon
        .post(
            "/api/auth/login",
            &json!({"email": "admin@acme.example", "password": "nope-nope"}),
        )
        .await;
    let unknown_email = anon
        .post(
            "/api/auth/login",
            &json!({"email": "ghost@acme.example", "password": "nope-nope"}),
        )
        .await;
    wrong_password.assert_error(401, "unauthenticated");
    unknown_email.assert_error(401, "unauthenticated");
    assert_eq!(
        wrong_password.text, unknown_email.text,
        "no way to tell which emails exist"
    );
    assert!(wrong_password.header("set-cookie").is_none());
}

async fn logout_revokes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    alice.get("/api/auth/me").await.assert_status(200);
    let resp = alice
        .request(Method::POST, "/api/auth/logout", None, &[])
        .await;
    resp.assert_status(204);
    assert!(
        resp.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0")),
        "cookie cleared"
    );
    alice
        .get("/api/auth/me")
        .await
        .assert_error(401, "unauthenticated");
    alice
        .get("/api/contacts")
        .await
        .assert_error(401, "unauthenticated");
    alice
        .request(Method::POST, "/api/auth/logout", None, &[])
        .await
        .assert_error(401, "unauthenticated");
}

async fn login_rotates_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.tenant("acme").await;
    let old = first.token.clone().expect("token");
    // Logging in again while carrying the old session replaces it.
    let mut second = first.clone();
    second.login("admin@acme.example", "password-acme").await;
    let new = second.token.clone().expect("token");
    assert_ne!(old, new, "a new session id on every login");
    first
        .get("/api/auth/me")
        .await
        .assert_error(401, "unauthenticated");
    second.get("/api/auth/me").await.assert_status(200);
    // A login without a prior session leaves other sessions alone.
    let mut other = app.anonymous();
    other.login("admin@acme.example", "password-acme").await;
    second.get("/api/auth/me").await.assert_status(200);
    other.get("/api/auth/me").await.assert_status(200);
}

async fn throttles_failed_logins(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.login_max_failures = 3).await;
    let _ = app.tenant("acme").await;
    let anon = app.anonymous();
    for _ in 0..3 {
        anon.post(
            "/api/auth/login",
            &json!({"email": "admin@acme.example", "password": "wrong-password"}),
        )
        .await
        .assert_error(401, "unauthenticated");
    }
    // Even the right password is refused while the email is throttled.
    let resp = anon
        .post(
            "/api/auth/login",
            &json!({"email": "admin@acme.example", "password": "password-acme"}),
        )
        .await;
    resp.assert_error(429, "rate_limited");
    let retry: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=900).contains(&retry), "{retry}");

    // Per client address: many emails from one address trip the address limit (10 x 3).
    let _ = app.tenant("globex").await;
    for i in 0..30 {
        let r = anon
            .post(
                "/api/auth/login",
                &json!({"email": format!("nobody{i}@x.example"), "password": "wrong-password"}),
            )
            .await;
        assert!(matches!(r.status.as_u16(), 401 | 429), "{}", r.text);
    }
    anon.post(
        "/api/auth/login",
        &json!({"email": "admin@globex.example", "password": "password-globex"}),
    )
    .await
    .assert_error(429, "rate_limited");
}

async fn every_private_route_needs_a_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let anon = app.anonymous();
    let garbage = Client::new(&app.base, Some("x".repeat(43)));
    let id = uuid::Uuid::now_v7();
    let mut paths = vec!["/api/auth/me".to_owned(), "/api/dashboard/stats".to_owned()];
    for r in ["contacts", "deals", "tasks", "invoices", "orders"] {
        paths.push(format!("/api/{r}"));
        paths.push(format!("/api/{r}/{id}"));
    }
    for path in &paths {
        anon.get(path).await.assert_error(401, "unauthenticated");
        garbage.get(path).await.assert_error(401, "unauthenticated");
    }
    anon.post("/api/contacts", &json!({"first_name": "Ada"}))
        .await
        .assert_error(401, "unauthenticated");
    anon.delete(&format!("/api/contacts/{id}"))
        .await
        .assert_error(401, "unauthenticated");
    let basic = anon
        .request(
            Method::GET,
            "/api/contacts",
            None,
            &[("authorization", "Basic YWRtaW46YWRtaW4=")],
        )
        .await;
    basic.assert_error(401, "unauthenticated");
}

async fn login_input_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let anon = app.anonymous();
    let missing = anon
        .post("/api/auth/login", &json!({"email": "a@b.example"}))
        .await;
    missing.assert_error(422, "validation_failed");
    assert_eq!(missing.error_fields(), vec!["password"]);
    anon.raw(
        Method::POST,
        "/api/auth/login",
        "text/plain",
        b"email=a".to_vec(),
    )
    .await
    .assert_error(415, "unsupported_media_type");
    anon.raw(
        Method::POST,
        "/api/auth/login",
        "application/json",
        b"{\"email\":".to_vec(),
    )
    .await
    .assert_error(400, "bad_request");
    anon.raw(
        Method::POST,
        "/api/auth/login",
        "application/json",
        b"[1,2]".to_vec(),
    )
    .await
    .assert_error(422, "validation_failed");
    let unknown = anon
        .post(
            "/api/auth/login",
            &json!({"email": "a@b.example", "password": "x", "remember": true}),
        )
        .await;
    unknown.assert_error(422, "validation_failed");
    assert_eq!(unknown.error_fields(), vec!["remember"]);
}

async fn writes_are_rate_limited_per_session(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.write_rate = 0.5;
        c.write_burst = 3;
    })
    .await;
    let alice = app.tenant("acme").await;
    for i in 0..3 {
        alice
            .create("contacts", json!({"first_name": format!("C{i}")}))
            .await;
    }
    let refused = alice
        .post("/api/contacts", &json!({"first_name": "One too many"}))
        .await;
    refused.assert_error(429, "rate_limited");
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    // Reads are not limited, and nothing of the refused write was stored.
    assert_eq!(alice.get("/api/contacts").await.json()["total"], 3);
    // Another session has its own allowance.
    let bob = app.tenant("globex").await;
    bob.create("contacts", json!({"first_name": "Bob's"})).await;
}
