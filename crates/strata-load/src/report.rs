//! Counting and summarising: HDR latency histograms and status counts per
//! endpoint class, and the report rendered as a terminal table, JSON or a
//! Markdown section. Never sends requests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::Class;
use crate::server::{MetricsReport, RssReport};

/// Transport error messages kept as examples in the report.
const ERROR_SAMPLES: usize = 5;

struct ClassStats {
    /// Microseconds, from 1 µs to 1 h, 3 significant digits.
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
}

impl ClassStats {
    fn new() -> ClassStats {
        ClassStats {
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            statuses: BTreeMap::new(),
            transport_errors: 0,
        }
    }
}

/// Shared by every virtual user; one short lock per request, which is
/// nothing next to a loopback round trip.
pub(crate) struct Recorder {
    inner: Mutex<Inner>,
}

struct Inner {
    classes: BTreeMap<Class, ClassStats>,
    error_samples: Vec<String>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            inner: Mutex::new(Inner {
                classes: Class::ALL.iter().map(|c| (*c, ClassStats::new())).collect(),
                error_samples: Vec::new(),
            }),
        }
    }

    /// An answer with this status arrived `latency` after the request was
    /// meant to be sent.
    pub fn response(&self, class: Class, status: u16, latency: Duration) {
        let mut inner = self.inner.lock().expect("recorder lock");
        let stats = inner.classes.get_mut(&class).expect("every class");
        stats
            .latency
            .saturating_record(latency.as_micros().max(1) as u64);
        *stats.statuses.entry(status).or_default() += 1;
    }

    /// The request got no HTTP answer (connect, timeout, broken body).
    pub fn transport_error(&self, class: Class, error: &reqwest::Error) {
        let mut inner = self.inner.lock().expect("recorder lock");
        inner
            .classes
            .get_mut(&class)
            .expect("every class")
            .transport_errors += 1;
        if inner.error_samples.len() < ERROR_SAMPLES {
            let sample = format!("{}: {error:#}", class.name());
            inner.error_samples.push(sample);
        }
    }

    pub(crate) fn finish(&self, run: RunFacts) -> Report {
        let inner = self.inner.lock().expect("recorder lock");
        let secs = run.duration.as_secs_f64().max(1e-9);
        let mut all = ClassStats::new();
        let mut classes = Vec::new();
        for class in Class::ALL {
            let stats = &inner.classes[&class];
            // Logins happen before the measured phase: their rate is per login phase.
            let window = if class == Class::Login {
                run.login.as_secs_f64().max(1e-9)
            } else {
                secs
            };
            classes.push(summarise(class.name(), stats, window));
            if class != Class::Login {
                all.latency.add(&stats.latency).expect("same bounds");
                for (status, n) in &stats.statuses {
                    *all.statuses.entry(*status).or_default() += n;
                }
                all.transport_errors += stats.transport_errors;
            }
        }
        let mut errors_by_status = BTreeMap::new();
        let mut transport_errors = 0;
        for stats in inner.classes.values() {
            for (status, n) in stats.statuses.iter().filter(|(s, _)| **s >= 400) {
                *errors_by_status.entry(*status).or_default() += n;
            }
            transport_errors += stats.transport_errors;
        }
        let all = summarise("all (mix)", &all, secs);
        let writes: u64 = classes
            .iter()
            .zip(Class::ALL)
            .filter(|(_, c)| c.is_write())
            .map(|(r, _)| r.requests)
            .sum();
        Report {
            mode: run.mode,
            targets: run.targets,
            users: run.users,
            tenants: run.tenants,
            users_per_tenant: run.users_per_tenant,
            duration_secs: secs,
            warmup_secs: run.warmup.as_secs_f64(),
            login_secs: run.login.as_secs_f64(),
            requests: classes.iter().map(|c| c.requests).sum(),
            throughput_rps: all.requests as f64 / secs,
            write_share: if all.requests == 0 {
                0.0
            } else {
                writes as f64 / all.requests as f64
            },
            all,
            classes,
            errors_by_status,
            transport_errors,
            transport_error_samples: inner.error_samples.clone(),
            server: run.rss,
            metrics: run.metrics,
        }
    }
}

fn summarise(name: &str, stats: &ClassStats, secs: f64) -> ClassReport {
    let h = &stats.latency;
    let answered: u64 = stats.statuses.values().sum();
    let ms = |micros: u64| micros as f64 / 1000.0;
    let q = |quantile: f64| {
        if h.is_empty() {
            0.0
        } else {
            ms(h.value_at_quantile(quantile))
        }
    };
    ClassReport {
        class: name.to_owned(),
        requests: answered + stats.transport_errors,
        ok: stats
            .statuses
            .iter()
            .filter(|(s, _)| **s < 400)
            .map(|(_, n)| n)
            .sum(),
        http_errors: stats
            .statuses
            .iter()
            .filter(|(s, _)| **s >= 400)
            .map(|(_, n)| n)
            .sum(),
        transport_errors: stats.transport_errors,
        statuses: stats.statuses.clone(),
        rps: (answered + stats.transport_errors) as f64 / secs,
        mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
    }
}

/// Facts about the run that the recorder does not see.
pub(crate) struct RunFacts {
    pub mode: String,
    pub targets: Vec<String>,
    pub users: usize,
    pub tenants: u32,
    pub users_per_tenant: BTreeMap<u32, usize>,
    pub duration: Duration,
    pub warmup: Duration,
    pub login: Duration,
    pub rss: Option<RssReport>,
    pub metrics: Option<MetricsReport>,
}

/// One endpoint class's figures. Latencies are in milliseconds and count
/// from the moment the request was *meant* to be sent (open loop) or was
/// sent (closed loop) to the end of the body, for every HTTP answer
/// whatever its status.
#[derive(Debug, Clone, Serialize)]
pub struct ClassReport {
    pub class: String,
    /// `ok + http_errors + transport_errors`.
    pub requests: u64,
    /// Answers with a status below 400.
    pub ok: u64,
    /// Answers with a status of 400 or more.
    pub http_errors: u64,
    /// Requests that got no HTTP answer.
    pub transport_errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub rps: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `closed (N users, think T ms)` or `open (R req/s, N sessions)`.
    pub mode: String,
    pub targets: Vec<String>,
    /// Virtual users that logged in.
    pub users: usize,
    pub tenants: u32,
    /// How many virtual users each tenant got (tenant number from 1).
    pub users_per_tenant: BTreeMap<u32, usize>,
    /// The measured phase (after every login and the warm-up), in seconds.
    pub duration_secs: f64,
    /// The unrecorded warm-up before it, in seconds (0: none).
    pub warmup_secs: f64,
    /// The login phase, in seconds.
    pub login_secs: f64,
    /// Every request, logins included: the sum of `classes[].requests`.
    pub requests: u64,
    /// Requests of the mix (not logins) per second of the measured phase.
    pub throughput_rps: f64,
    /// Share of the mix's requests that were creates or updates.
    pub write_share: f64,
    /// Every class of the mix together (logins left out).
    pub all: ClassReport,
    /// One entry per class, in [`Class::ALL`] order, logins first.
    pub classes: Vec<ClassReport>,
    /// Statuses of 400 and above, over every class.
    pub errors_by_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub transport_error_samples: Vec<String>,
    /// The server's memory, when `--server-pid` was given.
    pub server: Option<RssReport>,
    /// Counters scraped from the server's `/metrics`, when `--metrics-url` was given.
    pub metrics: Option<MetricsReport>,
}

impl Report {
    /// The report for `class`.
    pub fn class(&self, class: Class) -> &ClassReport {
        &self.classes[Class::ALL
            .iter()
            .position(|c| *c == class)
            .expect("every class")]
    }

    /// Requests of the mix that got a 5xx.
    pub fn server_errors(&self) -> u64 {
        self.errors_by_status
            .iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    /// A plain-text table for the terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "mode: {}", self.mode);
        let _ = writeln!(out, "targets: {}", self.targets.join(", "));
        let _ = writeln!(
            out,
            "users: {} on {} tenants {:?}; logins took {:.1} s; warm-up {:.1} s; measured {:.1} s",
            self.users,
            self.tenants,
            self.users_per_tenant,
            self.login_secs,
            self.warmup_secs,
            self.duration_secs
        );
        let _ = writeln!(
            out,
            "throughput: {:.0} req/s ({} requests in the mix, {:.1} % writes)\n",
            self.throughput_rps,
            self.all.requests,
            self.write_share * 100.0
        );
        let _ = writeln!(
            out,
            "{:<10} {:>9} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "class",
            "requests",
            "req/s",
            "errors",
            "transp",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        for c in self.classes.iter().chain(std::iter::once(&self.all)) {
            let _ = writeln!(
                out,
                "{:<10} {:>9} {:>9.1} {:>7} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                c.class,
                c.requests,
                c.rps,
                c.http_errors,
                c.transport_errors,
                c.p50_ms,
                c.p90_ms,
                c.p99_ms,
                c.p999_ms,
                c.max_ms
            );
        }
        let _ = writeln!(out, "\nerrors by status: {}", self.errors_line());
        for sample in &self.transport_error_samples {
            let _ = writeln!(out, "  transport error: {sample}");
        }
        if let Some(rss) = &self.server {
            let _ = writeln!(out, "server RSS: {}", rss.line());
        }
        if let Some(metrics) = &self.metrics {
            let _ = writeln!(out, "server metrics: {}", metrics.line());
        }
        out
    }

    fn errors_line(&self) -> String {
        if self.errors_by_status.is_empty() && self.transport_errors == 0 {
            return "none".to_owned();
        }
        let mut parts: Vec<String> = self
            .errors_by_status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        if self.transport_errors > 0 {
            parts.push(format!("transport: {}", self.transport_errors));
        }
        parts.join(", ")
    }

    /// A Markdown section (a `###` heading and its tables) for `bench/RESULTS.md`.
    pub fn markdown(&self, title: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {title}\n");
        let _ = writeln!(
            out,
            "{}; targets {}; {} users on {} tenants (users per tenant {:?}); measured {:.1} s after a {:.1} s login phase and a {:.1} s unrecorded warm-up.\n",
            self.mode,
            self.targets.join(", "),
            self.users,
            self.tenants,
            self.users_per_tenant,
            self.duration_secs,
            self.login_secs,
            self.warmup_secs
        );
        let _ = writeln!(
            out,
            "**Throughput: {:.0} req/s** ({} requests in the mix, {:.1} % writes). Errors by status: {}.\n",
            self.throughput_rps,
            self.all.requests,
            self.write_share * 100.0,
            self.errors_line()
        );
        let _ = writeln!(
            out,
            "| class | requests | req/s | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for c in self.classes.iter().chain(std::iter::once(&self.all)) {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                c.class,
                c.requests,
                c.rps,
                c.http_errors + c.transport_errors,
                c.p50_ms,
                c.p90_ms,
                c.p99_ms,
                c.p999_ms,
                c.max_ms
            );
        }
        if let Some(rss) = &self.server {
            let _ = writeln!(out, "\nServer RSS: {}.", rss.line());
        }
        if let Some(metrics) = &self.metrics {
            let _ = writeln!(out, "\nServer metrics: {}.", metrics.line());
        }
        out
    }
}
