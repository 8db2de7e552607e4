//! The JSON body extractor: enforces the media type and the size limit, and
//! turns every way a body can be wrong into the contract's 400/413/415/422.
//! Never applies business rules; it only makes sure the body has the shape
//! of the input type.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{AppError, FieldError};
use crate::app::AppState;

/// An input type's accepted fields, so unknown and read-only ones are
/// reported by name rather than silently ignored.
pub trait InputFields {
    /// Fields the client may send.
    const FIELDS: &'static [&'static str];
    /// Fields of the object that only the server sets.
    const READ_ONLY: &'static [&'static str] = &[];
}

/// A request body parsed as `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T> FromRequest<AppState> for JsonBody<T>
where
    T: DeserializeOwned + InputFields,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !content_type.is_some_and(is_json) {
            return Err(AppError::UnsupportedMediaType);
        }
        let limit = state.config.body_limit as usize;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = req.into_body();
        if declared.is_some_and(|n| n > limit as u64) {
            discard(body, declared, limit).await;
            return Err(AppError::PayloadTooLarge { limit });
        }
        // Without a declared length (chunked), the limit is found while
        // reading; the rest is then drained like a declared one's.
        let bytes: Bytes = match Limited::new(&mut body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                discard(body, None, limit).await;
                return Err(AppError::PayloadTooLarge { limit });
            }
            Err(_) => return Err(AppError::bad_request("the request body could not be read")),
        };
        parse(&bytes).map(JsonBody)
    }
}

/// A too-large body is read and dropped, up to this many times the limit,
/// before the 413 is sent. A client still sending it (most do not wait for
/// `100 Continue`) would otherwise have its connection closed under it: the
/// unread bytes make the kernel reset it, and the client sees a broken pipe
/// instead of the 413 (reqwest did for 4 of 10 bodies of 8 MiB). nginx's
/// lingering close does the same. Larger bodies are answered at once.
const DISCARD_UP_TO: u64 = 16;
/// The most time spent reading a body only to drop it.
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops the rest of a too-large body (all of it when its
/// length was `declared`), within [`DISCARD_UP_TO`] times `limit` and
/// [`DISCARD_FOR`].
async fn discard(body: Body, declared: Option<u64>, limit: usize) {
    let most = (limit as u64).saturating_mul(DISCARD_UP_TO);
    if declared.is_some_and(|n| n > most) {
        return;
    }
    let mut body = Limited::new(body, usize::try_from(most).unwrap_or(usize::MAX));
    let _ = tokio::time::timeout(DISCARD_FOR, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// Parses a body: syntax errors are 400, a well-formed body that does not
/// fit the input type is 422 naming each offending field.
pub fn parse<T: DeserializeOwned + InputFields>(bytes: &[u8]) -> Result<T, AppError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| AppError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(AppError::invalid("body", "must be a JSON object"));
    };
    let mut errors = Vec::new();
    for key in map.keys() {
        if T::READ_ONLY.contains(&key.as_str()) {
            errors.push(FieldError::new(key, "is read-only: the server sets it"));
        } else if !T::FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(
                key,
                format!(
                    "is not a known field; known fields: {}",
                    T::FIELDS.join(", ")
                ),
            ));
        }
    }
    for (key, value) in &map {
        nul_fields(value, key.clone(), &mut errors);
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let field = e.path().to_string();
        let message = e.into_inner().to_string();
        AppError::Validation(vec![FieldError::new(field, message)])
    })
}

/// Names every string under `value` that holds a NUL character: PostgreSQL
/// text cannot store one, and both backends refuse what either refuses.
fn nul_fields(value: &Value, path: String, errors: &mut Vec<FieldError>) {
    match value {
        Value::String(s) if s.contains('\0') => {
            errors.push(FieldError::new(path, "must not contain NUL characters"));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                nul_fields(item, format!("{path}[{i}]"), errors);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                nul_fields(item, format!("{path}.{key}"), errors);
            }
        }
        _ => {}
    }
}

/// For `Option<Option<T>>` fields: absent stays `None` (through
/// `#[serde(default)]`), `null` becomes `Some(None)`, a value `Some(Some(v))`.
/// That is how PATCH tells "leave unchanged" from "clear".
pub fn nullable<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}
