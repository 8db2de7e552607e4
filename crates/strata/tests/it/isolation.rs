//! Tenant isolation: another tenant's ids answer 404 on every route and its
//! rows never appear in lists, totals or the dashboard.

use serde_json::json;

use crate::both;
use crate::support::{Backend, TestApp};

both!(other_tenants_rows_are_invisible);

async fn other_tenants_rows_are_invisible(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.tenant("acme").await;
    let bob = app.tenant("globex").await;

    let contact = alice
        .create_id(
            "contacts",
            json!({"first_name": "Secret", "company": "Acme", "tags": ["shared"]}),
        )
        .await;
    let mut ids = vec![("contacts", contact.clone())];
    ids.push(("deals", alice.create_id("deals", json!({"title": "Secret", "stage": "won", "amount_cents": 500, "contact_id": contact})).await));
    ids.push((
        "tasks",
        alice
            .create_id(
                "tasks",
                json!({"title": "Secret", "due_at": "2020-01-01T00:00:00Z"}),
            )
            .await,
    ));
    ids.push((
        "invoices",
        alice
            .create_id("invoices", json!({"number": "S-1", "contact_id": contact, "status": "sent", "lines": [{"description": "x", "quantity": 1, "unit_price_cents": 700}]}))
            .await,
    ));
    ids.push(("orders", alice.create_id("orders", json!({"number": "S-1", "contact_id": contact, "lines": [{"description": "x", "quantity": 1, "unit_price_cents": 900}]})).await));
    let before = alice.get("/api/dashboard/stats").await.json();

    for (resource, id) in &ids {
        let path = format!("/api/{resource}/{id}");
        bob.get(&path).await.assert_error(404, "not_found");
        bob.patch(&path, &json!({}))
            .await
            .assert_error(404, "not_found");
        bob.delete(&path).await.assert_error(404, "not_found");
        let list = bob
            .get(&format!("/api/{resource}?per_page=100"))
            .await
            .json();
        assert_eq!(list["total"], 0, "{resource}: {list}");
        assert_eq!(list["items"], json!([]));
        // The rows are untouched and still the owner's.
        alice.get(&path).await.assert_status(200);
    }
    for filter in [
        format!("/api/deals?contact_id={contact}"),
        format!("/api/tasks?contact_id={contact}"),
        format!("/api/invoices?contact_id={contact}"),
        format!("/api/orders?contact_id={contact}"),
        "/api/contacts?tag=shared".to_owned(),
        "/api/contacts?company=acme".to_owned(),
        "/api/contacts?q=secret".to_owned(),
        "/api/invoices?q=S-1".to_owned(),
        "/api/tasks?overdue=true".to_owned(),
    ] {
        assert_eq!(bob.get(&filter).await.json()["total"], 0, "{filter}");
    }
    // Bob's own rows with the same values stay his.
    bob.create(
        "contacts",
        json!({"first_name": "Secret", "tags": ["shared"]}),
    )
    .await;
    assert_eq!(bob.get("/api/contacts?tag=shared").await.json()["total"], 1);
    assert_eq!(
        alice.get("/api/contacts?tag=shared").await.json()["total"],
        1
    );

    let stats = bob.get("/api/dashboard/stats").await.json();
    assert_eq!(
        stats,
        json!({"contacts": {"total": 1}, "deals": {"open": 0, "pipeline_cents": 0, "won_this_month": 0, "won_cents_this_month": 0},
               "tasks": {"pending": 0, "overdue": 0}, "invoices": {"outstanding": 0, "outstanding_cents": 0, "overdue": 0},
               "orders": {"this_month": 0, "revenue_cents_this_month": 0}})
    );
    assert_eq!(
        alice.get("/api/dashboard/stats").await.json(),
        before,
        "bob's writes do not move alice's figures"
    );
    assert_eq!(before["deals"]["won_cents_this_month"], 500);
    assert_eq!(before["invoices"]["outstanding_cents"], 700);
    assert_eq!(before["orders"]["revenue_cents_this_month"], 900);
    assert_eq!(before["tasks"]["overdue"], 1);
}
