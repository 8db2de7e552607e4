//! The one error type of the HTTP layer and its single mapping to the
//! contract's JSON error shape. No handler builds an error body by hand.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use strata_db::DbError;
use utoipa::ToSchema;

/// A problem with one field of a request (body field or query parameter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything a request can fail with, in the contract's terms.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    BadRequest {
        message: String,
        details: Vec<FieldError>,
    },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("too many requests; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("{message}")]
    Unavailable { message: String, retry_after: u64 },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::BadRequest {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A 400 about one query parameter, named in `details`.
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        AppError::BadRequest {
            message: format!("query parameter {param:?} {message}"),
            details: vec![FieldError::new(param, message)],
        }
    }

    /// A 422 about one body field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        AppError::Validation(vec![FieldError::new(field, message)])
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            AppError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            AppError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            AppError::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            AppError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            AppError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            AppError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            AppError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl AppError {
    /// The answer to a request stopped at its deadline, before any write of
    /// it committed: retrying it is safe.
    pub fn timed_out() -> Self {
        AppError::Unavailable {
            message: "the request took too long; retry shortly".to_owned(),
            retry_after: 1,
        }
    }

    /// [`From<DbError>`] for an error shared by several callers (a cache
    /// fill's waiters): the same answer, without owning the error.
    pub fn from_db_ref(e: &DbError) -> Self {
        match e {
            DbError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                AppError::Unavailable {
                    message: "the database is unavailable; retry shortly".to_owned(),
                    retry_after: 1,
                }
            }
            DbError::Unique(c) => DbError::Unique(c.clone()).into(),
            DbError::Cancelled => AppError::timed_out(),
            DbError::ForeignKey(c) => DbError::ForeignKey(c.clone()).into(),
            other => AppError::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unique(constraint) => AppError::Conflict(match constraint.as_str() {
                "invoices_number_unique" | "orders_number_unique" => {
                    "number is already used by another record of this tenant".to_owned()
                }
                _ => "a record with the same unique value already exists".to_owned(),
            }),
            DbError::ForeignKey(_) => {
                AppError::Conflict("the record is still referenced by other records".to_owned())
            }
            DbError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                AppError::Unavailable {
                    message: "the database is unavailable; retry shortly".to_owned(),
                    retry_after: 1,
                }
            }
            DbError::Cancelled => AppError::timed_out(),
            other => AppError::Internal(other.into()),
        }
    }
}

/// The contract's error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// What went wrong: a stable code, a human message and per-field details.
#[derive(Serialize, ToSchema)]
pub struct ErrorObject {
    /// One of the codes of the contract, e.g. `validation_failed`.
    pub code: String,
    pub message: String,
    pub details: Vec<FieldError>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if let AppError::Internal(e) = &self {
            tracing::error!(error = ?e, "internal error");
        }
        let message = match &self {
            AppError::Validation(details) if !details.is_empty() => {
                let fields: Vec<_> = details
                    .iter()
                    .map(|d| format!("{} {}", d.field, d.message))
                    .collect();
                format!("validation failed: {}", fields.join("; "))
            }
            other => other.to_string(),
        };
        let details = match self {
            AppError::BadRequest { ref details, .. } | AppError::Validation(ref details) => {
                details.clone()
            }
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: ErrorObject {
                code: code.to_owned(),
                message,
                details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match self {
            AppError::RateLimited { retry_after } | AppError::Unavailable { retry_after, .. } => {
                Some(retry_after)
            }
            _ => None,
        };
        if matches!(self, AppError::PayloadTooLarge { .. }) {
            // The unread rest of the body is still on the wire: close the
            // connection rather than let the client reuse it mid-body.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
