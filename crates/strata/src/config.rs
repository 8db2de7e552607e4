//! The server's configuration: one typed struct read once at start from
//! flags and the environment (clap), validated, then passed down.
//! Nothing else in the crate reads environment variables, bar the service
//! manager's socket-activation protocol (`LISTEN_FDS`) in `listen.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

/// Every setting `strata` reads, shared by all subcommands.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// The primary database: `sqlite://path` (created when missing) or
    /// `postgres://user@host/db`. Writes always go here.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite://./data/strata.db",
        global = true
    )]
    pub database_url: String,

    /// Comma-separated read replicas (PostgreSQL). Reads go there; unset
    /// means reads go to the primary.
    #[arg(
        long,
        env = "DATABASE_READ_URL",
        value_name = "DATABASE_READ_URL",
        value_delimiter = ',',
        global = true
    )]
    pub database_read_url: Vec<String>,

    /// Redis for the shared cache (L2), the invalidation bus and sessions.
    /// Unset: L1 only and sessions in the database (one instance).
    #[arg(long, env = "REDIS_URL", value_name = "REDIS_URL", value_parser = parse_redis_url, global = true)]
    pub redis_url: Option<String>,

    /// Address the API listens on.
    #[arg(
        long,
        env = "STRATA_LISTEN",
        value_name = "STRATA_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Bearer token for the operator routes; unset hides them (404).
    #[arg(
        long,
        env = "STRATA_ADMIN_TOKEN",
        value_name = "STRATA_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,

    /// Add `Secure` to the session cookie (set it when serving over HTTPS).
    #[arg(long, env = "STRATA_COOKIE_SECURE", value_name = "STRATA_COOKIE_SECURE", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub cookie_secure: bool,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "STRATA_BODY_LIMIT", value_name = "STRATA_BODY_LIMIT", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..), global = true)]
    pub body_limit: u32,

    /// How long an idle session stays valid, in seconds; each use extends it.
    #[arg(long, env = "STRATA_SESSION_TTL", value_name = "STRATA_SESSION_TTL", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..=31_536_000), global = true)]
    pub session_ttl_secs: u64,

    /// Longest time a request may take before it is answered 503, in seconds.
    #[arg(long, env = "STRATA_REQUEST_TIMEOUT", value_name = "STRATA_REQUEST_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub request_timeout_secs: u64,

    /// How long a client may take to send a request's headers, in seconds;
    /// also how long an idle keep-alive connection stays open. Keep it above
    /// the keep-alive timeout of any proxy in front (nginx's upstream
    /// default is 60 s), so the proxy never reuses a connection that is
    /// closing.
    #[arg(long, env = "STRATA_HEADER_TIMEOUT", value_name = "STRATA_HEADER_TIMEOUT", default_value_t = 75, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub header_timeout_secs: u64,

    /// Most client connections served at once; beyond it new connections
    /// wait in the kernel's queue. Each takes a file descriptor: raise the
    /// process's limit to match (`LimitNOFILE` in the systemd units).
    #[arg(long, env = "STRATA_MAX_CONNECTIONS", value_name = "STRATA_MAX_CONNECTIONS", default_value_t = 25_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub max_connections: u32,

    /// Largest number of connections in each database pool.
    #[arg(long, env = "STRATA_DB_MAX_CONNECTIONS", value_name = "STRATA_DB_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub db_max_connections: u32,

    /// Largest number of connections in each replica's pool (default: the
    /// same as the primary's).
    #[arg(long, env = "STRATA_DB_REPLICA_MAX_CONNECTIONS", value_name = "STRATA_DB_REPLICA_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1000), global = true)]
    pub db_replica_max_connections: Option<u32>,

    /// How long a statement waits for a primary connection before the
    /// request is answered 503, in milliseconds.
    #[arg(long, env = "STRATA_DB_ACQUIRE_TIMEOUT_MS", value_name = "STRATA_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=600_000), global = true)]
    pub db_acquire_timeout_ms: u64,

    /// How long a read waits for a replica connection before that replica
    /// is banned and the read retried elsewhere, in milliseconds.
    #[arg(long, env = "STRATA_DB_REPLICA_ACQUIRE_TIMEOUT_MS", value_name = "STRATA_DB_REPLICA_ACQUIRE_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=600_000), global = true)]
    pub db_replica_acquire_timeout_ms: u64,

    /// A replica further behind the primary than this (milliseconds,
    /// measured by WAL positions) serves no reads until it catches up.
    #[arg(long, env = "STRATA_REPLICA_MAX_LAG_MS", value_name = "STRATA_REPLICA_MAX_LAG_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000), global = true)]
    pub replica_max_lag_ms: u64,

    /// Prepare and cache statements per connection (fastest). Keep `true`
    /// behind PgBouncer 1.21+ with `max_prepared_statements` set; `false`
    /// sends statements unnamed (see docs).
    #[arg(long, env = "STRATA_DB_PERSISTENT_STATEMENTS", value_name = "STRATA_DB_PERSISTENT_STATEMENTS", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub db_persistent_statements: bool,

    /// On SIGTERM/SIGINT, how long `/readyz` answers 503 while still serving
    /// before the listener closes (let load balancers notice), in seconds.
    #[arg(long, env = "STRATA_SHUTDOWN_GRACE", value_name = "STRATA_SHUTDOWN_GRACE", default_value_t = 0.0, value_parser = parse_seconds, global = true)]
    pub shutdown_grace_secs: f64,

    /// After the listener closes, the longest wait for in-flight requests
    /// before the process exits anyway, in seconds.
    #[arg(long, env = "STRATA_DRAIN_TIMEOUT", value_name = "STRATA_DRAIN_TIMEOUT", default_value_t = 30.0, value_parser = parse_seconds, global = true)]
    pub drain_timeout_secs: f64,

    /// Writes (create, patch, delete) a session may make per second on
    /// average before answering 429 with `Retry-After`.
    #[arg(long, env = "STRATA_WRITE_RATE", value_name = "STRATA_WRITE_RATE", default_value_t = 20.0, value_parser = parse_rate, global = true)]
    pub write_rate: f64,

    /// Writes a session may make in a burst above that rate.
    #[arg(long, env = "STRATA_WRITE_BURST", value_name = "STRATA_WRITE_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub write_burst: u32,

    /// Take the client address from the last `X-Forwarded-For` entry (set it
    /// only behind a proxy that writes that header), for login throttling.
    #[arg(long, env = "STRATA_TRUST_FORWARDED_FOR", value_name = "STRATA_TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub trust_forwarded_for: bool,

    /// Failed logins allowed per email, and per client address ten times as
    /// many, within the throttle window before logins answer 429.
    #[arg(long, env = "STRATA_LOGIN_MAX_FAILURES", value_name = "STRATA_LOGIN_MAX_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub login_max_failures: u32,

    /// The login throttle window, in seconds.
    #[arg(long, env = "STRATA_LOGIN_WINDOW", value_name = "STRATA_LOGIN_WINDOW", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub login_window_secs: u64,

    /// Which cache serves reads: `tiered` (views in the process, kept exact
    /// under writes; with REDIS_URL every instance's in step over Redis),
    /// `l2` (Redis only, writes drop lists), `off`.
    #[arg(long, env = "STRATA_CACHE_MODE", value_name = "STRATA_CACHE_MODE", value_enum, default_value_t = CacheMode::Tiered, global = true)]
    pub cache_mode: CacheMode,

    /// Upper bound of the in-process cache (L1: views and session copies), in MiB.
    #[arg(long, env = "STRATA_CACHE_L1_MB", value_name = "STRATA_CACHE_L1_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576), global = true)]
    pub cache_l1_mb: u64,

    /// How long a cached list (its pages and total) lives, in seconds.
    #[arg(long, env = "STRATA_CACHE_TTL_LISTS", value_name = "STRATA_CACHE_TTL_LISTS", default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub cache_ttl_lists_secs: u64,

    /// How long cached dashboard stats live, in seconds (at most 60 in
    /// tiered mode: they depend on the clock).
    #[arg(long, env = "STRATA_CACHE_TTL_STATS", value_name = "STRATA_CACHE_TTL_STATS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub cache_ttl_stats_secs: u64,

    /// `l2` mode: how long, in milliseconds, a cached view may still be
    /// served to other sessions after a write changed it (its writer never
    /// is). The contract allows 1 s; 0 drops views at every write. Tiered
    /// mode changes views in place and does not use it.
    #[arg(long, env = "STRATA_CACHE_SETTLE_MS", value_name = "STRATA_CACHE_SETTLE_MS", default_value_t = 750, value_parser = clap::value_parser!(u64).range(0..=1000), global = true)]
    pub cache_settle_ms: u64,

    /// How long a cached object lives, in seconds.
    #[arg(long, env = "STRATA_CACHE_TTL_OBJECTS", value_name = "STRATA_CACHE_TTL_OBJECTS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub cache_ttl_objects_secs: u64,

    /// Bind the listen address with SO_REUSEPORT, so a new process can
    /// listen on the same port while the old one drains (zero-downtime
    /// restarts without socket activation). `false` makes a busy port an
    /// error. Not used when systemd passes the socket (LISTEN_FDS).
    #[arg(long, env = "STRATA_REUSEPORT", value_name = "STRATA_REUSEPORT", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub reuseport: bool,
}

/// Which cache layers serve reads (`STRATA_CACHE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheMode {
    /// Views in the process, kept exact by every write's change record (in
    /// step across instances over Redis).
    Tiered,
    /// Redis only: every read costs a round trip (for comparison).
    L2,
    /// No cache: every read goes to the database (for comparison).
    Off,
}

impl Config {
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.shutdown_grace_secs)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout_secs)
    }

    pub fn login_window(&self) -> Duration {
        Duration::from_secs(self.login_window_secs)
    }

    /// Whether the primary is the embedded SQLite database.
    pub fn is_embedded(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }

    /// The storage layer's part of the configuration.
    pub fn db(&self) -> strata_db::DbConfig {
        let mut db = strata_db::DbConfig::new(&self.database_url);
        db.read_urls = self
            .database_read_url
            .iter()
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect();
        db.max_connections = self.db_max_connections;
        db.replica_max_connections = self.db_replica_max_connections;
        db.acquire_timeout = Duration::from_millis(self.db_acquire_timeout_ms);
        db.replica_acquire_timeout = Duration::from_millis(self.db_replica_acquire_timeout_ms);
        db.replicas.max_lag = Duration::from_millis(self.replica_max_lag_ms);
        db.persistent_statements = self.db_persistent_statements;
        db
    }
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 1_000_000.0 => Ok(rate),
        _ => Err("must be a number of writes per second above 0".to_owned()),
    }
}

fn parse_seconds(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(secs) if (0.0..=3600.0).contains(&secs) => Ok(secs),
        _ => Err("must be a number of seconds from 0 to 3600".to_owned()),
    }
}

fn parse_redis_url(raw: &str) -> Result<String, String> {
    if raw.starts_with("redis://")
        || raw.starts_with("rediss://")
        || raw.starts_with("redis+unix://")
    {
        Ok(raw.to_owned())
    } else {
        Err("must start with redis://, rediss:// or redis+unix://".to_owned())
    }
}
