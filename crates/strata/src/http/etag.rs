//! JSON responses with an `ETag` that is the hash of their bytes, and the
//! conditional request headers (`If-None-Match`, `If-Match`) checked against it.
//! The same bytes give the same tag on every instance.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};

/// The strong entity tag of a body: 128 bits of its SHA-256, quoted.
pub fn etag(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!(
        "\"{}\"",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
    )
}

/// Whether a list-valued conditional header (`If-None-Match`, `If-Match`)
/// names this tag. Weak comparison: `W/` prefixes are ignored.
pub fn matches(headers: &HeaderMap, name: header::HeaderName, tag: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == tag
        })
}

/// A JSON response of these bytes with its `ETag`, or a bodiless 304 when the
/// client already holds them (`If-None-Match`).
pub fn json_with_etag(status: StatusCode, bytes: Vec<u8>, request: &HeaderMap) -> Response {
    let tag = etag(&bytes);
    let not_modified = status == StatusCode::OK && matches(request, header::IF_NONE_MATCH, &tag);
    let mut response = if not_modified {
        Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
    } else {
        Response::builder()
            .status(status)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(Body::from(bytes))
    }
    .unwrap_or_default();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    // Tenant data: never in a shared cache, and a browser revalidates
    // (cheaply, with If-None-Match) before reusing its copy.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    response
}
