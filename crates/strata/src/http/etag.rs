//! JSON responses with an `ETag` that is the hash of their bytes, and the
//! conditional request headers (`If-None-Match`, `If-Match`) checked against it.
//! The same bytes give the same tag on every instance.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};
use tiered_cache::Bytes;

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
    listed(headers.get_all(name).iter(), tag)
}

fn listed<'a>(values: impl Iterator<Item = &'a HeaderValue>, tag: &str) -> bool {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == tag
        })
}

/// The length of [`etag`]'s output: a quote, 22 base64url characters, a quote.
const TAG_LEN: usize = 24;

/// A JSON body with its entity tag in front, in one buffer: what the cache
/// stores, so a hit costs no hashing and no copy (the tag and the body are
/// slices of the cached bytes).
#[derive(Debug, Clone)]
pub struct Tagged(Bytes);

impl Tagged {
    pub fn new(json: Vec<u8>) -> Tagged {
        let tag = etag(&json);
        debug_assert_eq!(tag.len(), TAG_LEN);
        let mut buf = Vec::with_capacity(tag.len() + json.len());
        buf.extend_from_slice(tag.as_bytes());
        buf.extend_from_slice(&json);
        Tagged(Bytes::from(buf))
    }

    /// A cached value; the empty value stands for "no such object".
    pub fn from_cached(bytes: Bytes) -> Option<Tagged> {
        (bytes.len() >= TAG_LEN).then_some(Tagged(bytes))
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Bytes held: the tag and the body.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The quoted entity tag.
    pub fn tag(&self) -> &str {
        std::str::from_utf8(&self.0[..TAG_LEN]).unwrap_or("")
    }

    pub fn body(&self) -> Bytes {
        self.0.slice(TAG_LEN..)
    }
}

/// A request's `If-None-Match` values, extracted without copying its other
/// headers (the `HeaderMap` extractor clones them all, on every read).
#[derive(Debug, Default)]
pub struct IfNoneMatch(Vec<HeaderValue>);

impl<S: Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(IfNoneMatch(
            parts
                .headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .cloned()
                .collect(),
        ))
    }
}

/// A JSON response of these bytes with its `ETag` (the answer to a write).
pub fn json_with_etag(status: StatusCode, bytes: Vec<u8>) -> Response {
    respond(status, &Tagged::new(bytes), &IfNoneMatch::default())
}

/// A JSON response of a body that carries its tag, with its `ETag`, or a
/// bodiless 304 when the client already holds it (`If-None-Match`).
pub fn respond(status: StatusCode, tagged: &Tagged, held: &IfNoneMatch) -> Response {
    let not_modified = status == StatusCode::OK && listed(held.0.iter(), tagged.tag());
    let mut response = if not_modified {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Body::from(tagged.body()));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    };
    let headers = response.headers_mut();
    // The tag's bytes are shared with the body's, not copied.
    if let Ok(value) = HeaderValue::from_maybe_shared(tagged.0.slice(..TAG_LEN)) {
        headers.insert(header::ETAG, value);
    }
    // Tenant data: never in a shared cache, and a browser revalidates
    // (cheaply, with If-None-Match) before reusing its copy.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    response
}
