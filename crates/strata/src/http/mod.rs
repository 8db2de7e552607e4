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
use futures_util::future::{Either, FutureExt, Map};
use tokio::time::error::Elapsed;
use tokio::time::Timeout;
use tower::{Layer, Service};
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

/// Most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;
/// Most bytes a request's header fields may hold, names and values.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Every request's first stop: refuses more or larger header fields than
/// any client of the API sends (431 in the contract's shape) before
/// anything reads them, and bounds the handling time of the rest: past
/// `limit` the client gets a 503 it can retry rather than a connection that
/// hangs.
///
/// A tower layer of its own, not an axum `from_fn`, which costs a boxed
/// service and a boxed future per request.
#[derive(Clone, Copy, Debug)]
pub struct GuardLayer {
    pub limit: Duration,
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`GuardLayer`].
#[derive(Clone, Debug)]
pub struct Guard<S> {
    inner: S,
    limit: Duration,
}

type Answer = Result<Response, Infallible>;

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<Ready<Answer>, Map<Timeout<S::Future>, fn(Result<Answer, Elapsed>) -> Answer>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let Some(refusal) = oversized(request.headers()) {
            return Either::Left(std::future::ready(Ok(refusal.into_response())));
        }
        let answer: fn(Result<Answer, Elapsed>) -> Answer = |outcome| {
            outcome.unwrap_or_else(|_| {
                Ok(AppError::Unavailable {
                    message: "the request took too long; retry shortly".to_owned(),
                    retry_after: 1,
                }
                .into_response())
            })
        };
        Either::Right(tokio::time::timeout(self.limit, self.inner.call(request)).map(answer))
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
