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
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                DbError::ForeignKey(db.constraint().unwrap_or("foreign key").to_owned())
            }
            // PostgreSQL reports a shutting-down or unreachable server as
            // class 57P (operator intervention) or 08 (connection exception).
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) =>
            {
                DbError::Unavailable(e)
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => DbError::Unavailable(e),
            _ => DbError::Other(e),
        }
    }
}
