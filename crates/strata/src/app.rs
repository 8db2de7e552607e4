//! The application: shared state, the router with its middleware, and the
//! server loop. Everything a request needs hangs off [`AppState`].

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use strata_db::Db;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::auth::store::SessionStore;
use crate::auth::throttle::{Throttle, WriteLimiter};
use crate::cache::ApiCache;
use crate::config::Config;
use crate::warm::Warming;
use crate::{auth, dashboard, http, openapi, ops, resources};

/// What every handler shares.
pub struct AppInner {
    pub config: Config,
    pub db: Db,
    /// Every read of tenant data and every session lookup goes through it.
    pub cache: ApiCache,
    pub sessions: SessionStore,
    pub decoded_sessions: auth::DecodedSessions,
    pub warming: Warming,
    pub throttle: Throttle,
    pub writes: WriteLimiter,
    /// Set once shutdown begins: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
    /// A hash that login verifies against when the email is unknown, so
    /// unknown and known emails take the same time.
    pub dummy_hash: String,
    /// The threads logins verify passwords on, behind a bounded queue.
    pub passwords: auth::password::Verifier,
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
        let writes = WriteLimiter::new(config.write_rate, f64::from(config.write_burst));
        // Before the first request: metrics recorded earlier would be lost.
        if ops::metrics::install().is_none() {
            tracing::warn!(
                "another metrics recorder is installed; /metrics will not serve Strata's figures"
            );
        }
        let cache = ApiCache::new(&config).await?;
        let sessions = SessionStore::new(db.clone(), config.redis_url.as_deref())?;
        tracing::info!(
            mode = ?cache.mode(),
            redis = config.redis_url.is_some(),
            l1_mb = cache.l1_max_bytes() >> 20,
            sessions = if sessions.is_redis() { "redis" } else { "database" },
            "cache configured"
        );
        Ok(AppState(Arc::new(AppInner {
            cache,
            sessions,
            decoded_sessions: auth::DecodedSessions::new(DECODED_SESSIONS),
            warming: Warming::default(),
            config,
            db,
            throttle,
            draining: AtomicBool::new(false),
            writes,
            dummy_hash,
            passwords: auth::password::Verifier::start(),
        })))
    }
}

/// Sessions kept decoded (a few hundred bytes each): more than the
/// sessions one instance serves at a time.
const DECODED_SESSIONS: usize = 10_000;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A random (v4) UUID for each request without an `x-request-id`, written
/// straight into its header value (tower-http's `MakeRequestUuid` formats it
/// and parses it back, on every request).
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let mut buf = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

/// Every route, with the metrics middleware inside the router, so each
/// request is counted under the route pattern that matched it. The rest of
/// the middleware wraps it in [`serve`].
fn router(state: AppState) -> Router {
    Router::new()
        .merge(auth::routes::routes())
        .merge(resources::all_routes())
        .merge(dashboard::routes())
        .merge(ops::routes())
        .merge(openapi::routes())
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(ops::metrics::TrackLayer(state.clone()))
        .with_state(state)
}

/// hyper's request body as axum's, boxed once here (the router would box it
/// otherwise).
fn axum_body<B>(request: Request<B>) -> Request<Body>
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    request.map(Body::new)
}

fn request_span(request: &Request<Body>) -> Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok());
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = id.unwrap_or(""))
}

/// Deletes expired sessions now and then, so the table does not grow
/// forever. Stops when `stop` fires.
fn spawn_session_purge(db: Db, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return,
            }
            match strata_db::repo::auth::purge_expired_sessions(&db, chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "purged expired sessions"),
                Err(e) => tracing::warn!(error = %e, "could not purge expired sessions"),
            }
        }
    });
}

/// After the listener closes, how long connections it accepted last get to
/// send their request before idle connections are closed. Those connections
/// were opened by a proxy that is writing its request right now: closing
/// them unread would fail it.
const LINGER: Duration = Duration::from_secs(1);

/// The HTTP/1 and HTTP/2 connection settings: a client gets
/// `header_timeout` to send a request's headers (slow senders cannot hold a
/// connection), which is also how long an idle keep-alive connection stays
/// open.
fn connection_builder(header_timeout: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's own limit on header fields stays at its default (100),
        // above the router's ([`http::MAX_HEADERS`], answered in the
        // contract's shape): beyond it hyper answers a bare 431. Setting it,
        // even to 100, costs every request two loops that fill its header
        // arrays (about a tenth of a cached GET's instructions).
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves the API on `listener` until `shutdown` completes, then shuts down
/// in order: `/readyz` answers 503 at once (so load balancers stop sending)
/// and every response closes its connection (so keep-alive connections
/// retire after an answer, never while a proxy reuses them); after
/// `shutdown_grace` the listener closes, serving what it had queued
/// (see `listen`); after a short linger idle connections close; in-flight
/// requests get up to `drain_timeout` from the close to finish (idle
/// keep-alive connections must not hold the process: the deadline is hard);
/// background tasks stop, pools close.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let db = state.db.clone();
    let grace = state.config.shutdown_grace();
    let drain = state.config.drain_timeout();
    let builder = connection_builder(state.config.header_timeout());
    let max_connections = state.config.max_connections as usize;
    let draining = state.clone();
    let warming = state.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    spawn_session_purge(db.clone(), stop_rx);
    let (close_listener, close_rx) = tokio::sync::watch::channel(false);
    let mut listener = crate::listen::Draining::new(listener, close_rx)?;
    let linger = LINGER.min(drain);
    let stop_accepting = async move {
        shutdown.await;
        draining.draining.store(true, Ordering::Release);
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "shutting down: /readyz now answers 503 and responses close their connections"
        );
        tokio::time::sleep(grace).await;
        tracing::info!(
            drain_secs = drain.as_secs_f64(),
            "closing the listener; draining in-flight requests"
        );
        let _ = close_listener.send(true);
        tokio::time::sleep(linger).await;
    };
    tokio::pin!(stop_accepting);
    // The middleware wraps the router once, as plain tower layers, instead of
    // being added with `Router::layer`, which wraps every route in it and
    // boxes each layer again: a request then cloned (and allocated) a boxed
    // service per layer. Here a request clones the stack by value; only the
    // route it matches is boxed.
    let timeout = state.config.request_timeout();
    let (writes, mut writes_running) = tokio::sync::mpsc::channel(1);
    let app = ServiceBuilder::new()
        .map_request(axum_body)
        .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
        .layer(
            TraceLayer::new_for_http().make_span_with(request_span as fn(&Request<Body>) -> Span),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(http::panic_response))
        .layer(http::GuardLayer {
            limit: timeout,
            writes,
        })
        .service(router(state));
    let connections = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        // At the limit, connections wait in the kernel's queue.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut stop_accepting => break,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop_accepting => break,
        };
        // Responses are written whole; waiting to coalesce small segments
        // only adds latency.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        // The peer's address is read only by login (a POST: its throttle);
        // reads, most requests by far, skip the insert (and the growth of
        // their extensions map it would cost).
        let service = app.clone().map_request(move |mut request: Request<_>| {
            if !request.method().is_safe() {
                request.extensions_mut().insert(ConnectInfo(peer));
            }
            request
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Idle connections close now; requests in flight get what is left of
    // the drain time.
    let deadline = tokio::time::Instant::now() + drain.saturating_sub(linger);
    let drained = tokio::time::timeout_at(deadline, connections.shutdown())
        .await
        .is_ok();
    if !drained {
        tracing::warn!("drain deadline reached; closing the remaining connections");
    }
    // So do writes whose clients hung up after they began to commit: they
    // run on, detached, to their end (their caches invalidated).
    drop(app);
    if drained
        && tokio::time::timeout_at(deadline, writes_running.recv())
            .await
            .is_err()
    {
        tracing::warn!("drain deadline reached with writes still running");
    }
    let _ = stop_tx.send(true);
    warming.warming.stop();
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}
