//! Operator-facing routes: liveness and readiness (public), Prometheus
//! metrics and the cache's routes (operator token). Never return tenant data.

pub mod cache;
pub mod metrics;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::http::AppError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .route("/api/admin/cache/metrics", get(cache::metrics))
        .route("/api/admin/cache/health", get(cache::health))
        .route("/api/admin/cache/reset", axum::routing::post(cache::reset))
}

/// The process is up and serving HTTP.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The primary answers and every migration is applied.
async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, AppError> {
    if app.draining.load(std::sync::atomic::Ordering::Acquire) {
        return Err(AppError::Unavailable {
            message: "shutting down".to_owned(),
            retry_after: 1,
        });
    }
    let unavailable = |message: &str| AppError::Unavailable {
        message: message.to_owned(),
        retry_after: 1,
    };
    match app.db.ready().await {
        Ok(true) => Ok(Json(json!({"status": "ready"}))),
        Ok(false) => Err(unavailable("database migrations are not applied")),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(unavailable("the primary database is unreachable"))
        }
    }
}
