//! `strata-load`: the command line over [`strata_load::run`]. Parses options,
//! prints the table and writes the files; all the work is in the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use strata_load::{LoadConfig, Mode};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Profile {
    /// 30 s: logins, then 25 s closed loop, 32 users, 10 ms think time.
    Smoke,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LoopKind {
    Closed,
    Open,
}

/// Simulates users of a Strata server seeded with `strata seed` and reports
/// latency per endpoint class. Options given explicitly override the profile.
#[derive(Debug, Parser)]
#[command(name = "strata-load", version)]
struct Cli {
    /// A preset; the other options default to it.
    #[arg(long, value_enum)]
    profile: Option<Profile>,
    /// Base URL of a server; repeat for several (round-robin per virtual user).
    #[arg(long = "target", default_value = "http://127.0.0.1:8080")]
    targets: Vec<String>,
    /// How many tenants were seeded (`strata seed --tenants N`).
    #[arg(long)]
    tenants: Option<u32>,
    /// The seeded users' password.
    #[arg(long, default_value = "strata-demo")]
    password: String,
    /// Share of the mix's requests that write, in percent (the mix is
    /// designed at 10); the reads keep their proportions.
    #[arg(long, default_value_t = f64::from(strata_load::designed_write_percent()))]
    write_percent: f64,
    /// Zipf exponent of the users' tenant choice (0 = even).
    #[arg(long, default_value_t = 1.0)]
    skew: f64,
    /// closed: users wait for answers and think; open: a fixed arrival rate.
    #[arg(long, value_enum)]
    mode: Option<LoopKind>,
    /// Virtual users (closed loop) or logged-in sessions (open loop).
    #[arg(long)]
    users: Option<usize>,
    /// Mean think time between a user's requests, closed loop.
    #[arg(long)]
    think_ms: Option<u64>,
    /// Arrival rate in requests per second, open loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Most requests outstanding at once, open loop.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// Length of the measured phase (after the logins).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Run the mix this long first, unrecorded (the server's counters are
    /// read after it too), so a cache is measured in use, not filling up.
    #[arg(long, default_value_t = 0.0)]
    warmup_secs: f64,
    /// Per-request timeout.
    #[arg(long, default_value_t = 10.0)]
    timeout_secs: f64,
    /// Seeds every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The server's process id: report its RSS (from /proc/PID/status).
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's Prometheus metrics, scraped before and after the run.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Bearer token for --metrics-url.
    #[arg(long, env = "STRATA_ADMIN_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the report as a Markdown section here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// The Markdown section's title.
    #[arg(long, default_value = "strata-load run")]
    markdown_title: String,
    /// Allow targets off the loopback interface.
    #[arg(long)]
    allow_remote: bool,
}

fn config(cli: &Cli) -> anyhow::Result<LoadConfig> {
    let mut config = LoadConfig::smoke(cli.targets.clone());
    let (default_users, default_think, default_duration) = match cli.profile {
        Some(Profile::Smoke) => (32, 10, 25.0),
        None => (32, 100, 60.0),
    };
    let users = cli.users.unwrap_or(default_users);
    config.mode = match (cli.mode, cli.rate) {
        (Some(LoopKind::Open), rate) | (None, rate @ Some(_)) => Mode::Open {
            rate: rate.context("--mode open needs --rate")?,
            users,
            max_in_flight: cli.max_in_flight,
        },
        _ => Mode::Closed {
            users,
            think: Duration::from_millis(cli.think_ms.unwrap_or(default_think)),
        },
    };
    config.tenants = cli.tenants.unwrap_or(5);
    config.password = cli.password.clone();
    config.skew = cli.skew;
    config.write_percent = cli.write_percent;
    config.duration = Duration::from_secs_f64(cli.duration_secs.unwrap_or(default_duration));
    config.warmup = Duration::try_from_secs_f64(cli.warmup_secs)
        .context("--warmup-secs must be a number of seconds, 0 or more")?;
    config.timeout = Duration::from_secs_f64(cli.timeout_secs);
    config.seed = cli.seed;
    config.server_pid = cli.server_pid;
    config.metrics_url = cli.metrics_url.clone();
    config.metrics_token = cli.metrics_token.clone();
    config.allow_remote = cli.allow_remote;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = config(&cli)?;
    let report = strata_load::run(&config).await?;
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        std::fs::write(path, report.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cli.markdown {
        std::fs::write(path, report.markdown(&cli.markdown_title))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
