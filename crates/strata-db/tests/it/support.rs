//! Fresh, migrated databases for tests: a SQLite file in a temporary folder,
//! or a PostgreSQL database with a unique name that is dropped when the test
//! ends, pass or fail. Never shares a database between tests, so they run in
//! any order and in parallel.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Connection, Executor, FromRow, PgConnection, PgPool, SqlitePool};
use strata_db::{Backend, Db, DbConfig};

/// The server every PostgreSQL test database is created on (trust auth).
/// `STRATA_TEST_POSTGRES_URL` points the tests at another one.
fn admin_url() -> String {
    std::env::var("STRATA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A migrated database of one backend, plus a plain sqlx pool on it for the
/// checks the repository API does not offer.
pub struct TestDb {
    pub db: Db,
    pub raw: Raw,
    // Dropped last (fields drop in order): the database outlives its pools.
    _dir: Option<tempfile::TempDir>,
    _pg: Option<DropDatabase>,
}

/// A plain pool on the test database.
pub enum Raw {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        let path = dir.path().join("strata.db");
        let url = format!("sqlite://{}", path.display());
        let db = Db::connect(&DbConfig::new(&url))
            .await
            .expect("open the SQLite database");
        db.migrate().await.expect("migrate SQLite");
        let raw = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(SqliteConnectOptions::new().filename(&path))
            .await
            .expect("open a second SQLite pool");
        TestDb {
            db,
            raw: Raw::Sqlite(raw),
            _dir: Some(dir),
            _pg: None,
        }
    }

    pub async fn postgres() -> TestDb {
        TestDb::postgres_with("").await
    }

    /// A PostgreSQL database created with these options after `CREATE DATABASE name`
    /// (e.g. a locale).
    pub async fn postgres_with(options: &str) -> TestDb {
        let guard = DropDatabase::create_with(options).await;
        let url = guard.url();
        let db = Db::connect(&DbConfig::new(&url))
            .await
            .expect("open the PostgreSQL database");
        db.migrate().await.expect("migrate PostgreSQL");
        let raw = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("open a second PostgreSQL pool");
        TestDb {
            db,
            raw: Raw::Pg(raw),
            _dir: None,
            _pg: Some(guard),
        }
    }
}

/// A row type that decodes on both backends.
pub trait BothRow:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}
impl<T> BothRow for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

impl Raw {
    /// Every row of a query without parameters (written in SQL both backends read).
    pub async fn rows<T: BothRow>(&self, sql: &str) -> Vec<T> {
        let rows = match self {
            Raw::Pg(pool) => sqlx::query_as::<_, T>(sql).fetch_all(pool).await,
            Raw::Sqlite(pool) => sqlx::query_as::<_, T>(sql).fetch_all(pool).await,
        };
        rows.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The single integer a query returns.
    pub async fn count(&self, sql: &str) -> i64 {
        let n = match self {
            Raw::Pg(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            Raw::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
        };
        n.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs a statement (PostgreSQL only, e.g. `ANALYZE`).
    pub async fn execute(&self, sql: &str) {
        match self {
            Raw::Pg(pool) => pool.execute(sql).await.map(drop),
            Raw::Sqlite(pool) => pool.execute(sql).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn pg(&self) -> &PgPool {
        match self {
            Raw::Pg(pool) => pool,
            Raw::Sqlite(_) => panic!("not a PostgreSQL test database"),
        }
    }
}

/// A PostgreSQL database with a unique name, dropped (connections and all)
/// when the guard is.
pub struct DropDatabase {
    name: String,
}

impl DropDatabase {
    pub async fn create_with(options: &str) -> DropDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "strata_db_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must be running at {}: {e}", admin_url()));
        admin
            .execute(format!(r#"CREATE DATABASE "{name}" {options}"#).as_str())
            .await
            .expect("create the test database");
        // From here on the guard exists, so a failing test still drops it.
        DropDatabase { name }
    }

    pub fn url(&self) -> String {
        let admin = admin_url();
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        format!("{base}/{}", self.name)
    }
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside the test's runtime (where
        // blocking on it would panic): a thread with its own runtime does the
        // work and is waited for, so the database is gone when drop returns.
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        let result = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url()).await?;
                admin.execute(sql.as_str()).await?;
                admin.close().await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!(
                "could not drop test database {}: the dropping thread panicked",
                self.name
            ),
        }
    }
}
