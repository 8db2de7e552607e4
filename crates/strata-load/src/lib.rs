//! Strata's load tool: virtual users that log in to seeded tenants and use
//! the API as people do, measured with HDR histograms per endpoint class.
//! Never talks to a server that is not on the loopback interface unless told
//! to (`allow_remote`), and never changes data it did not create or was not
//! meant to touch (it only creates contacts and tasks and patches a few fields).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = strata_load::LoadConfig::smoke(vec!["http://127.0.0.1:8080".into()]);
//! let report = strata_load::run(&config).await?;
//! println!("{}", report.table());
//! # Ok(()) }
//! ```
//!
//! Two ways to drive the server:
//! - **closed loop**: `users` virtual users, each sending its next request
//!   after the previous answer and a think time. Throughput follows latency.
//! - **open loop**: requests start at a fixed arrival `rate` whatever the
//!   server does, spread over the logged-in sessions; latency counts from
//!   the moment each request was *scheduled*, so a stalled server cannot hide
//!   its stall by slowing the tool down (no coordinated omission).

mod report;
mod scenario;
mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;
use rand::SeedableRng;
use reqwest::Url;
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use report::{ClassReport, Report};
pub use scenario::Class;
pub use server::{read_rss, MetricsReport, RssReport};

use report::{Recorder, RunFacts};
use scenario::{Planned, UserState};

/// How requests are started.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// `users` virtual users, each waiting for its answer and then a think
    /// time drawn uniformly from 0.5–1.5 × `think`.
    Closed { users: usize, think: Duration },
    /// Requests start at `rate` per second, spread round-robin over `users`
    /// logged-in sessions, with at most `max_in_flight` outstanding.
    ///
    /// The server limits writes per session (`STRATA_WRITE_RATE`, 20/s by
    /// default) and the mix writes 10 %: keep `rate / users` under 200 (or
    /// raise the server's limit), or the report fills with 429s.
    Open {
        rate: f64,
        users: usize,
        max_in_flight: usize,
    },
}

impl Mode {
    fn users(&self) -> usize {
        match self {
            Mode::Closed { users, .. } | Mode::Open { users, .. } => *users,
        }
    }

    fn describe(&self) -> String {
        match self {
            Mode::Closed { users, think } => {
                format!("closed loop, {users} users, think {} ms", think.as_millis())
            }
            Mode::Open {
                rate,
                users,
                max_in_flight,
            } => format!(
                "open loop, {rate} req/s over {users} sessions (at most {max_in_flight} in flight)"
            ),
        }
    }
}

/// Logins in flight at once in the login phase: enough to keep a server's
/// cores busy hashing passwords, few enough that each answers in well under
/// a second.
const LOGINS_AT_ONCE: usize = 16;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URLs (`http://127.0.0.1:8080`); virtual user `i` uses target `i % len`.
    pub targets: Vec<String>,
    /// Tenants seeded with `strata seed --tenants N`: users log in as
    /// `admin@tenant{i}.example` for `i` in `1..=tenants`.
    pub tenants: u32,
    /// The seeded users' password.
    pub password: String,
    /// Zipf exponent of the tenant choice (1.0: tenant `i` gets users in
    /// proportion to `1/i`).
    pub skew: f64,
    pub mode: Mode,
    /// Share of the mix's steps that write, in percent (0 to 100). The mix
    /// is designed at 10 ([`designed_write_percent`]); another share keeps
    /// the reads' proportions among themselves, and the writes'.
    pub write_percent: f64,
    /// The measured phase, after every user has logged in (and the warm-up).
    pub duration: Duration,
    /// The mix runs this long before the measured phase, unrecorded, so that
    /// the figures describe a cache in use rather than one filling from
    /// empty (the server's counters are read after it, too).
    pub warmup: Duration,
    /// Per-request timeout (a timeout is a transport error).
    pub timeout: Duration,
    /// Seeds every random choice: the same seed gives the same users and mix.
    pub seed: u64,
    /// Sample this process's RSS (the server's pid) during the run.
    pub server_pid: Option<u32>,
    /// Scrape these Prometheus metrics before and after the run.
    pub metrics_url: Option<String>,
    /// Bearer token for `metrics_url` (the server's `STRATA_ADMIN_TOKEN`).
    pub metrics_token: Option<String>,
    /// Allow targets that are not on the loopback interface.
    pub allow_remote: bool,
}

impl LoadConfig {
    /// The smoke profile: 30 s in all (logins, then 25 s of a closed loop
    /// of 32 users with a 10 ms think time) over 5 seeded tenants.
    pub fn smoke(targets: Vec<String>) -> LoadConfig {
        LoadConfig {
            targets,
            tenants: 5,
            password: "strata-demo".to_owned(),
            skew: 1.0,
            mode: Mode::Closed {
                users: 32,
                think: Duration::from_millis(10),
            },
            write_percent: f64::from(designed_write_percent()),
            duration: Duration::from_secs(25),
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(10),
            seed: 1,
            server_pid: None,
            metrics_url: None,
            metrics_token: None,
            allow_remote: false,
        }
    }

    fn validate(&self) -> anyhow::Result<Vec<Url>> {
        if self.targets.is_empty() {
            bail!("at least one target is needed");
        }
        if self.tenants == 0 {
            bail!("tenants must be at least 1");
        }
        if self.mode.users() == 0 {
            bail!("users must be at least 1");
        }
        if !(0.0..=100.0).contains(&self.write_percent) {
            bail!("the write share must be a percentage from 0 to 100");
        }
        if let Mode::Open {
            rate,
            max_in_flight,
            ..
        } = &self.mode
        {
            if !(rate.is_finite() && *rate > 0.0) || *max_in_flight == 0 {
                bail!("open loop needs a rate > 0 and max_in_flight ≥ 1");
            }
        }
        self.targets
            .iter()
            .map(|t| {
                let url = Url::parse(t).with_context(|| format!("target {t:?} is not a URL"))?;
                let host = url.host_str().unwrap_or("");
                let loopback = matches!(host, "localhost" | "[::1]")
                    || host
                        .parse::<std::net::Ipv4Addr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if !loopback && !self.allow_remote {
                    bail!("target {t} is not on the loopback interface (allow it explicitly)");
                }
                Ok(url)
            })
            .collect()
    }
}

/// One logged-in virtual user.
struct VirtualUser {
    target: Url,
    token: String,
    state: Mutex<UserState>,
}

struct Shared {
    http: reqwest::Client,
    recorder: Recorder,
}

/// Runs the load and returns what it measured. Fails only when it cannot
/// start (bad configuration, no user could log in); errors during the run
/// are counted in the report.
pub async fn run(config: &LoadConfig) -> anyhow::Result<Report> {
    let targets = config.validate()?;
    let http = reqwest::Client::builder()
        .timeout(config.timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .context("HTTP client")?;
    let shared = Arc::new(Shared {
        http: http.clone(),
        recorder: Recorder::new(),
    });
    let rss = config
        .server_pid
        .map(server::RssSampler::start)
        .transpose()?;
    let scraper = config
        .metrics_url
        .clone()
        .map(|url| server::MetricsScraper::new(http.clone(), url, config.metrics_token.clone()));
    // Login phase: every user logs in once, before the clock starts, a few
    // at a time: a login costs the server a password hash (tens of ms of a
    // core, by design), so hundreds sent at once queue behind each other
    // there and the last ones outlive the request timeout.
    let login_started = Instant::now();
    let logging_in = Arc::new(Semaphore::new(LOGINS_AT_ONCE));
    let mut chooser = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut logins = tokio::task::JoinSet::new();
    let mut users_per_tenant = BTreeMap::new();
    for i in 0..config.mode.users() {
        let tenant = scenario::pick_tenant(&mut chooser, config.tenants, config.skew);
        *users_per_tenant.entry(tenant).or_insert(0usize) += 1;
        let target = targets[i % targets.len()].clone();
        let shared = shared.clone();
        let password = config.password.clone();
        let seed = config.seed;
        let write_percent = config.write_percent;
        let logging_in = logging_in.clone();
        logins.spawn(async move {
            let _turn = logging_in.acquire_owned().await;
            let email = format!("admin@tenant{tenant}.example");
            login(&shared, &target, &email, &password)
                .await
                .map(|token| VirtualUser {
                    target,
                    token,
                    state: Mutex::new(UserState::new(seed, i, write_percent)),
                })
        });
    }
    let mut users = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = logins.join_next().await {
        match joined.context("login task")? {
            Ok(user) => users.push(Arc::new(user)),
            Err(e) => failures.push(e),
        }
    }
    if users.is_empty() {
        bail!(
            "no virtual user could log in: {}",
            failures
                .first()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        );
    }
    let login = login_started.elapsed();

    if !config.warmup.is_zero() {
        // Same users, same mix; what it measures is thrown away.
        let unrecorded = Arc::new(Shared {
            http: http.clone(),
            recorder: Recorder::new(),
        });
        run_phase(&unrecorded, &users, &config.mode, config.warmup).await?;
    }
    // Counted from here: login-time cache warming and the warm-up are not
    // reads of the measured mix.
    let metrics_before = match &scraper {
        Some(s) => Some(s.scrape().await),
        None => None,
    };
    let started = Instant::now();
    run_phase(&shared, &users, &config.mode, config.duration).await?;
    let duration = started.elapsed();

    let rss = match rss {
        Some(sampler) => Some(sampler.finish().await),
        None => None,
    };
    let metrics = match (&scraper, metrics_before) {
        (Some(s), Some(before)) => Some(s.diff(before, s.scrape().await)),
        _ => None,
    };
    Ok(shared.recorder.finish(RunFacts {
        mode: config.mode.describe(),
        targets: config.targets.clone(),
        users: users.len(),
        tenants: config.tenants,
        users_per_tenant,
        duration,
        warmup: config.warmup,
        login,
        rss,
        metrics,
    }))
}

/// Runs the mix for `duration` in the configured mode, recording into `shared`.
async fn run_phase(
    shared: &Arc<Shared>,
    users: &[Arc<VirtualUser>],
    mode: &Mode,
    duration: Duration,
) -> anyhow::Result<()> {
    match mode {
        Mode::Closed { think, .. } => {
            closed_loop(shared, users, *think, Instant::now() + duration).await;
            Ok(())
        }
        Mode::Open {
            rate,
            max_in_flight,
            ..
        } => open_loop(shared, users, *rate, *max_in_flight, duration).await,
    }
}

/// Logs in and returns the bearer token; the attempt is recorded as a `login`.
async fn login(
    shared: &Shared,
    target: &Url,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let url = target.join("/api/auth/login")?;
    let body = serde_json::json!({"email": email, "password": password}).to_string();
    let sent = Instant::now();
    let answer = async {
        let response = shared
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok::<_, reqwest::Error>((status, response.bytes().await?))
    };
    match answer.await {
        Ok((status, bytes)) => {
            shared
                .recorder
                .response(Class::Login, status, sent.elapsed());
            if status != 200 {
                bail!(
                    "login as {email} answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            let value: serde_json::Value = serde_json::from_slice(&bytes)?;
            value["token"]
                .as_str()
                .map(str::to_owned)
                .context("login answer has no token")
        }
        Err(e) => {
            shared.recorder.transport_error(Class::Login, &e);
            Err(e).with_context(|| format!("login as {email}"))
        }
    }
}

async fn closed_loop(
    shared: &Arc<Shared>,
    users: &[Arc<VirtualUser>],
    think: Duration,
    deadline: Instant,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for user in users {
        let (shared, user) = (shared.clone(), user.clone());
        tasks.spawn(async move {
            loop {
                let pause = {
                    let mut state = user.state.lock().expect("user lock");
                    think.mul_f64(state.rng().random_range(0.5..1.5))
                };
                tokio::time::sleep(pause).await;
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                one_request(&shared, &user, now).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn open_loop(
    shared: &Arc<Shared>,
    users: &[Arc<VirtualUser>],
    rate: f64,
    max_in_flight: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (start, mut due) =
        pace(interval, duration).context("starting the open loop's pacer thread")?;
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    while let Some(k) = due.recv().await {
        // The schedule is fixed up front: when the server (or the in-flight
        // cap) holds us back, later requests start late but their latency
        // still counts from their place in the schedule.
        let intended = start + interval * k;
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let user = users[k as usize % users.len()].clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            one_request(&shared, &user, intended).await;
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(max_in_flight as u32).await;
    Ok(())
}

/// The open loop's clock: a thread of its own that sends the number `k` of
/// each request when its time, `start + k × interval`, comes, for `duration`.
///
/// Not `tokio::time::sleep_until`: tokio's timer works in whole
/// milliseconds and fires at the first tick at or after the deadline, so
/// every request started up to a millisecond or more late. Latency counts
/// from the schedule, so that lateness, which is the tool's and not the
/// server's, was added to every figure: on the embedded default at 500
/// req/s the mix's p50 was 1.15–1.46 ms with it, 0.40–0.43 ms with this.
fn pace(
    interval: Duration,
    duration: Duration,
) -> std::io::Result<(Instant, tokio::sync::mpsc::UnboundedReceiver<u32>)> {
    let (due, receiver) = tokio::sync::mpsc::unbounded_channel();
    let start = std::time::Instant::now();
    std::thread::Builder::new()
        .name("open-loop-pacer".to_owned())
        .spawn(move || {
            for k in 0u32.. {
                let intended = start + interval * k;
                if intended >= start + duration {
                    break;
                }
                let now = std::time::Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                }
                if due.send(k).is_err() {
                    break;
                }
            }
        })?;
    Ok((Instant::from_std(start), receiver))
}

/// Sends the user's next request and records it; latency counts from `intended`.
async fn one_request(shared: &Shared, user: &VirtualUser, intended: Instant) {
    let planned: Planned = user.state.lock().expect("user lock").next();
    // Paths are absolute and built from constants and server-given ids.
    let mut url = user.target.join(&planned.path).expect("a valid path");
    if !planned.query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &planned.query {
            pairs.append_pair(k, v);
        }
    }
    let mut request = shared
        .http
        .request(planned.method.clone(), url)
        .bearer_auth(&user.token);
    if let Some(body) = &planned.body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let answer = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok::<_, reqwest::Error>((status, response.bytes().await?))
    };
    match answer.await {
        Ok((status, bytes)) => {
            shared
                .recorder
                .response(planned.class, status, intended.elapsed());
            if (200..300).contains(&status) {
                if let Some(resource) = planned.harvest {
                    user.state
                        .lock()
                        .expect("user lock")
                        .learn(resource, &bytes);
                }
            }
        }
        Err(e) => shared.recorder.transport_error(planned.class, &e),
    }
}

/// The share of the mix designed to write, in percent.
pub fn designed_write_percent() -> u32 {
    scenario::designed_write_percent()
}
