//! The storage error type: classifies driver errors into what callers must
//! tell apart (a conflict the client caused, a dependency that is down, a bug).

/// What went wrong in the database, in the terms a caller acts on.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A unique constraint refused the write (e.g. a duplicate invoice number).
    #[error("unique constraint violated: {0}")]
    Unique(String),
    /// A foreign key refused the write or delete (e.g. a contact that still has invoices).
    #[error("foreign key constraint violated: {0}")]
    ForeignKey(String),
    /// The database cannot be reached or has no free connection in time.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The configuration names something this build cannot use.
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// The unit of work was cancelled (its request timed out, or its client
    /// went away) before this write could commit; nothing was written.
    #[error("cancelled before the write committed")]
    Cancelled,
    /// Anything else: a bug or a schema mismatch, never the client's fault.
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                DbError::Unique(db.constraint().unwrap_or("unique").to_owned())
            }
            // SQLite reports a RESTRICT action as a plain constraint error,
            // recognisable only by its message.
            sqlx::Error::Database(db)
                if db.is_foreign_key_violation()
                    || db.message().contains("FOREIGN KEY constraint failed") =>
            {
                DbError::ForeignKey(db.constraint().unwrap_or("foreign key").to_owned())
            }
            sqlx::Error::Database(db) if operational(db.as_ref()) => DbError::Unavailable(e),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DbError::Unavailable(e),
            _ => DbError::Other(e),
        }
    }
}

/// Whether a database error is operational trouble — neither the client's
/// fault nor a bug — so the request should be answered "unavailable, retry".
fn operational(db: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = db.code() else { return false };
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        // The server is shutting down or starting (57), the connection broke
        // (08), it is out of resources or connections (53), an object is
        // locked or the database refuses connections (55), or this database
        // or role is unusable right now (3D000, 28).
        return ["08", "53", "55", "57", "28"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "3D000";
    }
    // SQLite: the primary result code is the low byte of the extended one.
    // BUSY (5) and LOCKED (6) are contention; IOERR (10), FULL (13) and
    // CANTOPEN (14) are the disk.
    code.parse::<i32>()
        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14))
}

/// Whether a failed statement says its server or the connection to it is
/// unusable, not that the statement was wrong: a read may then be retried
/// on another server, and the server is taken out of rotation.
pub(crate) fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => operational(db.as_ref()),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Whether a replica cancelled a read because it conflicted with replaying
/// WAL (SQLSTATE 40001 outside a serializable transaction): the read is
/// fine elsewhere and the replica is healthy.
pub(crate) fn is_recovery_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40001"))
}
