//! Prometheus metrics: the process-wide recorder every layer reports to
//! (HTTP here, database routing in strata-db, the cache in tiered-cache),
//! the HTTP middleware that times each request by route, and `GET /metrics`
//! behind the operator token. Labels never carry a tenant.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower::{Layer, Service};

use crate::app::AppState;
use crate::http::AppError;

/// Requests answered, by `method`, `route` (the route pattern, never the
/// raw path) and `status`.
pub const HTTP_REQUESTS: &str = "strata_http_requests_total";
/// Time to answer, by `method` and `route`.
pub const HTTP_DURATION: &str = "strata_http_request_duration_seconds";

/// Latency buckets: from a cached hit (~100 µs) to the request timeout.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder once per process and returns its handle
/// (`None` when another recorder was installed first, e.g. by an embedding
/// program; metrics then go there and `/metrics` says so).
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".to_owned()), BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            // Histograms are folded in by upkeep; render() alone would let
            // them grow between scrapes.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}

/// Counts and times every request under its route pattern; while the
/// process drains, also marks every response `Connection: close`, so each
/// keep-alive connection (a proxy's upstream pool) closes right after a
/// complete answer. Closing one idle instead races the proxy reusing it: the
/// request it just sent is lost, and a proxy retries no POST it has sent.
///
/// Inside the router (which names the route), as a tower layer of its own:
/// an axum `from_fn` costs a boxed service and a boxed future per request.
#[derive(Clone)]
pub struct TrackLayer(pub AppState);

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            app: self.0.clone(),
        }
    }
}

/// The service of [`TrackLayer`].
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    app: AppState,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Tracked<S::Future> {
        let started = Instant::now();
        let method = method_label(request.method());
        let route = request.extensions().get::<MatchedPath>().cloned();
        Tracked {
            inner: self.inner.call(request),
            started,
            method,
            route,
            app: self.app.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request in [`Track`]: its answer, then counted.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: &'static str,
        route: Option<MatchedPath>,
        app: AppState,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        if this.app.draining.load(std::sync::atomic::Ordering::Acquire) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let (requests, duration) = handles(this.method, route, response.status().as_u16());
        requests.increment(1);
        duration.record(this.started.elapsed().as_secs_f64());
        Poll::Ready(Ok(response))
    }
}

/// A request's counter and histogram, by method, route and status.
type Handles = (metrics::Counter, metrics::Histogram);
type HandlesKey = (&'static str, Box<str>, u16);

/// A [`HandlesKey`] borrowing its route, to look one up without allocating.
/// Hashes as the key does (a tuple hashes its fields in order).
#[derive(Hash)]
struct HandlesLookup<'a>(&'static str, &'a str, u16);

impl quick_cache::Equivalent<HandlesKey> for HandlesLookup<'_> {
    fn equivalent(&self, key: &HandlesKey) -> bool {
        self.0 == key.0 && self.1 == &*key.1 && self.2 == key.2
    }
}

/// The handles of `method`, `route` and `status`, from the registry the
/// first time and from a small cache after: building two label sets and
/// looking both up in the registry was a tenth of a cached read's
/// instructions. Label values are bounded (static methods, route patterns,
/// status codes), and an evicted entry is only looked up again.
fn handles(method: &'static str, route: &str, status: u16) -> Handles {
    static HANDLES: OnceLock<quick_cache::sync::Cache<HandlesKey, Handles>> = OnceLock::new();
    let cache = HANDLES.get_or_init(|| quick_cache::sync::Cache::new(4096));
    if let Some(found) = cache.get(&HandlesLookup(method, route, status)) {
        return found;
    }
    let found = (
        metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.to_owned(), "status" => status.to_string()),
        metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route.to_owned()),
    );
    cache.insert((method, route.into(), status), found.clone());
    found
}

/// The `method` label: the standard methods by name, anything else as
/// `other` (a client cannot mint label values).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Whether the request carries the operator token. Without a configured
/// token the operator routes do not exist (404); with one, a missing or
/// wrong token is 401. Compared in constant time.
pub fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(expected) = app.config.admin_token.as_deref().filter(|t| !t.is_empty()) else {
        return Err(AppError::NotFound);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or("");
    let same_length = given.len() == expected.len();
    let differences = given
        .bytes()
        .zip(expected.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if same_length && differences == 0 {
        Ok(())
    } else {
        Err(AppError::Unauthenticated(
            "the operator token is missing or wrong",
        ))
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    authorize(&app, &headers)?;
    let Some(handle) = install() else {
        return Err(AppError::Unavailable {
            message: "another metrics recorder is installed in this process".to_owned(),
            retry_after: 60,
        });
    };
    metrics::gauge!(crate::auth::password::WAITING).set(app.passwords.waiting() as f64);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response())
}
