//! Tenants, users and database-stored sessions.
//! Never sees a session token: only its hash, which the caller computes.

use chrono::{DateTime, Utc};
use sea_query::{Alias, Expr, Query};
use sqlx::FromRow;
use uuid::Uuid;

use super::col;
use crate::model::{db_time, Role, Tenant, User};
use crate::pool::Target;
use crate::Lsn;
use crate::{Db, DbError};

/// Creates a tenant.
pub async fn create_tenant(db: &Db, name: &str, currency: &str) -> Result<Tenant, DbError> {
    let tenant = Tenant {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        currency: currency.to_owned(),
        created_at: db_time(Utc::now()),
    };
    let stmt = Query::insert()
        .into_table(Alias::new("tenants"))
        .columns(["id", "name", "currency", "created_at"].map(Alias::new))
        .values_panic([
            tenant.id.into(),
            name.into(),
            currency.into(),
            tenant.created_at.into(),
        ])
        .to_owned();
    db.execute(&stmt).await?;
    Ok(tenant)
}

/// A tenant by id.
pub async fn tenant(db: &Db, id: Uuid) -> Result<Option<Tenant>, DbError> {
    let stmt = Query::select()
        .columns(["id", "name", "currency", "created_at"].map(Alias::new))
        .from(Alias::new("tenants"))
        .and_where(col("id").eq(id))
        .to_owned();
    db.fetch_optional(Target::Primary, &stmt).await
}

/// Whether any tenant exists (an empty database gets the demo tenant).
pub async fn any_tenant(db: &Db) -> Result<bool, DbError> {
    let stmt = Query::select()
        .expr(Expr::val(1))
        .from(Alias::new("tenants"))
        .limit(1)
        .to_owned();
    #[derive(FromRow)]
    struct One {}
    Ok(db
        .fetch_optional::<One>(Target::Primary, &stmt)
        .await?
        .is_some())
}

/// What a new user needs; the password arrives already hashed.
pub struct NewUser<'a> {
    pub tenant_id: Uuid,
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub password_hash: &'a str,
}

const USER_COLUMNS: [&str; 7] = [
    "id",
    "tenant_id",
    "email",
    "name",
    "role",
    "password_hash",
    "created_at",
];

/// Creates a user; emails are unique across tenants ([`DbError::Unique`]).
pub async fn create_user(db: &Db, new: NewUser<'_>) -> Result<User, DbError> {
    let user = User {
        id: Uuid::now_v7(),
        tenant_id: new.tenant_id,
        email: new.email.to_lowercase(),
        name: new.name.to_owned(),
        role: new.role,
        password_hash: new.password_hash.to_owned(),
        created_at: db_time(Utc::now()),
    };
    let stmt = Query::insert()
        .into_table(Alias::new("users"))
        .columns(USER_COLUMNS.map(Alias::new))
        .values_panic([
            user.id.into(),
            user.tenant_id.into(),
            user.email.clone().into(),
            user.name.clone().into(),
            user.role.into(),
            user.password_hash.clone().into(),
            user.created_at.into(),
        ])
        .to_owned();
    db.execute(&stmt).await?;
    Ok(user)
}

/// A user by email (case-insensitive).
pub async fn user_by_email(db: &Db, email: &str) -> Result<Option<User>, DbError> {
    let stmt = Query::select()
        .columns(USER_COLUMNS.map(Alias::new))
        .from(Alias::new("users"))
        .and_where(col("email").eq(email.to_lowercase()))
        .to_owned();
    db.fetch_optional(Target::Primary, &stmt).await
}

/// A live session with its user and tenant, as one read finds them.
#[derive(Debug, Clone, FromRow)]
pub struct SessionRecord {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub tenant_name: String,
    pub currency: String,
    /// The primary's WAL position after the session's latest write.
    pub last_write_lsn: Option<i64>,
}

impl SessionRecord {
    /// The position this session's reads must see (read-your-writes).
    pub fn last_write(&self) -> Option<Lsn> {
        self.last_write_lsn
            .map(|raw| Lsn::from_u64(raw.max(0) as u64))
    }
}

/// Stores a new session under the hash of its token.
pub async fn create_session(
    db: &Db,
    token_hash: &[u8],
    user_id: Uuid,
    tenant_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), DbError> {
    let stmt = Query::insert()
        .into_table(Alias::new("sessions"))
        .columns(
            [
                "id_hash",
                "user_id",
                "tenant_id",
                "created_at",
                "expires_at",
            ]
            .map(Alias::new),
        )
        .values_panic([
            token_hash.to_vec().into(),
            user_id.into(),
            tenant_id.into(),
            db_time(Utc::now()).into(),
            db_time(expires_at).into(),
        ])
        .to_owned();
    db.execute(&stmt).await?;
    Ok(())
}

/// The unexpired session stored under this token hash, read on the primary:
/// a session created or revoked a moment ago must count at once.
pub async fn session(
    db: &Db,
    token_hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<SessionRecord>, DbError> {
    let (s, u, t) = (
        Alias::new("sessions"),
        Alias::new("users"),
        Alias::new("tenants"),
    );
    let stmt = Query::select()
        .column((s.clone(), Alias::new("user_id")))
        .column((s.clone(), Alias::new("tenant_id")))
        .column((s.clone(), Alias::new("expires_at")))
        .column((u.clone(), Alias::new("email")))
        .column((u.clone(), Alias::new("name")))
        .column((u.clone(), Alias::new("role")))
        .expr_as(
            Expr::col((t.clone(), Alias::new("name"))),
            Alias::new("tenant_name"),
        )
        .column((t.clone(), Alias::new("currency")))
        .column((s.clone(), Alias::new("last_write_lsn")))
        .from(s.clone())
        .inner_join(
            u.clone(),
            Expr::col((u.clone(), Alias::new("id"))).equals((s.clone(), Alias::new("user_id"))),
        )
        .inner_join(
            t.clone(),
            Expr::col((t, Alias::new("id"))).equals((s.clone(), Alias::new("tenant_id"))),
        )
        .and_where(Expr::col((s.clone(), Alias::new("id_hash"))).eq(token_hash.to_vec()))
        .and_where(Expr::col((s, Alias::new("expires_at"))).gt(now))
        .to_owned();
    db.fetch_optional(Target::Primary, &stmt).await
}

/// Moves a session's expiry (sliding sessions).
pub async fn extend_session(
    db: &Db,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), DbError> {
    let stmt = Query::update()
        .table(Alias::new("sessions"))
        .value(Alias::new("expires_at"), db_time(expires_at))
        .and_where(col("id_hash").eq(token_hash.to_vec()))
        .to_owned();
    db.execute(&stmt).await?;
    Ok(())
}

/// Remembers the position of a session's latest write, so its next reads,
/// on any instance, wait for a replica that has replayed it. Never moves
/// the position backwards (two concurrent requests of one session).
pub async fn record_session_write(db: &Db, token_hash: &[u8], lsn: Lsn) -> Result<(), DbError> {
    // Positions beyond i64 (only `Lsn::MAX`, "unknown") saturate: still a
    // position no replica reaches, so the session reads from the primary.
    let raw = i64::try_from(lsn.as_u64()).unwrap_or(i64::MAX);
    let stmt = Query::update()
        .table(Alias::new("sessions"))
        .value(Alias::new("last_write_lsn"), raw)
        .and_where(col("id_hash").eq(token_hash.to_vec()))
        .and_where(
            col("last_write_lsn")
                .is_null()
                .or(col("last_write_lsn").lt(raw)),
        )
        .to_owned();
    db.execute(&stmt).await?;
    Ok(())
}

/// Revokes a session; `false` when there was none.
pub async fn delete_session(db: &Db, token_hash: &[u8]) -> Result<bool, DbError> {
    let stmt = Query::delete()
        .from_table(Alias::new("sessions"))
        .and_where(col("id_hash").eq(token_hash.to_vec()))
        .to_owned();
    Ok(db.execute(&stmt).await? > 0)
}

/// Deletes sessions that expired before `now`; returns how many.
pub async fn purge_expired_sessions(db: &Db, now: DateTime<Utc>) -> Result<u64, DbError> {
    let stmt = Query::delete()
        .from_table(Alias::new("sessions"))
        .and_where(col("expires_at").lt(now))
        .to_owned();
    db.execute(&stmt).await
}
