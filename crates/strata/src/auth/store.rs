//! Where sessions live: in Redis when `REDIS_URL` is set (shared by every
//! instance, surviving restarts of any of them), in the database otherwise.
//! Both keep only the SHA-256 of the token. This module never caches: the
//! per-instance copy lives in the cache (see [`crate::cache::ApiCache`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use strata_db::repo::auth as repo;
use strata_db::{Db, Lsn};

use super::{TenantView, UserView};
use crate::http::AppError;

/// What a session is: who, for which tenant, until when, and the position
/// of its latest write (read-your-writes on replicas).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionData {
    pub user: UserView,
    pub tenant: TenantView,
    pub expires_at: DateTime<Utc>,
    pub last_write: Option<u64>,
    /// The position of the session's latest write to each cached view, by
    /// view label, where the store keeps them (Redis). `None`: only
    /// `last_write` is known, and it stands for every view.
    #[serde(default)]
    pub view_writes: Option<Vec<(String, u64)>>,
}

impl SessionData {
    pub fn last_write(&self) -> Option<Lsn> {
        self.last_write.map(Lsn::from_u64)
    }
}

/// Why the store could not answer. A missing session is `Ok(None)`, not this.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] strata_db::DbError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("a stored session is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl StoreError {
    /// The answer to the client (also for a cache fill's waiters, who share
    /// one error).
    pub fn to_app_error(&self) -> AppError {
        match self {
            StoreError::Db(e) => AppError::from_db_ref(e),
            StoreError::Redis(_) | StoreError::Timeout(_) => {
                tracing::warn!(error = %self, "session store unavailable");
                AppError::Unavailable {
                    message: "the session store is unavailable; retry shortly".to_owned(),
                    retry_after: 1,
                }
            }
            StoreError::Corrupt(e) => AppError::Internal(anyhow::anyhow!("{e}")),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        e.to_app_error()
    }
}

/// Raises the stored write position (zero-padded hex, so strings compare
/// as numbers) of a session that still exists: `w`, and `w:<label>` for each
/// view label in ARGV[2..].
const RECORD_WRITE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function raise(field)
  local w = redis.call('HGET', KEYS[1], field)
  if (not w) or w < ARGV[1] then redis.call('HSET', KEYS[1], field, ARGV[1]) end
end
raise('w')
for i = 2, #ARGV do raise('w:' .. ARGV[i]) end
return 1
";

/// Moves the expiry of a session that still exists (never recreates one
/// that a logout deleted meanwhile).
const EXTEND: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'e', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Redis-side session storage: one hash per session, `d` (who, JSON),
/// `e` (expiry, unix seconds), `w` (last write position), `w:<view label>`
/// (last write position per cached view), with the key's TTL as the expiry.
pub struct RedisSessions {
    conn: ConnectionManager,
    timeout: Duration,
    record_write: Script,
    extend: Script,
}

pub enum SessionStore {
    Db(Db),
    Redis(Box<RedisSessions>),
}

fn key(hash: &[u8; 32]) -> String {
    format!("strata:session:{}", super::hash_hex(hash))
}

impl SessionStore {
    /// Redis when a URL is given (connecting lazily: a Redis that is down at
    /// start is a degraded service, not a failed start), else the database.
    pub fn new(db: Db, redis_url: Option<&str>) -> anyhow::Result<SessionStore> {
        let Some(url) = redis_url else {
            return Ok(SessionStore::Db(db));
        };
        let timeout = Duration::from_millis(500);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(redis::Client::open(url)?, config)?;
        Ok(SessionStore::Redis(Box::new(RedisSessions {
            conn,
            timeout,
            record_write: Script::new(RECORD_WRITE),
            extend: Script::new(EXTEND),
        })))
    }

    pub fn is_redis(&self) -> bool {
        matches!(self, SessionStore::Redis(_))
    }

    pub async fn create(
        &self,
        hash: &[u8; 32],
        data: &SessionData,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            SessionStore::Db(db) => {
                Ok(
                    repo::create_session(db, hash, data.user.id, data.tenant.id, data.expires_at)
                        .await?,
                )
            }
            SessionStore::Redis(r) => {
                let who = serde_json::to_string(&(&data.user, &data.tenant))?;
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hset_multiple(
                        key(hash),
                        &[("d", who), ("e", data.expires_at.timestamp().to_string())],
                    )
                    .ignore()
                    .expire(key(hash), ttl.as_secs() as i64)
                    .ignore();
                r.run(|mut c| {
                    let pipe = pipe.clone();
                    async move { pipe.query_async::<()>(&mut c).await }
                })
                .await
            }
        }
    }

    /// The live session behind `hash`, if any.
    pub async fn load(
        &self,
        hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<SessionData>, StoreError> {
        match self {
            SessionStore::Db(db) => Ok(repo::session(db, hash, now).await?.map(|r| SessionData {
                last_write: r.last_write().map(Lsn::as_u64),
                view_writes: None,
                expires_at: r.expires_at,
                user: UserView {
                    id: r.user_id,
                    email: r.email,
                    name: r.name,
                    role: r.role,
                },
                tenant: TenantView {
                    id: r.tenant_id,
                    name: r.tenant_name,
                    currency: r.currency,
                },
            })),
            SessionStore::Redis(r) => {
                let key = key(hash);
                let fields: Vec<(String, String)> = r
                    .run(|mut c| {
                        let key = key.clone();
                        async move { c.hgetall(key).await }
                    })
                    .await?;
                let position = |w: &str| u64::from_str_radix(w, 16).ok();
                let field = |name: &str| {
                    fields
                        .iter()
                        .find_map(|(f, v)| (f == name).then_some(v.as_str()))
                };
                let (Some(who), Some(expires)) = (field("d"), field("e")) else {
                    return Ok(None);
                };
                let Some(expires_at) = expires
                    .parse()
                    .ok()
                    .and_then(|e| DateTime::from_timestamp(e, 0))
                else {
                    return Ok(None);
                };
                if expires_at <= now {
                    return Ok(None);
                }
                let (user, tenant): (UserView, TenantView) = serde_json::from_str(who)?;
                let view_writes = fields
                    .iter()
                    .filter_map(|(f, v)| Some((f.strip_prefix("w:")?.to_owned(), position(v)?)))
                    .collect();
                Ok(Some(SessionData {
                    user,
                    tenant,
                    expires_at,
                    last_write: field("w").and_then(position),
                    view_writes: Some(view_writes),
                }))
            }
        }
    }

    /// Moves the session's expiry (sliding expiry).
    pub async fn extend(
        &self,
        hash: &[u8; 32],
        expires_at: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            SessionStore::Db(db) => Ok(repo::extend_session(db, hash, expires_at).await?),
            SessionStore::Redis(r) => {
                let (key, at, secs) = (key(hash), expires_at.timestamp(), ttl.as_secs());
                r.run(|mut c| {
                    let mut invocation = r.extend.key(&key);
                    invocation.arg(at).arg(secs);
                    async move { invocation.invoke_async::<i64>(&mut c).await }
                })
                .await
                .map(drop)
            }
        }
    }

    /// Records the commit position of the session's latest write, which
    /// changed the cached views labelled `views`.
    pub async fn record_write(
        &self,
        hash: &[u8; 32],
        lsn: Lsn,
        views: &[&str],
    ) -> Result<(), StoreError> {
        match self {
            SessionStore::Db(db) => Ok(repo::record_session_write(db, hash, lsn).await?),
            SessionStore::Redis(r) => {
                let (key, at) = (key(hash), format!("{:016x}", lsn.as_u64()));
                r.run(|mut c| {
                    let mut invocation = r.record_write.key(&key);
                    invocation.arg(&at).arg(views);
                    async move { invocation.invoke_async::<i64>(&mut c).await }
                })
                .await
                .map(drop)
            }
        }
    }

    /// Deletes the session; `Ok(false)` if there was none.
    pub async fn delete(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        match self {
            SessionStore::Db(db) => Ok(repo::delete_session(db, hash).await?),
            SessionStore::Redis(r) => {
                let key = key(hash);
                let n: i64 = r
                    .run(|mut c| {
                        let key = key.clone();
                        async move { c.del(key).await }
                    })
                    .await?;
                Ok(n > 0)
            }
        }
    }
}

impl RedisSessions {
    /// Runs one command within the timeout. A command in flight when the
    /// connection dropped (e.g. the first one after Redis restarted) fails
    /// although the manager reconnects at once: it is sent again, once, on
    /// the new connection. Every command here may run twice (the scripts
    /// and writes are idempotent).
    async fn run<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let attempts = async {
            match call(self.conn.clone()).await {
                Err(e) if e.is_unrecoverable_error() => call(self.conn.clone()).await,
                result => result,
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }
}
