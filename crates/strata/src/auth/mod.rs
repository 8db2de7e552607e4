//! Authentication: who is calling, from a session cookie or bearer token.
//! Sessions are random 256-bit tokens; only their SHA-256 is stored, so the
//! sessions table cannot be replayed. Handlers receive a [`Session`] and take
//! the tenant from it, never from the request.

pub mod password;
pub mod routes;
pub mod throttle;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;
use chrono::Utc;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use strata_db::model::Role;
use strata_db::repo::auth as repo;
use strata_db::{Db, ReadCtx};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::http::AppError;

/// The session cookie's name (the contract fixes it).
pub const COOKIE: &str = "strata_session";

/// The logged-in user, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
}

/// The caller's tenant, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub name: String,
    /// ISO 4217 code of every `*_cents` amount.
    pub currency: String,
}

/// An authenticated caller. Extracting it answers 401 when the request has
/// no live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub token_hash: [u8; 32],
    pub user: UserView,
    pub tenant: TenantView,
    /// Carries the position of the session's latest write into this
    /// request's reads, and this request's writes back out.
    pub ctx: ReadCtx,
}

impl Session {
    /// The tenant every query of this request is scoped to.
    pub fn tenant_id(&self) -> Uuid {
        self.tenant.id
    }

    /// The storage handle for this request: its reads see the session's own
    /// writes (a replica serves them only once it has replayed them).
    pub fn db(&self, app: &AppState) -> Db {
        app.db.with_ctx(&self.ctx)
    }

    /// Admits one write of this session, or answers 429 with how long to
    /// wait: one client cannot flood the primary.
    pub fn admit_write(&self, app: &AppState) -> Result<(), AppError> {
        app.writes
            .take(&self.token_hash)
            .map_err(|retry_after| AppError::RateLimited { retry_after })
    }

    /// After a write: stores its commit position with the session, so the
    /// session's next requests read their writes on any instance. A failure
    /// here is logged, not returned: the write itself has succeeded, and
    /// the worst outcome is one stale read from a lagging replica.
    pub async fn remember_write(&self, app: &AppState) {
        let Some(lsn) = self.ctx.last_write() else {
            return;
        };
        if let Err(e) = repo::record_session_write(&app.db, &self.token_hash, lsn).await {
            tracing::warn!(error = %e, "could not record the session's write position");
        }
    }
}

/// A fresh session token: 256 random bits, base64url without padding.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for a token: its SHA-256.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether a string can be a token this server issued (43 base64url
/// characters); anything else is refused before touching the database.
fn plausible_token(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The token a request carries: `Authorization: Bearer …` first, then the
/// session cookie.
pub fn request_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = auth.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

impl FromRequestParts<AppState> for Session {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, AppError> {
        let token = request_token(&parts.headers)
            .filter(|t| plausible_token(t))
            .ok_or(AppError::Unauthenticated(
                "authentication required: log in first",
            ))?;
        let hash = token_hash(token);
        let now = Utc::now();
        let record = repo::session(&app.db, &hash, now)
            .await?
            .ok_or(AppError::Unauthenticated(
                "the session is expired or revoked: log in again",
            ))?;
        // Sliding expiry, written at most once a minute per session rather
        // than on every request.
        let ttl = chrono::Duration::from_std(app.config.session_ttl())
            .unwrap_or(chrono::Duration::days(1));
        if record.expires_at - now < ttl - chrono::Duration::minutes(1) {
            if let Err(e) = repo::extend_session(&app.db, &hash, now + ttl).await {
                tracing::warn!(error = %e, "could not extend a session; it keeps its current expiry");
            }
        }
        Ok(Session {
            token_hash: hash,
            ctx: ReadCtx::new(record.last_write()),
            user: UserView {
                id: record.user_id,
                email: record.email,
                name: record.name,
                role: record.role,
            },
            tenant: TenantView {
                id: record.tenant_id,
                name: record.tenant_name,
                currency: record.currency,
            },
        })
    }
}
