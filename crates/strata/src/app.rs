//! The application: shared state, the router with its middleware, and the
//! server loop. Everything a request needs hangs off [`AppState`].

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, Request};
use axum::Router;
use strata_db::Db;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::auth::throttle::Throttle;
use crate::config::Config;
use crate::{auth, dashboard, http, openapi, ops, resources};

/// What every handler shares.
pub struct AppInner {
    pub config: Config,
    pub db: Db,
    pub throttle: Throttle,
    /// A hash that login verifies against when the email is unknown, so
    /// unknown and known emails take the same time.
    pub dummy_hash: String,
}

/// Cheap-to-clone handle to [`AppInner`].
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub async fn new(config: Config, db: Db) -> anyhow::Result<Self> {
        let dummy_hash = auth::password::hash_blocking(auth::new_token()).await?;
        let throttle = Throttle::new(config.login_window());
        // Before the first request: metrics recorded earlier would be lost.
        if ops::metrics::install().is_none() {
            tracing::warn!(
                "another metrics recorder is installed; /metrics will not serve Strata's figures"
            );
        }
        Ok(AppState(Arc::new(AppInner {
            config,
            db,
            throttle,
            dummy_hash,
        })))
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface with its middleware.
pub fn router(state: AppState) -> Router {
    let timeout = state.config.request_timeout();
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok());
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = id.unwrap_or(""))
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(http::panic_response))
        .layer(axum::middleware::from_fn(move |req, next| http::timeout(timeout, req, next)));
    Router::new()
        .merge(auth::routes::routes())
        .merge(resources::all_routes())
        .merge(dashboard::routes())
        .merge(ops::routes())
        .merge(openapi::routes())
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        // Inside the router, so each request is counted under the route
        // pattern that matched it.
        .layer(axum::middleware::from_fn(ops::metrics::track))
        .with_state(state)
        .layer(layers)
}

/// Deletes expired sessions now and then, so the table does not grow forever.
fn spawn_session_purge(db: Db) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(600));
        loop {
            every.tick().await;
            match strata_db::repo::auth::purge_expired_sessions(&db, chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "purged expired sessions"),
                Err(e) => tracing::warn!(error = %e, "could not purge expired sessions"),
            }
        }
    });
}

/// Serves the API on `listener` until `shutdown` completes, then lets
/// in-flight requests finish and closes the pools.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let db = state.db.clone();
    spawn_session_purge(db.clone());
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    db.close().await;
    Ok(())
}
