//! Authentication: who is calling, from a session cookie or bearer token.
//! Sessions are random 256-bit tokens; only their SHA-256 is stored, so the
//! sessions table cannot be replayed. Handlers receive a [`Session`] and take
//! the tenant from it, never from the request.

pub mod password;
pub mod routes;
pub mod store;
pub mod throttle;

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;
use chrono::Utc;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::SessionData;
use strata_db::model::Role;
use strata_db::{CommitGate, Db, ReadCtx};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::cache::{Loaded, View};
use crate::http::etag::Tagged;
use crate::http::AppError;

/// The view label under which a session records a write whose record could not be
/// confirmed on every instance.
pub const UNSYNCED: &str = "unsynced";

/// The session cookie's name (the contract fixes it).
pub const COOKIE: &str = "strata_session";

/// The logged-in user, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
}

/// The caller's tenant, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    /// Who, for which tenant, and the session's latest write position per
    /// cached view (see [`SessionData::view_writes`]).
    data: Arc<SessionData>,
    /// Carries the position of the session's latest write into this
    /// request's reads, and this request's writes back out.
    pub ctx: ReadCtx,
}

impl Session {
    /// The tenant every query of this request is scoped to.
    pub fn tenant_id(&self) -> Uuid {
        self.data.tenant.id
    }

    /// The signed-in user, as the session store last returned it (with Redis
    /// sessions, as it was at login).
    pub fn user(&self) -> &UserView {
        &self.data.user
    }

    /// The user's tenant, likewise.
    pub fn tenant(&self) -> &TenantView {
        &self.data.tenant
    }

    /// The storage handle for this request: its reads see the session's own
    /// writes (a replica serves them only once it has replayed them).
    pub fn db(&self, app: &AppState) -> Db {
        app.db.with_ctx(&self.ctx)
    }

    /// `view` of this session's tenant under `params`, through the cache
    /// ([`ApiCache::read`](crate::cache::ApiCache::read)), as this session
    /// must see it: with its own writes to the view.
    pub async fn read<F, Fut>(
        &self,
        app: &AppState,
        view: View,
        params: String,
        load: F,
    ) -> Result<Option<Tagged>, AppError>
    where
        F: FnOnce(Db) -> Fut + Send + 'static,
        Fut: Future<Output = Loaded> + Send + 'static,
    {
        let reader = (self.tenant_id(), view, self.own_position(view));
        app.cache.read(&self.db(app), reader, params, load).await
    }

    /// The position of this session's latest change to `view` (0: none
    /// known): what a cached copy of the view must include for this session.
    /// Where the store keeps no per-view positions, the session's latest
    /// write of any kind stands for it.
    fn own_position(&self, view: View) -> u64 {
        let last = |p: Option<strata_db::Lsn>| p.map_or(0, strata_db::Lsn::as_u64);
        let recorded = match &self.data.view_writes {
            Some(writes) => writes
                .iter()
                .find_map(|(label, p)| (label == view.label()).then_some(*p))
                .unwrap_or(0),
            None => last(self.ctx.min_lsn()),
        };
        // A write earlier in this same request is not in the record yet.
        recorded.max(last(self.ctx.last_write()))
    }

    /// This session as a reader of the live store's `view`: its latest write to the view,
    /// and the latest one whose record may not have reached every instance.
    pub fn reader(&self, view: View) -> crate::cache::live::Reader {
        let unsynced = self
            .data
            .view_writes
            .as_ref()
            .and_then(|w| w.iter().find_map(|(l, p)| (l == UNSYNCED).then_some(*p)))
            .unwrap_or(0);
        crate::cache::live::Reader {
            tenant: self.tenant_id(),
            own: self.own_position(view),
            unsynced,
        }
    }

    /// After a committed write in live mode, before it answers: records its position with
    /// the session (per view label of `changed`, for reads while the bus is down), applies
    /// its records here and waits until every instance has applied them. If that cannot be
    /// confirmed, the session's later reads anywhere take only views read at or after this
    /// write ([`UNSYNCED`]).
    pub async fn changed(
        &self,
        app: &AppState,
        records: &[crate::cache::live::Record],
        changed: &[View],
    ) {
        let position = self.ctx.last_write();
        let publish = async {
            let mut synced = true;
            for record in records {
                synced &= app.cache.publish(record).await;
            }
            synced
        };
        let trusted = app.cache.live().is_some_and(|l| l.trusted());
        let synced = if trusted {
            // Every instance applies the records before this answers, and its views then
            // need nothing of the session's stored positions (fills read at or after the
            // tenant's latest record): store them for later loads of the session, but
            // leave the instances' copies alone, which saves the session a store read on
            // its next request.
            let (_, synced) = tokio::join!(self.store_position(app, changed, position), publish);
            synced
        } else {
            // The copies elsewhere must carry the new position before the records'
            // barrier passes: reads on an instance that cannot trust its views need it.
            self.record_position(app, changed, position).await;
            publish.await
        };
        if !synced && app.cache.tiered().is_some_and(|c| c.has_redis()) {
            if let Some(lsn) = position {
                match app
                    .sessions
                    .record_write(&self.token_hash, lsn, &[UNSYNCED])
                    .await
                {
                    Ok(()) => app.cache.refresh_session(&self.token_hash).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record an unconfirmed write with its session")
                    }
                }
                app.cache.sync_peers().await;
            }
        }
    }

    /// Admits one write of this session, or answers 429 with how long to
    /// wait: one client cannot flood the primary.
    pub fn admit_write(&self, app: &AppState) -> Result<(), AppError> {
        app.writes
            .take(&self.token_hash)
            .map_err(|retry_after| AppError::RateLimited { retry_after })
    }

    /// After a committed write, before it answers: invalidates the cached
    /// views it changed (at its commit position) and, at the same time,
    /// stores that position with the session, so the session's next requests
    /// read their writes on any instance even with the cache off; then waits
    /// until every instance has applied both. Their order does not matter:
    /// both are in place everywhere before the write answers, and nothing is
    /// promised to a request that runs while the write does. A failure to
    /// store the position is logged, not returned: the write has succeeded,
    /// and cached reads do not depend on it.
    pub async fn wrote(&self, app: &AppState, changed: &[View]) {
        let position = self.ctx.last_write();
        tokio::join!(
            app.cache.written(self.tenant_id(), changed, position),
            self.record_position(app, changed, position),
        );
        app.cache.sync_peers().await;
    }

    async fn record_position(
        &self,
        app: &AppState,
        changed: &[View],
        position: Option<strata_db::Lsn>,
    ) {
        if self.store_position(app, changed, position).await {
            // Every instance drops its copy (the barrier in `wrote` waits
            // for that), so the session's next read anywhere carries the new
            // position: a row it just created is in no invalidated view,
            // only the position finds it on a replica.
            app.cache.refresh_session(&self.token_hash).await;
        }
    }

    /// Stores the write's position with the session (per view label); whether it did.
    async fn store_position(
        &self,
        app: &AppState,
        changed: &[View],
        position: Option<strata_db::Lsn>,
    ) -> bool {
        let Some(lsn) = position else {
            return false;
        };
        let mut labels: Vec<&str> = changed.iter().map(|v| v.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        match app
            .sessions
            .record_write(&self.token_hash, lsn, &labels)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not record the session's write position");
                false
            }
        }
    }
}

/// The session behind `hash`: the cached copy, else the session store.
async fn load_session(
    app: &AppState,
    hash: [u8; 32],
) -> Result<Option<Arc<SessionData>>, AppError> {
    let state = app.clone();
    let bytes = app
        .cache
        .session(&hash, move || async move {
            match state.sessions.load(&hash, Utc::now()).await? {
                Some(data) => Ok(Some(serde_json::to_vec(&data)?)),
                None => Ok(None),
            }
        })
        .await?;
    bytes
        .map(|b| app.decoded_sessions.decode(hash, b))
        .transpose()
        .map_err(|e| AppError::Internal(e.into()))
}

/// Sessions as decoded from their cached bytes, by token hash: a session is
/// decoded once per change, not on every request (decoding its JSON was a
/// seventh of a cached read's instructions). The bytes stay the truth: an
/// entry is used only for exactly the bytes it was decoded from, so a
/// session whose record changed (a write position, a longer expiry) is
/// decoded afresh, and one revoked never gets this far.
pub struct DecodedSessions(quick_cache::sync::Cache<[u8; 32], (Bytes, Arc<SessionData>)>);

impl DecodedSessions {
    /// Keeps up to `capacity` sessions (the least used go first).
    pub fn new(capacity: usize) -> Self {
        Self(quick_cache::sync::Cache::new(capacity.max(1)))
    }

    fn decode(&self, hash: [u8; 32], bytes: Bytes) -> Result<Arc<SessionData>, serde_json::Error> {
        if let Some((seen, data)) = self.0.get(&hash) {
            if seen == bytes {
                return Ok(data);
            }
        }
        let data = Arc::new(serde_json::from_slice::<SessionData>(&bytes)?);
        self.0.insert(hash, (bytes, data.clone()));
        Ok(data)
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

/// A token hash as 64 lowercase hex digits (its name in Redis and the cache).
pub fn hash_hex(hash: &[u8; 32]) -> String {
    // On every authenticated request: a table, not `format!` per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 64];
    for (pair, b) in hex.chunks_exact_mut(2).zip(hash) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Only ASCII digits were written, so this never falls back to the empty
    // string; checking them is cheaper than collecting chars.
    std::str::from_utf8(&hex).map_or_else(|_| String::new(), str::to_owned)
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
/// session cookie. A request with two of either, or an `Authorization`
/// header that is not readable text, carries none: ambiguous credentials
/// are no credentials.
pub fn request_token(headers: &HeaderMap) -> Option<&str> {
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = auth.next() {
        if auth.next().is_some() {
            return None;
        }
        let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    let mut tokens = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim());
    let token = tokens.next()?;
    tokens.next().is_none().then_some(token)
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
        // No barrier here: whatever another instance invalidated or revoked
        // before answering the client was applied here before it answered.
        let now = Utc::now();
        let data = load_session(app, hash)
            .await?
            .filter(|data| data.expires_at > now)
            .ok_or(AppError::Unauthenticated(
                "the session is expired or revoked: log in again",
            ))?;
        // Sliding expiry, written at most once a minute per session rather
        // than on every request.
        let ttl = app.config.session_ttl();
        let chrono_ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        if data.expires_at - now < chrono_ttl - chrono::Duration::minutes(1) {
            match app.sessions.extend(&hash, now + chrono_ttl, ttl).await {
                Ok(()) => app.cache.refresh_session(&hash).await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not extend a session; it keeps its current expiry")
                }
            }
        }
        // A request that may write carries the guard's gate
        // ([`crate::http::Guard`]): its commits pass it.
        let ctx = match parts.extensions.get::<CommitGate>() {
            Some(gate) => ReadCtx::gated(data.last_write(), gate.clone()),
            None => ReadCtx::new(data.last_write()),
        };
        Ok(Session {
            token_hash: hash,
            ctx,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;

    use super::DecodedSessions;

    #[test]
    fn a_session_is_decoded_again_whenever_its_bytes_change() {
        let session = |last_write: u64| {
            Bytes::from(
                serde_json::json!({
                    "user": {"id": uuid::Uuid::nil(), "email": "a@b.example", "name": "A", "role": "admin"},
                    "tenant": {"id": uuid::Uuid::nil(), "name": "T", "currency": "EUR"},
                    "expires_at": "2030-01-01T00:00:00Z",
                    "last_write": last_write,
                })
                .to_string(),
            )
        };
        let decoded = DecodedSessions::new(16);
        let hash = [7u8; 32];
        let first = decoded.decode(hash, session(1)).expect("decodes");
        assert_eq!(first.last_write, Some(1));
        // The same bytes: the same decoded session, not a second decode.
        let again = decoded.decode(hash, session(1)).expect("decodes");
        assert!(std::sync::Arc::ptr_eq(&first, &again));
        // A new write position (or expiry) means new bytes: never the old copy.
        assert_eq!(
            decoded
                .decode(hash, session(2))
                .expect("decodes")
                .last_write,
            Some(2)
        );
        assert_eq!(
            decoded
                .decode(hash, session(1))
                .expect("decodes")
                .last_write,
            Some(1)
        );
        assert!(decoded.decode(hash, Bytes::from_static(b"{")).is_err());
    }

    #[test]
    fn hash_hex_is_64_lowercase_digits_in_byte_order() {
        let mut hash = [0u8; 32];
        hash[0] = 0x0f;
        hash[1] = 0xa0;
        hash[31] = 0xff;
        let hex = super::hash_hex(&hash);
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("0fa000"), "{hex}");
        assert!(hex.ends_with("00ff"), "{hex}");
    }
}
