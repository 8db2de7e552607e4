//! `POST /api/auth/login`, `POST /api/auth/logout`, `GET /api/auth/me`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use strata_db::repo::auth as repo;
use utoipa::ToSchema;

use super::store::SessionData;
use super::{new_token, request_token, token_hash, Session, TenantView, UserView, COOKIE};
use crate::app::AppState;
use crate::http::body::InputFields;
use crate::http::{AppError, FieldError, JsonBody};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
}

/// Credentials for `POST /api/auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    // Read as `Option` so a missing field is a 422 naming it, not a
    // generic parse error; documented as required.
    #[schema(value_type = String, min_length = 1, required = true)]
    pub email: Option<String>,
    #[schema(value_type = String, min_length = 1, required = true)]
    pub password: Option<String>,
}

impl InputFields for LoginRequest {
    const FIELDS: &'static [&'static str] = &["email", "password"];
}

/// A new session: the token (also set as the cookie), the user and tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`, or rely on the cookie.
    pub token: String,
    pub user: UserView,
    pub tenant: TenantView,
}

/// Who the session belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub user: UserView,
    pub tenant: TenantView,
}

/// The client's address: the peer, or the last `X-Forwarded-For` hop when
/// the server is configured to trust its proxy.
fn client_ip(app: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if app.config.trust_forwarded_for {
        // Only the hop our proxy appended (the last) is trustworthy; earlier
        // entries are whatever the client sent.
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|hop| hop.trim().parse::<IpAddr>().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    peer.ip()
}

fn session_cookie(app: &AppState, token: &str, max_age: u64) -> HeaderValue {
    let secure = if app.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie =
        format!("{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{secure}");
    // A token is base64url, so the header value is always valid.
    HeaderValue::from_str(&cookie)
        .unwrap_or_else(|_| HeaderValue::from_static("strata_session=; Max-Age=0"))
}

async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<Response, AppError> {
    let mut missing = Vec::new();
    let email = body.email.unwrap_or_default();
    let pass = body.password.unwrap_or_default();
    if email.trim().is_empty() {
        missing.push(FieldError::new("email", "is required"));
    }
    if pass.is_empty() {
        missing.push(FieldError::new("password", "is required"));
    }
    if !missing.is_empty() {
        return Err(AppError::Validation(missing));
    }
    let email = email.trim().to_lowercase();
    let limit = app.config.login_max_failures;
    let email_key = format!("email:{email}");
    let ip_key = format!("ip:{}", client_ip(&app, peer, &headers));
    let blocked = app
        .throttle
        .blocked(&email_key, limit)
        .or(app.throttle.blocked(&ip_key, limit.saturating_mul(10)));
    if let Some(retry_after) = blocked {
        return Err(AppError::RateLimited { retry_after });
    }

    let user = repo::user_by_email(&app.db, &email).await?;
    // Verify against a dummy hash for unknown emails so both failures take
    // the same time and answer the same 401.
    let stored = user
        .as_ref()
        .map_or_else(|| app.dummy_hash.clone(), |u| u.password_hash.clone());
    // A storm of logins past the hashing queue is told to come back, not
    // queued without bound (nor counted as a failure).
    let matches =
        app.passwords
            .verify(pass, stored)
            .await
            .map_err(|busy| AppError::Unavailable {
                message: format!("{busy}; retry in a second"),
                retry_after: 1,
            })?;
    let ok = matches && user.is_some();
    let Some(user) = user.filter(|_| ok) else {
        app.throttle.failed(&email_key);
        app.throttle.failed(&ip_key);
        tracing::info!(ip = %ip_key, "failed login");
        return Err(AppError::Unauthenticated("invalid email or password"));
    };
    app.throttle.clear(&email_key);

    let tenant = repo::tenant(&app.db, user.tenant_id)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("user {} has no tenant", user.id)))?;
    // A new session on every login; the one the client came with (if any)
    // is revoked so an attacker-planted id is worthless (no fixation).
    if let Some(old) = request_token(&headers) {
        revoke(&app, &token_hash(old)).await?;
    }
    let token = new_token();
    let ttl = app.config.session_ttl();
    let data = SessionData {
        user: UserView {
            id: user.id,
            email: user.email,
            name: user.name,
            role: user.role,
        },
        tenant: TenantView {
            id: tenant.id,
            name: tenant.name,
            currency: tenant.currency,
        },
        expires_at: Utc::now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1)),
        last_write: None,
        view_writes: None,
    };
    app.sessions.create(&token_hash(&token), &data, ttl).await?;
    tracing::info!(user = %data.user.id, tenant = %data.tenant.id, "login");
    crate::warm::start(&app, data.tenant.id);

    let cookie = session_cookie(&app, &token, ttl.as_secs());
    let body = LoginResponse {
        token,
        user: data.user,
        tenant: data.tenant,
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Deletes a session and drops every instance's copy of it before returning.
async fn revoke(app: &AppState, hash: &[u8; 32]) -> Result<(), AppError> {
    app.sessions.delete(hash).await?;
    app.cache.revoke_session(hash).await;
    Ok(())
}

async fn logout(State(app): State<AppState>, session: Session) -> Result<Response, AppError> {
    // Revoked in the store but still cached somewhere would not be instant:
    // once begun, the revocation runs to its end, whatever the deadline.
    if !session.ctx.pass_gate() {
        return Err(AppError::timed_out());
    }
    revoke(&app, &session.token_hash).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&app, "", 0));
    Ok(response)
}

async fn me(session: Session) -> Json<MeResponse> {
    Json(MeResponse {
        user: session.user().clone(),
        tenant: session.tenant().clone(),
    })
}
