//! Cache warming at login: a background task fills what a user sees first —
//! the tenant's dashboard stats, the first pages of contacts and tasks, open
//! deals and outstanding invoices — so the first requests after a login are
//! hits. At most one warm per tenant at a time, a tenant already warm is
//! skipped, a few warms run at once, and nothing here can delay or fail the
//! login that started it.

use std::collections::HashSet;
use std::sync::Mutex;

use strata_db::model::{Contact, Deal, Invoice, Task};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::app::AppState;
use crate::cache::live::Reader;
use crate::cache::View;
use crate::dashboard;
use crate::http::query::{list_key, parse_list, window_key};
use crate::resources::{load_list, ApiResource};

/// Warms running at once across all tenants.
const CONCURRENT_WARMS: usize = 2;

/// Counted by outcome: `warmed`, `already_warm`, `already_running`, `failed`, `stopped` (shutdown).
pub const WARMS: &str = "strata_cache_warms_total";

pub struct Warming {
    running: Mutex<HashSet<Uuid>>,
    permits: Semaphore,
}

impl Warming {
    /// Starts no more warms (shutdown): warms waiting for a turn end at
    /// once; the ones running finish their current step.
    pub fn stop(&self) {
        self.permits.close();
    }
}

impl Default for Warming {
    fn default() -> Self {
        Warming {
            running: Mutex::default(),
            permits: Semaphore::new(CONCURRENT_WARMS),
        }
    }
}

/// Removes the tenant from the running set however the task ends.
struct Running<'a>(&'a Warming, Uuid);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// Starts warming `tenant`'s cache in the background (returns at once).
pub fn start(app: &AppState, tenant: Uuid) {
    if app.cache.tiered().is_none() {
        return;
    }
    let first = app
        .warming
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(tenant);
    if !first {
        metrics::counter!(WARMS, "outcome" => "already_running").increment(1);
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        let _running = Running(&app.warming, tenant);
        let outcome = warm(&app, tenant).await;
        metrics::counter!(WARMS, "outcome" => outcome).increment(1);
    });
}

async fn warm(app: &AppState, tenant: Uuid) -> &'static str {
    let Ok(_permit) = app.warming.permits.acquire().await else {
        return "stopped"; // Shutting down.
    };
    let cache = &app.cache;
    if let Some(store) = cache.live() {
        if store.has_dashboard(tenant) {
            return "already_warm";
        }
    } else if cache
        .contains(tenant, View::Dashboard, dashboard::KEY.to_owned())
        .await
    {
        return "already_warm";
    }
    let db = &app.db;
    let mut failed = false;
    let mut outcome = |result: Result<(), crate::http::AppError>| {
        if let Err(e) = result {
            tracing::debug!(error = %e, %tenant, "cache warming step failed");
            failed = true;
        }
    };
    match cache.live() {
        Some(store) => outcome(store.dashboard(db, anonymous(tenant)).await.map(drop)),
        None => outcome(
            cache
                .warm(
                    db,
                    tenant,
                    View::Dashboard,
                    dashboard::KEY.to_owned(),
                    dashboard::load(tenant),
                )
                .await,
        ),
    }
    outcome(warm_list::<Contact>(app, tenant, "").await);
    outcome(warm_list::<Task>(app, tenant, "").await);
    outcome(warm_list::<Deal>(app, tenant, "open=true").await);
    outcome(warm_list::<Invoice>(app, tenant, "status=sent").await);
    outcome(warm_list::<Invoice>(app, tenant, "status=overdue").await);
    if failed {
        "failed"
    } else {
        "warmed"
    }
}

/// Warms the list page a request with this query string would read.
async fn warm_list<R: ApiResource>(
    app: &AppState,
    tenant: Uuid,
    query: &str,
) -> Result<(), crate::http::AppError> {
    let params = parse_list(&R::SPEC, Some(query))?;
    if let Some(store) = app.cache.live() {
        let key = window_key(&params);
        return store
            .list::<R>(&app.db, anonymous(tenant), params, key)
            .await
            .map(drop);
    }
    let key = list_key(&params);
    app.cache
        .warm(
            &app.db,
            tenant,
            View::List(R::SPEC.name),
            key,
            load_list::<R>(tenant, params),
        )
        .await
}

/// Warming reads as nobody in particular: no own writes to include.
fn anonymous(tenant: Uuid) -> Reader {
    Reader {
        tenant,
        own: 0,
        unsynced: 0,
    }
}
