//! `GET /api/dashboard/stats`: the tenant's headline figures, through the cache.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use futures_util::future::BoxFuture;
use strata_db::repo::stats;
use strata_db::Db;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Session;
use crate::cache::{Loaded, View};
use crate::http::etag::{respond, IfNoneMatch};
use crate::http::AppError;

/// The dashboard's only cache key within its namespace.
pub const KEY: &str = "stats";

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/dashboard/stats", get(dashboard))
}

/// Reads `tenant`'s stats as response JSON (what the cache fills).
pub fn load(tenant: Uuid) -> impl FnOnce(Db) -> BoxFuture<'static, Loaded> + Send + 'static {
    move |db: Db| {
        Box::pin(async move {
            let figures = stats::dashboard(&db, tenant, Utc::now()).await?;
            Ok(Some(serde_json::to_vec(&figures)?.into()))
        })
    }
}

async fn dashboard(
    State(app): State<AppState>,
    session: Session,
    held: IfNoneMatch,
) -> Result<Response, AppError> {
    if let Some(store) = app.cache.live() {
        let reader = session.reader(View::Dashboard);
        let stats = store.dashboard(&session.db(&app), reader).await?;
        return Ok(respond(StatusCode::OK, &stats, &held));
    }
    let tenant = session.tenant_id();
    let stats = session
        .read(&app, View::Dashboard, KEY.to_owned(), load(tenant))
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("the stats are never absent")))?;
    Ok(respond(StatusCode::OK, &stats, &held))
}
