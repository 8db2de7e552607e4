//! Connection pools and where each statement runs: reads on the read pool(s),
//! writes and transactions on the primary (or SQLite's single writer).
//! Never decides *what* to query; only *where*, and how to run it on either backend.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sea_query::{PostgresQueryBuilder, SqliteQueryBuilder};
use sea_query_binder::SqlxBinder;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{FromRow, PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use crate::DbError;

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How to reach the databases; built once from the server's configuration.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `sqlite://path` or `postgres://…`: the primary, where writes go.
    pub url: String,
    /// PostgreSQL read replicas; empty means reads go to the primary.
    pub read_urls: Vec<String>,
    /// Largest number of connections per pool (SQLite: readers).
    pub max_connections: u32,
    /// How long a statement waits for a free connection before the request
    /// is answered "unavailable".
    pub acquire_timeout: Duration,
}

impl DbConfig {
    /// A configuration with the default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        DbConfig {
            url: url.into(),
            read_urls: Vec::new(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A row type that decodes from both backends (what `#[derive(FromRow)]` gives).
pub trait AnyRow:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}
impl<T> AnyRow for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

/// Where a statement must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// May be served by a replica (or SQLite's reader pool).
    Read,
    /// Must see the latest committed state: the primary.
    Primary,
}

enum Pools {
    Postgres {
        primary: PgPool,
        replicas: Vec<PgPool>,
    },
    Sqlite {
        writer: SqlitePool,
        readers: SqlitePool,
    },
}

struct Inner {
    pools: Pools,
    next_replica: AtomicUsize,
}

/// The storage handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl Db {
    /// Opens the pools the configuration names. PostgreSQL pools connect
    /// lazily, so a replica that is down does not stop the server starting;
    /// the SQLite file (and its folder) is created when missing.
    pub async fn connect(config: &DbConfig) -> Result<Db, DbError> {
        let pools = if config.url.starts_with("postgres:") || config.url.starts_with("postgresql:")
        {
            let pool = |url: &str| -> Result<PgPool, DbError> {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| DbError::Config(format!("{url:?}: {e}")))?;
                Ok(PgPoolOptions::new()
                    .max_connections(config.max_connections)
                    .acquire_timeout(config.acquire_timeout)
                    .connect_lazy_with(options))
            };
            let primary = pool(&config.url)?;
            let replicas = config
                .read_urls
                .iter()
                .map(|u| pool(u))
                .collect::<Result<_, _>>()?;
            Pools::Postgres { primary, replicas }
        } else if config.url.starts_with("sqlite:") {
            if !config.read_urls.is_empty() {
                return Err(DbError::Config(
                    "read replicas (DATABASE_READ_URL) need a PostgreSQL primary".into(),
                ));
            }
            let options = SqliteConnectOptions::from_str(&config.url)
                .map_err(|e| DbError::Config(format!("{:?}: {e}", config.url)))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            if let Some(dir) = options.get_filename().parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        DbError::Config(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
            }
            // SQLite allows one writer at a time: a single writer connection
            // queues writes in the pool instead of failing them with
            // SQLITE_BUSY, while WAL lets the readers run beside it.
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(config.acquire_timeout)
                .connect_with(options.clone())
                .await?;
            let readers = SqlitePoolOptions::new()
                .max_connections(config.max_connections.max(1))
                .acquire_timeout(config.acquire_timeout)
                .connect_lazy_with(options.read_only(true));
            Pools::Sqlite { writer, readers }
        } else {
            return Err(DbError::Config(format!(
                "DATABASE_URL must start with sqlite: or postgres:, got {:?}",
                redact(&config.url)
            )));
        };
        Ok(Db {
            inner: Arc::new(Inner {
                pools,
                next_replica: AtomicUsize::new(0),
            }),
        })
    }

    /// The engine behind this handle.
    pub fn backend(&self) -> Backend {
        match self.inner.pools {
            Pools::Postgres { .. } => Backend::Postgres,
            Pools::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// Applies the migrations of this backend that are not applied yet.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match &self.inner.pools {
            Pools::Postgres { primary, .. } => {
                sqlx::migrate!("../../migrations/postgres")
                    .run(primary)
                    .await?
            }
            Pools::Sqlite { writer, .. } => {
                sqlx::migrate!("../../migrations/sqlite")
                    .run(writer)
                    .await?
            }
        }
        Ok(())
    }

    /// Whether the primary answers and every migration this build knows is
    /// applied: what `/readyz` reports.
    pub async fn ready(&self) -> Result<bool, DbError> {
        let expected = match self.backend() {
            Backend::Postgres => sqlx::migrate!("../../migrations/postgres").iter().count(),
            Backend::Sqlite => sqlx::migrate!("../../migrations/sqlite").iter().count(),
        } as i64;
        let sql = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        let applied: Result<i64, sqlx::Error> = match &self.inner.pools {
            Pools::Postgres { primary, .. } => sqlx::query_scalar(sql).fetch_one(primary).await,
            Pools::Sqlite { writer, .. } => sqlx::query_scalar(sql).fetch_one(writer).await,
        };
        match applied {
            Ok(n) => Ok(n >= expected),
            // No migrations table yet: reachable but not migrated.
            Err(sqlx::Error::Database(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Closes every pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match &self.inner.pools {
            Pools::Postgres { primary, replicas } => {
                primary.close().await;
                for r in replicas {
                    r.close().await;
                }
            }
            Pools::Sqlite { writer, readers } => {
                readers.close().await;
                writer.close().await;
            }
        }
    }

    fn pg(&self, target: Target) -> Option<&PgPool> {
        match &self.inner.pools {
            Pools::Postgres { primary, replicas } => Some(match target {
                Target::Read if !replicas.is_empty() => {
                    let i = self.inner.next_replica.fetch_add(1, Ordering::Relaxed);
                    &replicas[i % replicas.len()]
                }
                _ => primary,
            }),
            Pools::Sqlite { .. } => None,
        }
    }

    fn sqlite(&self, target: Target) -> Option<&SqlitePool> {
        match &self.inner.pools {
            Pools::Sqlite { writer, readers } => Some(match target {
                Target::Read => readers,
                Target::Primary => writer,
            }),
            Pools::Postgres { .. } => None,
        }
    }

    pub(crate) async fn fetch_all<T: AnyRow>(
        &self,
        target: Target,
        stmt: &impl SqlxBinder,
    ) -> Result<Vec<T>, DbError> {
        if let Some(pool) = self.pg(target) {
            let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
            return Ok(sqlx::query_as_with::<_, T, _>(&sql, values)
                .fetch_all(pool)
                .await?);
        }
        let pool = self
            .sqlite(target)
            .expect("one backend is always configured");
        let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
        Ok(sqlx::query_as_with::<_, T, _>(&sql, values)
            .fetch_all(pool)
            .await?)
    }

    pub(crate) async fn fetch_optional<T: AnyRow>(
        &self,
        target: Target,
        stmt: &impl SqlxBinder,
    ) -> Result<Option<T>, DbError> {
        if let Some(pool) = self.pg(target) {
            let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
            return Ok(sqlx::query_as_with::<_, T, _>(&sql, values)
                .fetch_optional(pool)
                .await?);
        }
        let pool = self
            .sqlite(target)
            .expect("one backend is always configured");
        let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
        Ok(sqlx::query_as_with::<_, T, _>(&sql, values)
            .fetch_optional(pool)
            .await?)
    }

    /// Runs a statement whose single row holds one integer (a count, a sum).
    pub(crate) async fn fetch_i64(
        &self,
        target: Target,
        stmt: &impl SqlxBinder,
    ) -> Result<i64, DbError> {
        if let Some(pool) = self.pg(target) {
            let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
            return Ok(sqlx::query_scalar_with::<_, i64, _>(&sql, values)
                .fetch_one(pool)
                .await?);
        }
        let pool = self
            .sqlite(target)
            .expect("one backend is always configured");
        let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
        Ok(sqlx::query_scalar_with::<_, i64, _>(&sql, values)
            .fetch_one(pool)
            .await?)
    }

    /// Runs one write outside a transaction; returns the rows it affected.
    pub(crate) async fn execute(&self, stmt: &impl SqlxBinder) -> Result<u64, DbError> {
        let mut tx = self.begin().await?;
        let n = tx.execute(stmt).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Starts a transaction on the primary.
    pub(crate) async fn begin(&self) -> Result<Tx, DbError> {
        Ok(match &self.inner.pools {
            Pools::Postgres { primary, .. } => Tx::Postgres(primary.begin().await?),
            Pools::Sqlite { writer, .. } => Tx::Sqlite(writer.begin().await?),
        })
    }

    /// How many connections writes can use at once: the PostgreSQL primary
    /// pool's size, or SQLite's single writer. Bulk writers (the seed) run no
    /// more concurrent transactions than this, or they would only queue for a
    /// connection, and could time out queueing.
    pub(crate) fn write_connections(&self) -> u32 {
        match &self.inner.pools {
            Pools::Postgres { primary, .. } => primary.options().get_max_connections(),
            Pools::Sqlite { .. } => 1,
        }
    }

    /// Runs SQL without parameters on the primary, outside any transaction:
    /// maintenance the query builder cannot express (e.g. `ANALYZE` after a
    /// bulk load). Never for anything built from input.
    pub(crate) async fn execute_sql(&self, sql: &'static str) -> Result<(), DbError> {
        match &self.inner.pools {
            Pools::Postgres { primary, .. } => {
                sqlx::raw_sql(sql).execute(primary).await?;
            }
            Pools::Sqlite { writer, .. } => {
                sqlx::raw_sql(sql).execute(writer).await?;
            }
        }
        Ok(())
    }

    /// The query plan PostgreSQL chooses for a statement (one line per plan
    /// node); `None` on SQLite. Used to prove list queries use indexes.
    pub(crate) async fn explain(
        &self,
        stmt: &impl SqlxBinder,
    ) -> Result<Option<Vec<String>>, DbError> {
        let Some(pool) = self.pg(Target::Primary) else {
            return Ok(None);
        };
        let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
        let sql = format!("EXPLAIN {sql}");
        Ok(Some(
            sqlx::query_scalar_with::<_, String, _>(&sql, values)
                .fetch_all(pool)
                .await?,
        ))
    }
}

/// A transaction on the primary; rolled back when dropped uncommitted.
pub(crate) enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Tx {
    pub(crate) async fn execute(&mut self, stmt: &impl SqlxBinder) -> Result<u64, DbError> {
        Ok(match self {
            Tx::Postgres(tx) => {
                let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
                sqlx::query_with(&sql, values)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
            Tx::Sqlite(tx) => {
                let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
                sqlx::query_with(&sql, values)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
        })
    }

    pub(crate) async fn commit(self) -> Result<(), DbError> {
        match self {
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// A database URL with its password hidden, for error messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..s + 3 + colon], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}
