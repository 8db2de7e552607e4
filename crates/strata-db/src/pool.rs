//! Connection pools and where each statement runs: reads on the read pool(s),
//! writes and transactions on the primary (or SQLite's single writer).
//! Never decides *what* to query; only *where*, and how to run it on either backend.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::SharedString;
use sea_query::{PostgresQueryBuilder, SqliteQueryBuilder};
use sea_query_binder::SqlxBinder;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{FromRow, PgPool, Postgres, Sqlite, SqlitePool, Transaction, TransactionManager};

use crate::change::Token;
use crate::error::{is_connection_error, is_recovery_conflict};
use crate::lsn::{Lsn, ReadCtx, ReadSource, ServedBy};
use crate::router::{names, NoReplica, ReplicaSettings, ReplicaStatus, Router};
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
    /// PostgreSQL streaming replicas, any number; empty means reads go to
    /// the primary.
    pub read_urls: Vec<String>,
    /// Largest number of connections in the primary's pool (SQLite: readers).
    pub max_connections: u32,
    /// How long a statement on the primary waits for a free connection
    /// before the request is answered "unavailable".
    pub acquire_timeout: Duration,
    /// Largest number of connections in each replica's pool; `None`: the
    /// same as `max_connections`.
    pub replica_max_connections: Option<u32>,
    /// How long a read waits for a connection to its replica. Short: past
    /// it the replica is banned and the read retried elsewhere.
    pub replica_acquire_timeout: Duration,
    /// Health, lag and ban policy for replicas.
    pub replicas: ReplicaSettings,
    /// Whether statements are prepared once per connection and cached
    /// (sqlx's default, and the fastest). Behind PgBouncer in transaction
    /// mode, use PgBouncer 1.21+ with `max_prepared_statements` set (e.g.
    /// 200), which tracks named statements per server connection, and keep
    /// this `true`. `false` disables the statement cache and sends every
    /// statement unnamed, so no named statement is left on a server
    /// connection another client then gets ("prepared statement sqlx_s_1
    /// already exists"); it does not make a pooler without statement
    /// tracking safe, because sqlx still prepares and executes in separate
    /// round trips that such a pooler may send to different servers.
    pub persistent_statements: bool,
}

impl DbConfig {
    /// A configuration with the default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        DbConfig {
            url: url.into(),
            read_urls: Vec::new(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            replica_max_connections: None,
            replica_acquire_timeout: Duration::from_secs(1),
            replicas: ReplicaSettings::default(),
            persistent_statements: true,
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
        /// `None` without replicas: every read goes to the primary.
        router: Option<Box<Router>>,
    },
    Sqlite {
        writer: SqlitePool,
        readers: SqlitePool,
    },
}

struct Inner {
    pools: Pools,
    persistent: bool,
}

/// The storage handle: cheap to clone, shared by every request.
///
/// A handle may carry a [`ReadCtx`] ([`Db::with_ctx`]): its reads then use
/// only replicas that have replayed the context's minimum position, its
/// commits raise that position, and the context records what served each
/// read. Without one, reads take any usable replica.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
    ctx: Option<ReadCtx>,
    /// Statements are planned for their own values on every call, never
    /// prepared once and reused ([`Db::planned_per_call`]).
    per_call: bool,
}

type PgTm = <Postgres as sqlx::Database>::TransactionManager;

impl Db {
    /// Opens the pools the configuration names. PostgreSQL pools connect
    /// lazily, so a replica that is down does not stop the server starting
    /// (it serves reads once a probe has seen it answer); the SQLite file
    /// (and its folder) is created when missing. Starts the background task
    /// that probes replicas and reports pool gauges; it ends with the last
    /// clone of the handle or at [`Db::close`].
    pub async fn connect(config: &DbConfig) -> Result<Db, DbError> {
        let pools = if config.url.starts_with("postgres:") || config.url.starts_with("postgresql:")
        {
            let options = |url: &str| -> Result<PgConnectOptions, DbError> {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| DbError::Config(format!("{:?}: {e}", redact(url))))?;
                Ok(if config.persistent_statements {
                    options
                } else {
                    options.statement_cache_capacity(0)
                })
            };
            let primary_options = options(&config.url)?;
            let primary = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.acquire_timeout)
                .connect_lazy_with(primary_options.clone());
            let settings = &config.replicas;
            // Probes run on a connection of their own, with a server-side
            // statement timeout as well as the client's, so a stuck probe
            // does not linger on a struggling server.
            let probe_pool = |options: PgConnectOptions| {
                let ms = settings.probe_timeout.as_millis().max(1).to_string();
                PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(settings.probe_timeout)
                    .test_before_acquire(false)
                    .connect_lazy_with(options.options([("statement_timeout", ms.as_str())]))
            };
            let router = if config.read_urls.is_empty() {
                None
            } else {
                let replicas = config
                    .read_urls
                    .iter()
                    .map(|url| {
                        let options = options(url)?;
                        let pool = PgPoolOptions::new()
                            .max_connections(
                                config
                                    .replica_max_connections
                                    .unwrap_or(config.max_connections),
                            )
                            .acquire_timeout(config.replica_acquire_timeout)
                            .connect_lazy_with(options.clone());
                        Ok((pool, probe_pool(options)))
                    })
                    .collect::<Result<Vec<_>, DbError>>()?;
                let fallback = settings
                    .max_primary_fallback_reads
                    .unwrap_or(config.max_connections / 2);
                Some(Box::new(Router::new(
                    replicas,
                    probe_pool(primary_options),
                    settings.clone(),
                    fallback,
                    config.acquire_timeout,
                )))
            };
            Pools::Postgres { primary, router }
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
        let has_replicas = matches!(
            &pools,
            Pools::Postgres {
                router: Some(_),
                ..
            }
        );
        let inner = Arc::new(Inner {
            pools,
            persistent: config.persistent_statements,
        });
        // Probing is what admits replicas, so it runs at the configured
        // pace; without replicas only gauges are left to refresh.
        let every = if has_replicas {
            config.replicas.probe_interval
        } else {
            config.replicas.probe_interval.max(Duration::from_secs(1))
        };
        tokio::spawn(monitor(Arc::downgrade(&inner), every));
        Ok(Db {
            inner,
            ctx: None,
            per_call: false,
        })
    }

    /// This handle with a replication context: its reads honour the
    /// context's minimum position and record their source there, its
    /// commits record their WAL position there.
    pub fn with_ctx(&self, ctx: &ReadCtx) -> Db {
        Db {
            inner: self.inner.clone(),
            ctx: Some(ctx.clone()),
            per_call: self.per_call,
        }
    }

    /// This handle, with its statements planned by PostgreSQL for their own
    /// values on every call instead of prepared once. A prepared statement
    /// switches to a generic plan after a few calls; for a `LIKE` on a
    /// trigram index that plan cannot tell a selective text from a short or
    /// common one, and scanning the whole index for those took 100-180 ms
    /// where a custom plan takes 1-8 ms.
    pub(crate) fn planned_per_call(&self) -> Db {
        Db {
            per_call: true,
            ..self.clone()
        }
    }

    /// Whether statements are prepared and reused on their connection.
    fn persistent(&self) -> bool {
        self.inner.persistent && !self.per_call
    }

    /// The replication context this handle carries, if any.
    pub fn ctx(&self) -> Option<&ReadCtx> {
        self.ctx.as_ref()
    }

    /// The engine behind this handle.
    pub fn backend(&self) -> Backend {
        match self.inner.pools {
            Pools::Postgres { .. } => Backend::Postgres,
            Pools::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// What the router believes about each replica (empty without replicas).
    pub fn replica_status(&self) -> Vec<ReplicaStatus> {
        match &self.inner.pools {
            Pools::Postgres {
                router: Some(router),
                ..
            } => router.status(),
            _ => Vec::new(),
        }
    }

    /// The primary's current WAL insert position: at or after every commit
    /// that has returned. `None` on SQLite, which has no replicas.
    pub async fn primary_lsn(&self) -> Result<Option<Lsn>, DbError> {
        let Pools::Postgres { primary, .. } = &self.inner.pools else {
            return Ok(None);
        };
        let text: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .persistent(self.persistent())
            .fetch_one(primary)
            .await?;
        text.parse()
            .map(Some)
            .map_err(|e: crate::lsn::ParseLsnError| DbError::Config(e.to_string()))
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
            Pools::Postgres { primary, router } => {
                primary.close().await;
                if let Some(router) = router {
                    router.close().await;
                }
            }
            Pools::Sqlite { writer, readers } => {
                readers.close().await;
                writer.close().await;
            }
        }
    }

    fn record(&self, source: ReadSource) {
        if let Some(ctx) = &self.ctx {
            ctx.read_from(source);
        }
    }

    /// Runs a read on PostgreSQL where the target and the context allow:
    /// the least loaded usable replica, else the primary (within its share
    /// for fallback reads). A read that fails on a replica because the
    /// replica or the connection did is retried once elsewhere; statements
    /// are only ever reads here, so running one twice is harmless.
    async fn pg_read<T, F, Fut>(
        &self,
        primary: &PgPool,
        router: Option<&Router>,
        target: Target,
        run: F,
    ) -> Result<T, DbError>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let Some(router) = router.filter(|_| target == Target::Read) else {
            return self.on_primary(primary, &run).await;
        };
        let min_lsn = self.ctx.as_ref().and_then(ReadCtx::min_lsn);
        let chosen = match (router.choose(min_lsn, None), min_lsn) {
            (Ok(chosen), _) => Ok(chosen),
            // Behind as of the last probe; maybe not any more.
            (Err(NoReplica::Behind), Some(min)) => {
                router.catch_up(min).await.ok_or(NoReplica::Behind)
            }
            (Err(why), _) => Err(why),
        };
        let (replica, replayed) = match chosen {
            Ok(chosen) => chosen,
            Err(why) => {
                metrics::counter!(names::FALLBACKS, "reason" => why.reason()).increment(1);
                return self.fallback(router, primary, &run).await;
            }
        };
        let error = match self.on_replica(router, replica, replayed, &run).await {
            Ok(value) => return Ok(value),
            Err(e) if is_connection_error(&e) => {
                router.failed(replica, &e);
                e
            }
            // A replica cancels reads that conflict with replaying WAL; the
            // replica is fine, the read just needs another server.
            Err(e) if is_recovery_conflict(&e) => e,
            // Any other error may still be the replica's, e.g. a table a
            // migration just created that it has not replayed yet. The
            // primary is the authority: a read that fails there too is the
            // statement's own fault, and that error is the one returned.
            Err(e) => {
                tracing::debug!(replica = replica.index, error = %e, "read failed on a replica; retrying on the primary");
                metrics::counter!(names::FALLBACKS, "reason" => "replica_error").increment(1);
                return self.fallback(router, primary, &run).await;
            }
        };
        metrics::counter!(names::RETRIES).increment(1);
        tracing::debug!(replica = replica.index, %error, "read failed on a replica; retrying once elsewhere");
        match router.choose(min_lsn, Some(replica.index)) {
            Ok((other, replayed)) => {
                let result = self.on_replica(router, other, replayed, &run).await;
                if let Err(e) = &result {
                    if is_connection_error(e) {
                        router.failed(other, e);
                    }
                }
                Ok(result?)
            }
            Err(_) => {
                metrics::counter!(names::FALLBACKS, "reason" => "retry").increment(1);
                self.fallback(router, primary, &run).await
            }
        }
    }

    async fn on_replica<T, F, Fut>(
        &self,
        router: &Router,
        replica: &crate::router::Replica,
        replayed: Lsn,
        run: &F,
    ) -> Result<T, sqlx::Error>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let _in_flight = router.start(replica);
        count_query(&replica.pool, Some(&replica.label));
        let value = run(replica.pool.clone()).await?;
        self.record(ReadSource {
            served_by: ServedBy::Replica(replica.index),
            replayed: Some(replayed),
        });
        Ok(value)
    }

    async fn on_primary<T, F, Fut>(&self, primary: &PgPool, run: &F) -> Result<T, DbError>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        count_query(primary, None);
        let value = run(primary.clone()).await?;
        self.record(ReadSource::PRIMARY);
        Ok(value)
    }

    /// A read the replicas could not take, on the primary within its share
    /// for such reads: past it the read fails "unavailable" instead of
    /// taking the connections writes need (pgcat's lesson: never un-ban
    /// everything, never let fallback reads swamp the primary).
    async fn fallback<T, F, Fut>(
        &self,
        router: &Router,
        primary: &PgPool,
        run: &F,
    ) -> Result<T, DbError>
    where
        F: Fn(PgPool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let Some(_permit) = router.fallback_permit().await else {
            metrics::counter!(names::SHED).increment(1);
            return Err(DbError::Unavailable(sqlx::Error::PoolTimedOut));
        };
        self.on_primary(primary, run).await
    }

    /// Runs a read on SQLite: reads on the reader pool (SQLite's "replica",
    /// which is never behind), primary reads on the writer.
    async fn sqlite_read<T, F, Fut>(
        &self,
        (writer, readers): (&SqlitePool, &SqlitePool),
        target: Target,
        run: F,
    ) -> Result<T, DbError>
    where
        F: FnOnce(SqlitePool) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let (pool, source, label) = match target {
            Target::Read => (
                readers,
                ReadSource {
                    served_by: ServedBy::Replica(0),
                    replayed: None,
                },
                Some(SharedString::const_str("0")),
            ),
            Target::Primary => (writer, ReadSource::PRIMARY, None),
        };
        count_query(pool, label.as_ref());
        let value = run(pool.clone()).await?;
        self.record(source);
        Ok(value)
    }

    pub(crate) async fn fetch_all<T: AnyRow>(
        &self,
        target: Target,
        stmt: &impl SqlxBinder,
    ) -> Result<Vec<T>, DbError> {
        let persistent = self.persistent();
        match &self.inner.pools {
            Pools::Postgres { primary, router } => {
                let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
                let sql = sql.as_str();
                self.pg_read(primary, router.as_deref(), target, |pool| {
                    let values = values.clone();
                    async move {
                        sqlx::query_as_with::<_, T, _>(sql, values)
                            .persistent(persistent)
                            .fetch_all(&pool)
                            .await
                    }
                })
                .await
            }
            Pools::Sqlite { writer, readers } => {
                let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
                self.sqlite_read((writer, readers), target, |pool| async move {
                    sqlx::query_as_with::<_, T, _>(&sql, values)
                        .fetch_all(&pool)
                        .await
                })
                .await
            }
        }
    }

    pub(crate) async fn fetch_optional<T: AnyRow>(
        &self,
        target: Target,
        stmt: &impl SqlxBinder,
    ) -> Result<Option<T>, DbError> {
        let persistent = self.persistent();
        match &self.inner.pools {
            Pools::Postgres { primary, router } => {
                let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
                let sql = sql.as_str();
                self.pg_read(primary, router.as_deref(), target, |pool| {
                    let values = values.clone();
                    async move {
                        sqlx::query_as_with::<_, T, _>(sql, values)
                            .persistent(persistent)
                            .fetch_optional(&pool)
                            .await
                    }
                })
                .await
            }
            Pools::Sqlite { writer, readers } => {
                let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
                self.sqlite_read((writer, readers), target, |pool| async move {
                    sqlx::query_as_with::<_, T, _>(&sql, values)
                        .fetch_optional(&pool)
                        .await
                })
                .await
            }
        }
    }

    /// Runs a statement whose single row holds one integer (a count, a sum).
    pub(crate) async fn fetch_i64(
        &self,
        target: Target,
        stmt: &impl SqlxBinder,
    ) -> Result<i64, DbError> {
        let persistent = self.persistent();
        match &self.inner.pools {
            Pools::Postgres { primary, router } => {
                let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
                let sql = sql.as_str();
                self.pg_read(primary, router.as_deref(), target, |pool| {
                    let values = values.clone();
                    async move {
                        sqlx::query_scalar_with::<_, i64, _>(sql, values)
                            .persistent(persistent)
                            .fetch_one(&pool)
                            .await
                    }
                })
                .await
            }
            Pools::Sqlite { writer, readers } => {
                let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
                self.sqlite_read((writer, readers), target, |pool| async move {
                    sqlx::query_scalar_with::<_, i64, _>(&sql, values)
                        .fetch_one(&pool)
                        .await
                })
                .await
            }
        }
    }

    /// Runs one write statement on its own; returns the rows it affected.
    /// On PostgreSQL, for work that cannot be cancelled (no gate in its
    /// context), the statement commits by itself, without BEGIN and COMMIT
    /// round trips; when it changed rows, its commit position is recorded
    /// in the context as [`Tx::commit`] does. Work behind a gate (a request)
    /// runs it in a transaction: a statement that waits for a lock can then
    /// be cancelled, as it could not be once sent on its own.
    pub(crate) async fn execute(&self, stmt: &impl SqlxBinder) -> Result<u64, DbError> {
        let primary = match &self.inner.pools {
            Pools::Postgres { primary, .. }
                if !self.ctx.as_ref().is_some_and(ReadCtx::is_gated) =>
            {
                primary
            }
            _ => {
                let mut tx = self.begin().await?;
                let n = tx.execute(stmt).await?;
                tx.commit().await?;
                return Ok(n);
            }
        };
        note_wait(primary, None);
        let mut conn = primary.acquire().await?;
        let n = primary_execute(&mut conn, self.persistent(), stmt).await?;
        if let Some(ctx) = self.ctx.as_ref().filter(|_| n > 0) {
            ctx.wrote(commit_position(&mut conn, self.persistent()).await);
        }
        Ok(n)
    }

    /// Runs one write statement whose `RETURNING` clause `T` decodes (on
    /// PostgreSQL it also returns `live_token`, see `repo::token_column`),
    /// and names the write by its [`Token`]; `None` when it touched no row.
    /// Commits and records its position as [`Db::execute`] does.
    pub(crate) async fn write_returning<T: AnyRow>(
        &self,
        stmt: &impl SqlxBinder,
    ) -> Result<Option<(T, Token)>, DbError> {
        let primary = match &self.inner.pools {
            Pools::Postgres { primary, .. }
                if !self.ctx.as_ref().is_some_and(ReadCtx::is_gated) =>
            {
                primary
            }
            _ => {
                let mut tx = self.begin().await?;
                let Some(row) = tx.write_returning::<T>(stmt).await? else {
                    return Ok(None);
                };
                let token = tx.token().await?;
                tx.commit().await?;
                return Ok(Some((row, token)));
            }
        };
        note_wait(primary, None);
        let mut conn = primary.acquire().await?;
        let Some(row) = primary_fetch(&mut conn, self.persistent(), stmt).await? else {
            return Ok(None);
        };
        let decoded = T::from_row(&row)?;
        let token = pg_token(&row)?;
        if let Some(ctx) = self.ctx.as_ref() {
            ctx.wrote(commit_position(&mut conn, self.persistent()).await);
        }
        Ok(Some((decoded, token)))
    }

    /// Starts a transaction on the primary.
    pub(crate) async fn begin(&self) -> Result<Tx, DbError> {
        let kind = match &self.inner.pools {
            Pools::Postgres { primary, .. } => {
                note_wait(primary, None);
                let mut conn = primary.acquire().await?;
                PgTm::begin(&mut conn, None).await?;
                TxKind::Postgres(PgTx {
                    conn,
                    open: true,
                    token: None,
                    persistent: self.persistent(),
                    // The commit position is read only when someone can
                    // use it: a context to record it in (the session's
                    // read-your-writes, in the cache with or without
                    // replicas).
                    report_lsn: self.ctx.is_some(),
                })
            }
            Pools::Sqlite { writer, .. } => TxKind::Sqlite(writer.begin().await?, None),
        };
        Ok(Tx {
            kind,
            ctx: self.ctx.clone(),
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
        let Pools::Postgres { primary, .. } = &self.inner.pools else {
            return Ok(None);
        };
        let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
        let sql = format!("EXPLAIN {sql}");
        Ok(Some(
            sqlx::query_scalar_with::<_, String, _>(&sql, values)
                .fetch_all(primary)
                .await?,
        ))
    }
}

/// Counts a statement for its pool, and whether it found the pool full
/// (it then waits for a connection).
fn count_query<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, replica: Option<&SharedString>) {
    match replica {
        None => metrics::counter!(names::QUERIES, "target" => "primary").increment(1),
        Some(label) => {
            metrics::counter!(names::QUERIES, "target" => "replica", "replica" => label.clone())
                .increment(1)
        }
    }
    note_wait(pool, replica);
}

/// Counts a wait when the pool has no idle connection and cannot open one.
fn note_wait<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, replica: Option<&SharedString>) {
    if pool.num_idle() > 0 || pool.size() < pool.options().get_max_connections() {
        return;
    }
    match replica {
        None => metrics::counter!(names::POOL_WAITS, "target" => "primary").increment(1),
        Some(label) => {
            metrics::counter!(names::POOL_WAITS, "target" => "replica", "replica" => label.clone())
                .increment(1)
        }
    }
}

fn pool_gauges<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, replica: Option<&SharedString>) {
    let (size, idle) = (f64::from(pool.size()), pool.num_idle() as f64);
    match replica {
        None => {
            metrics::gauge!(names::POOL_SIZE, "target" => "primary").set(size);
            metrics::gauge!(names::POOL_IDLE, "target" => "primary").set(idle);
        }
        Some(label) => {
            metrics::gauge!(names::POOL_SIZE, "target" => "replica", "replica" => label.clone())
                .set(size);
            metrics::gauge!(names::POOL_IDLE, "target" => "replica", "replica" => label.clone())
                .set(idle);
        }
    }
}

/// The background task of one [`Db`]: probes replicas and refreshes pool
/// gauges every `every`. It holds the handle only weakly between rounds, so
/// dropping the last [`Db`] (or closing it) ends it.
async fn monitor(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    // After a stall (a loaded machine), probe once, not in a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        match &inner.pools {
            Pools::Postgres { primary, router } => {
                if primary.is_closed() {
                    return;
                }
                pool_gauges(primary, None);
                if let Some(router) = router {
                    router.probe_all().await;
                    for replica in &router.replicas {
                        pool_gauges(&replica.pool, Some(&replica.label));
                    }
                }
            }
            Pools::Sqlite { writer, readers } => {
                if writer.is_closed() {
                    return;
                }
                pool_gauges(writer, None);
                pool_gauges(readers, Some(&SharedString::const_str("0")));
            }
        }
    }
}

/// A transaction on the primary; rolled back when dropped uncommitted.
pub(crate) struct Tx {
    kind: TxKind,
    ctx: Option<ReadCtx>,
}

enum TxKind {
    Postgres(PgTx),
    /// With the token the transaction took from `change_seq`, once it has.
    Sqlite(Transaction<'static, Sqlite>, Option<Token>),
}

/// A PostgreSQL transaction that keeps its connection after COMMIT, to read
/// the commit's WAL position on it (sqlx's `Transaction` hands the
/// connection back to the pool inside `commit`).
struct PgTx {
    conn: PoolConnection<Postgres>,
    open: bool,
    /// The transaction's id, once a `RETURNING` reported it.
    token: Option<Token>,
    persistent: bool,
    report_lsn: bool,
}

impl Drop for PgTx {
    fn drop(&mut self) {
        if self.open {
            // What sqlx's own `Transaction` does on drop: queue a ROLLBACK,
            // which the pool flushes before the connection is reused.
            PgTm::start_rollback(&mut self.conn);
        }
    }
}

impl Tx {
    pub(crate) async fn execute(&mut self, stmt: &impl SqlxBinder) -> Result<u64, DbError> {
        Ok(match &mut self.kind {
            TxKind::Postgres(tx) => primary_execute(&mut tx.conn, tx.persistent, stmt).await?,
            TxKind::Sqlite(tx, _) => {
                let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
                sqlx::query_with(&sql, values)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
        })
    }

    /// Runs a write statement with a `RETURNING` clause that `T` decodes;
    /// `None` when it touched no row.
    pub(crate) async fn write_returning<T: AnyRow>(
        &mut self,
        stmt: &impl SqlxBinder,
    ) -> Result<Option<T>, DbError> {
        match &mut self.kind {
            TxKind::Postgres(tx) => {
                let Some(row) = primary_fetch(&mut tx.conn, tx.persistent, stmt).await? else {
                    return Ok(None);
                };
                tx.token = Some(pg_token(&row)?);
                Ok(Some(T::from_row(&row)?))
            }
            TxKind::Sqlite(tx, _) => {
                let (sql, values) = stmt.build_sqlx(SqliteQueryBuilder);
                Ok(sqlx::query_as_with::<_, T, _>(&sql, values)
                    .fetch_optional(&mut **tx)
                    .await?)
            }
        }
    }

    /// The transaction's [`Token`]. On PostgreSQL a `RETURNING` of
    /// [`Tx::write_returning`] reported it; on SQLite the first call moves
    /// `change_seq` on, inside this transaction, so a read sees the counter
    /// and the rows change together.
    pub(crate) async fn token(&mut self) -> Result<Token, DbError> {
        match &mut self.kind {
            TxKind::Postgres(tx) => tx.token.ok_or_else(|| {
                DbError::Config("a write reported no transaction id (RETURNING live_token)".into())
            }),
            TxKind::Sqlite(tx, token) => {
                if let Some(token) = token {
                    return Ok(*token);
                }
                let n = sqlx::query_scalar::<_, i64>(
                    "UPDATE change_seq SET n = n + 1 WHERE id = 1 RETURNING n",
                )
                .fetch_one(&mut **tx)
                .await?;
                let t = Token(u64::try_from(n).unwrap_or(0));
                *token = Some(t);
                Ok(t)
            }
        }
    }

    /// Commits; with a context, returns the commit's position (on
    /// PostgreSQL the primary's WAL position after it, on SQLite
    /// [`sqlite_commit_position`]) and records it in the context, so the
    /// context's later reads (replicas, cache) see this write.
    ///
    /// Fails with [`DbError::Cancelled`], and rolls back, when the context's
    /// gate was cancelled first.
    pub(crate) async fn commit(self) -> Result<Option<Lsn>, DbError> {
        let Tx { kind, ctx } = self;
        if !ctx.as_ref().is_none_or(ReadCtx::pass_gate) {
            return Err(DbError::Cancelled);
        }
        match kind {
            TxKind::Postgres(mut tx) => {
                PgTm::commit(&mut tx.conn).await?;
                tx.open = false;
                if !tx.report_lsn {
                    return Ok(None);
                }
                let lsn = commit_position(&mut tx.conn, tx.persistent).await;
                if let Some(ctx) = &ctx {
                    ctx.wrote(lsn);
                }
                Ok(Some(lsn))
            }
            TxKind::Sqlite(tx, _) => {
                tx.commit().await?;
                let position = sqlite_commit_position();
                if let Some(ctx) = &ctx {
                    ctx.wrote(position);
                }
                Ok(Some(position))
            }
        }
    }
}

/// Runs one write statement on a primary connection, counted as a primary
/// query; returns the rows it affected.
async fn primary_execute(
    conn: &mut PoolConnection<Postgres>,
    persistent: bool,
    stmt: &impl SqlxBinder,
) -> Result<u64, sqlx::Error> {
    metrics::counter!(names::QUERIES, "target" => "primary").increment(1);
    let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
    Ok(sqlx::query_with(&sql, values)
        .persistent(persistent)
        .execute(&mut **conn)
        .await?
        .rows_affected())
}

/// Runs one write statement with a `RETURNING` clause on a primary
/// connection, counted as a primary query; the row it returned, if any.
async fn primary_fetch(
    conn: &mut PoolConnection<Postgres>,
    persistent: bool,
    stmt: &impl SqlxBinder,
) -> Result<Option<PgRow>, sqlx::Error> {
    metrics::counter!(names::QUERIES, "target" => "primary").increment(1);
    let (sql, values) = stmt.build_sqlx(PostgresQueryBuilder);
    sqlx::query_with(&sql, values)
        .persistent(persistent)
        .fetch_optional(&mut **conn)
        .await
}

/// The transaction id a PostgreSQL write returned as `live_token`.
fn pg_token(row: &PgRow) -> Result<Token, DbError> {
    use sqlx::Row;
    let text: String = row.try_get("live_token")?;
    text.parse::<u64>()
        .map(Token)
        .map_err(|_| DbError::Config(format!("not a transaction id: {text:?}")))
}

/// The primary's WAL position, read on `conn` right after a commit returned
/// on it: at or after the commit record. Failing to read it must not fail a
/// write that is already durable: the position is then one no replica
/// reaches, so the context's reads go to the primary, which is slower but
/// never stale.
async fn commit_position(conn: &mut PoolConnection<Postgres>, persistent: bool) -> Lsn {
    match sqlx::query_scalar::<_, String>("SELECT pg_current_wal_insert_lsn()::text")
        .persistent(persistent)
        .fetch_one(&mut **conn)
        .await
    {
        Ok(text) => text.parse().unwrap_or(Lsn::MAX),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the commit's WAL position; this context reads from the primary");
            Lsn::MAX
        }
    }
}

/// The position of a SQLite commit. SQLite has no replica to lag behind it,
/// but the cache orders writes and reads by position all the same (settling
/// invalidations, a session reading its own writes), so commits get one:
/// strictly increasing in the process, which is the one that owns the
/// database file, and starting from the wall clock in microseconds so that
/// positions keep growing across restarts. Reads on SQLite never wait for a
/// position (every reader sees every commit).
fn sqlite_commit_position() -> Lsn {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
    let next = |last: u64| (last + 1).max(now);
    let last = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(next(last)))
        .unwrap_or_else(|last| last);
    Lsn::from_u64(next(last))
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
