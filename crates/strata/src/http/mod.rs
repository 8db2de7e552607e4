//! HTTP plumbing shared by every route: the error type and its mapping,
//! body and query extractors, entity tags, and the middleware stack.
//! Never holds a route's business logic.

pub mod body;
pub mod error;
pub mod etag;
pub mod query;

use std::convert::Infallible;
use std::future::Ready;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Either, FutureExt, Map};
use strata_db::CommitGate;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::error::Elapsed;
use tokio::time::Timeout;
use tower::{Layer, Service};
use tracing::Instrument;
use uuid::Uuid;

pub use body::JsonBody;
pub use error::{AppError, FieldError};

/// The id in a `/{resource}/{id}` path, which must be a UUID (400 otherwise).
#[derive(Debug, Clone, Copy)]
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::bad_request("the path has no valid id"))?;
        parse_uuid(&raw).map(Id)
    }
}

pub fn parse_uuid(raw: &str) -> Result<Uuid, AppError> {
    Uuid::try_parse(raw).map_err(|_| AppError::BadRequest {
        message: format!("{raw:?} is not a valid id (a UUID is expected)"),
        details: vec![FieldError::new("id", "is not a valid UUID")],
    })
}

/// Answers 404 in the contract's shape for unknown routes.
pub async fn not_found() -> AppError {
    AppError::NotFound
}

/// Answers 405 in the contract's shape for a known path with another method.
pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// Most header fields a request may carry: far more than any client of the
/// API sends, and below hyper's own limit (100, a bare 431), so that a
/// request between the two gets the contract's error shape.
pub const MAX_HEADERS: usize = 64;
/// Most bytes a request's header fields may hold, names and values.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Every request's first stop: refuses more or larger header fields than
/// any client of the API sends (431 in the contract's shape) before
/// anything reads them, and bounds the handling time of the rest: past
/// `limit` the client gets a 503 it can retry rather than a connection that
/// hangs.
///
/// A request that may write (any method but GET, HEAD, OPTIONS and TRACE)
/// runs as a task of its own ([`Writing`]) behind a [`CommitGate`] that its
/// commits pass (the [`Session`](crate::auth::Session) puts it in the
/// request's database context). Stopped before it commits, by the deadline
/// or by a client that hangs up, it is cancelled and rolled back: the 503
/// is true, and retrying is safe. Once a commit has been sent, it runs to
/// its end wherever its client is (the caches it changed are invalidated),
/// and the deadline waits for it.
///
/// A tower layer of its own, not an axum `from_fn`, which costs a boxed
/// service and a boxed future per request; reads box nothing.
#[derive(Clone, Debug)]
pub struct GuardLayer {
    pub limit: Duration,
    /// Every write task holds a clone until it ends, detached or not: the
    /// receiver's `recv` returns `None` once all have ended and every
    /// clone of the layer's sender is dropped (at shutdown).
    pub writes: mpsc::Sender<Infallible>,
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            limit: self.limit,
            writes: self.writes.clone(),
        }
    }
}

/// The service of [`GuardLayer`].
#[derive(Clone, Debug)]
pub struct Guard<S> {
    inner: S,
    limit: Duration,
    writes: mpsc::Sender<Infallible>,
}

type Answer = Result<Response, Infallible>;
type Read<F> = Map<Timeout<F>, fn(Result<Answer, Elapsed>) -> Answer>;

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Answer>, Either<Read<S::Future>, BoxFuture<'static, Answer>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if let Some(refusal) = oversized(request.headers()) {
            return Either::Left(std::future::ready(Ok(refusal.into_response())));
        }
        if request.method().is_safe() {
            let answer: fn(Result<Answer, Elapsed>) -> Answer =
                |outcome| outcome.unwrap_or_else(|_| Ok(AppError::timed_out().into_response()));
            let read = tokio::time::timeout(self.limit, self.inner.call(request)).map(answer);
            return Either::Right(Either::Left(read));
        }
        let gate = CommitGate::default();
        request.extensions_mut().insert(gate.clone());
        let work = self.inner.call(request);
        let running = self.writes.clone();
        let task = async move {
            let _running = running;
            work.await
        };
        let writing = Writing {
            task: tokio::spawn(task.in_current_span()),
            gate,
            ended: false,
        };
        Either::Right(Either::Right(Box::pin(writing.finish(self.limit))))
    }
}

/// A request that may write, running as a task of its own; see [`Guard`].
struct Writing {
    task: JoinHandle<Answer>,
    gate: CommitGate,
    /// Set once the task's answer has been taken.
    ended: bool,
}

impl Writing {
    async fn finish(mut self, limit: Duration) -> Answer {
        let joined = match tokio::time::timeout(limit, &mut self.task).await {
            Ok(joined) => joined,
            // Cancelled before any commit (dropping `self` stops the task).
            Err(_) if self.gate.cancel() => return Ok(AppError::timed_out().into_response()),
            // Its write is committing: the answer must say how that ended.
            Err(_) => match tokio::time::timeout(limit, &mut self.task).await {
                Ok(joined) => joined,
                Err(_) => {
                    tracing::warn!("a write still running after twice the request timeout");
                    return Ok(AppError::Unavailable {
                        message: "the request took too long, and its write may have been applied: read the data before retrying".to_owned(),
                        retry_after: 1,
                    }
                    .into_response());
                }
            },
        };
        self.ended = true;
        match joined {
            Ok(answer) => answer,
            // The panic handler outside answers it.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(AppError::timed_out().into_response()),
        }
    }
}

impl Drop for Writing {
    /// The request ended without its answer (deadline, client gone): the
    /// work stops unless a commit of it was sent, in which case it goes on,
    /// detached, to its end.
    fn drop(&mut self) {
        if !self.ended && self.gate.cancel() {
            self.task.abort();
        }
    }
}

/// The 431 for header fields beyond [`MAX_HEADERS`] or [`MAX_HEADER_BYTES`].
fn oversized(headers: &HeaderMap) -> Option<AppError> {
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES).then(|| {
        AppError::HeadersTooLarge(format!(
            "the request has {} header fields of {bytes} bytes; at most {MAX_HEADERS} fields of {MAX_HEADER_BYTES} bytes are accepted",
            headers.len()
        ))
    })
}

/// A panic in a handler becomes the contract's 500 (and a log line), never a
/// dropped connection.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    AppError::Internal(anyhow::anyhow!("handler panicked: {detail}")).into_response()
}
