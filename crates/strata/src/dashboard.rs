//! `GET /api/dashboard/stats`: the tenant's headline figures.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use strata_db::repo::stats;

use crate::app::AppState;
use crate::auth::Session;
use crate::http::etag::json_with_etag;
use crate::http::AppError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/dashboard/stats", get(dashboard))
}

async fn dashboard(
    State(app): State<AppState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let figures = stats::dashboard(&session.db(&app), session.tenant_id(), Utc::now()).await?;
    let bytes = serde_json::to_vec(&figures).map_err(|e| AppError::Internal(e.into()))?;
    Ok(json_with_etag(StatusCode::OK, bytes, &headers))
}
