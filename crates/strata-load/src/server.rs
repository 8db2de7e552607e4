//! What the load tool reads from the server under test besides its answers:
//! its memory (`/proc/PID/status`) and its Prometheus counters (`/metrics`).
//! Never fails a run: a figure it cannot read is reported as missing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// The server's resident memory around the run, in KiB.
#[derive(Debug, Clone, Serialize)]
pub struct RssReport {
    pub pid: u32,
    /// `VmRSS` before the logins.
    pub before_kib: u64,
    /// `VmRSS` after the measured phase.
    pub after_kib: u64,
    /// The largest `VmRSS` sampled (every 100 ms) during the run.
    pub peak_sampled_kib: u64,
    /// `VmHWM` at the end: the process's peak since it started.
    pub hwm_kib: u64,
}

impl RssReport {
    pub fn line(&self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        format!(
            "pid {}: {:.1} MiB before, {:.1} MiB after, {:.1} MiB peak during the run (VmHWM {:.1} MiB)",
            self.pid,
            mib(self.before_kib),
            mib(self.after_kib),
            mib(self.peak_sampled_kib),
            mib(self.hwm_kib)
        )
    }
}

/// `(VmRSS, VmHWM)` in KiB, or `None` when the process is gone or this is not Linux.
pub fn read_rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// Samples a process's RSS until stopped.
pub(crate) struct RssSampler {
    pid: u32,
    before: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Fails when the process cannot be read at all, so a wrong pid is
    /// reported at once rather than as an empty figure at the end.
    pub fn start(pid: u32) -> anyhow::Result<RssSampler> {
        let (before, _) = read_rss(pid)
            .ok_or_else(|| anyhow::anyhow!("cannot read /proc/{pid}/status: no such process?"))?;
        let peak = Arc::new(AtomicU64::new(before));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (peak, stop) = (peak.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((rss, _)) = read_rss(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Ok(RssSampler {
            pid,
            before,
            peak,
            stop,
            task,
        })
    }

    pub async fn finish(self) -> RssReport {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let (after, hwm) = read_rss(self.pid).unwrap_or((0, 0));
        RssReport {
            pid: self.pid,
            before_kib: self.before,
            after_kib: after,
            peak_sampled_kib: self.peak.load(Ordering::Relaxed).max(after),
            hwm_kib: hwm,
        }
    }
}

/// The counters the server's `/metrics` gained during the run.
///
/// It diffs every `strata_*_total` and `tiered_cache_*_total` series between
/// a scrape just before the measured phase (after the logins and any
/// warm-up) and one after it, and derives
/// the shares: `strata_db_queries_total` by `target`, and from the cache's
/// hits, misses and fills of data views (session lookups left out) the hit
/// ratio per layer, overall, and the share of reads that reached a database.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MetricsReport {
    pub url: String,
    /// Why there are no figures (the route answered 404, the server has no
    /// such metric yet, ...); `None` when both scrapes worked.
    pub unavailable: Option<String>,
    /// Increase of every `strata_*_total` series, keyed by its full name with labels.
    pub counters: BTreeMap<String, f64>,
    /// Increase of `strata_db_queries_total` by `target` (`primary`, `replica`).
    pub db_queries_by_target: BTreeMap<String, f64>,
    /// Hits / (hits + misses) by cache `layer`, and `all`: reads answered
    /// by either layer / reads.
    pub cache_hit_ratio_by_layer: BTreeMap<String, f64>,
    /// Cache fills (each one a database read) / reads of cached views.
    pub db_read_share: Option<f64>,
    /// Reads that missed only because the reader's session had just changed
    /// the view (read-your-writes: an entry other sessions were served
    /// did not have the write yet) / reads of cached views.
    pub own_write_miss_share: Option<f64>,
}

impl MetricsReport {
    pub fn line(&self) -> String {
        if let Some(why) = &self.unavailable {
            return format!("not available from {} ({why})", self.url);
        }
        let mut parts = Vec::new();
        let total: f64 = self.db_queries_by_target.values().sum();
        if total > 0.0 {
            for (target, n) in &self.db_queries_by_target {
                parts.push(format!(
                    "{target} queries {n:.0} ({:.1} %)",
                    n / total * 100.0
                ));
            }
        } else {
            parts.push("no strata_db_queries_total".to_owned());
        }
        for (layer, ratio) in &self.cache_hit_ratio_by_layer {
            parts.push(format!("cache {layer} hit ratio {:.1} %", ratio * 100.0));
        }
        if let Some(share) = self.db_read_share {
            parts.push(format!("reads reaching a database {:.1} %", share * 100.0));
        }
        if let Some(share) = self.own_write_miss_share {
            parts.push(format!(
                "reads missing for their own session's write {:.1} %",
                share * 100.0
            ));
        }
        parts.join(", ")
    }
}

/// Scrapes `/metrics` (with a bearer token when the server wants one).
pub(crate) struct MetricsScraper {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl MetricsScraper {
    pub fn new(client: reqwest::Client, url: String, token: Option<String>) -> MetricsScraper {
        MetricsScraper { client, url, token }
    }

    pub async fn scrape(&self) -> Result<BTreeMap<String, f64>, String> {
        let mut request = self.client.get(&self.url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| format!("{e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let text = response.text().await.map_err(|e| format!("{e}"))?;
        Ok(parse_counters(&text))
    }

    pub fn diff(
        &self,
        before: Result<BTreeMap<String, f64>, String>,
        after: Result<BTreeMap<String, f64>, String>,
    ) -> MetricsReport {
        let mut report = MetricsReport {
            url: self.url.clone(),
            ..Default::default()
        };
        let (before, after) = match (before, after) {
            (Ok(b), Ok(a)) => (b, a),
            (Err(e), _) | (_, Err(e)) => {
                report.unavailable = Some(e);
                return report;
            }
        };
        let (mut fills, mut behind_own) = (0.0, 0.0);
        for (series, value) in &after {
            let gained = value - before.get(series).copied().unwrap_or(0.0);
            report.counters.insert(series.clone(), gained);
            let (name, labels) = split_series(series);
            match name {
                "strata_db_queries_total" => {
                    let target = label(labels, "target").unwrap_or("unlabelled").to_owned();
                    *report.db_queries_by_target.entry(target).or_default() += gained;
                }
                _ if label(labels, "label") == Some("sessions") => {}
                "tiered_cache_fills_total" => fills += gained,
                "tiered_cache_behind_own_total" => behind_own += gained,
                "tiered_cache_hits_total" | "tiered_cache_misses_total" => {
                    let layer = label(labels, "layer").unwrap_or("all").to_owned();
                    // Accumulate hits in the ratio map's slot as (hits, total) below.
                    let entry = report
                        .cache_hit_ratio_by_layer
                        .entry(format!("{layer}\u{0}{name}"))
                        .or_default();
                    *entry += gained;
                }
                _ => {}
            }
        }
        // Turn the raw (layer, name) sums into ratios.
        let raw = std::mem::take(&mut report.cache_hit_ratio_by_layer);
        let mut per_layer: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (key, n) in raw {
            let (layer, name) = key.split_once('\u{0}').expect("joined above");
            let slot = per_layer.entry(layer.to_owned()).or_default();
            if name == "tiered_cache_hits_total" {
                slot.0 += n;
            }
            slot.1 += n;
        }
        // Every read is looked up in L1 first (an L1 miss when L1 is off).
        let reads = per_layer.get("l1").map_or(0.0, |l| l.1);
        let hits: f64 = per_layer.values().map(|l| l.0).sum();
        for (layer, (hits, total)) in per_layer {
            if total > 0.0 {
                report.cache_hit_ratio_by_layer.insert(layer, hits / total);
            }
        }
        if reads > 0.0 {
            report
                .cache_hit_ratio_by_layer
                .insert("all".to_owned(), hits / reads);
            report.db_read_share = Some(fills / reads);
            report.own_write_miss_share = Some(behind_own / reads);
        }
        if after
            .keys()
            .all(|k| !k.starts_with("strata_db_queries_total"))
        {
            report.unavailable = Some("the server exports no strata_db_queries_total".to_owned());
        }
        report
    }
}

/// Every `strata_*_total` and `tiered_cache_*_total` sample of a Prometheus
/// text exposition.
fn parse_counters(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        let ours = line.starts_with("strata_") || line.starts_with("tiered_cache_");
        if line.is_empty() || line.starts_with('#') || !ours {
            continue;
        }
        // `name{labels} value [timestamp]`; label values may hold spaces, so
        // split after the closing brace when there is one.
        let (series, rest) = match line.rfind('}') {
            Some(end) => (&line[..=end], &line[end + 1..]),
            None => match line.split_once(char::is_whitespace) {
                Some((s, r)) => (s, r),
                None => continue,
            },
        };
        let (name, _) = split_series(series);
        if !name.ends_with("_total") {
            continue;
        }
        if let Some(Ok(value)) = rest.split_whitespace().next().map(str::parse::<f64>) {
            out.insert(series.to_owned(), value);
        }
    }
    out
}

fn split_series(series: &str) -> (&str, &str) {
    match series.split_once('{') {
        Some((name, labels)) => (name, labels.trim_end_matches('}')),
        None => (series, ""),
    }
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_diffed_by_target_and_layer() {
        let scraper = MetricsScraper::new(
            reqwest::Client::new(),
            "http://127.0.0.1:1/metrics".into(),
            None,
        );
        let before = parse_counters(
            "# TYPE strata_db_queries_total counter\nstrata_db_queries_total{target=\"primary\"} 10\nstrata_db_queries_total{target=\"replica\",replica=\"0\"} 5\ntiered_cache_hits_total{layer=\"l1\",label=\"contacts.list\"} 1\ntiered_cache_hits_total{layer=\"l1\",label=\"sessions\"} 1\n",
        );
        let after = parse_counters(
            "strata_db_queries_total{target=\"primary\"} 20\nstrata_db_queries_total{target=\"replica\",replica=\"0\"} 35\ntiered_cache_hits_total{layer=\"l1\",label=\"contacts.list\"} 10\ntiered_cache_misses_total{layer=\"l1\",label=\"contacts.list\"} 1\ntiered_cache_hits_total{layer=\"l1\",label=\"sessions\"} 50\ntiered_cache_fills_total{label=\"contacts.list\",outcome=\"stored\"} 1\ntiered_cache_behind_own_total{label=\"contacts.list\"} 1\nstrata_db_pool_connections 4\n",
        );
        let report = scraper.diff(Ok(before), Ok(after));
        assert_eq!(report.unavailable, None);
        assert_eq!(report.db_queries_by_target["primary"], 10.0);
        assert_eq!(report.db_queries_by_target["replica"], 30.0);
        assert_eq!(report.cache_hit_ratio_by_layer["l1"], 0.9);
        // Session lookups are not reads of data: left out.
        assert_eq!(report.cache_hit_ratio_by_layer["all"], 0.9);
        assert_eq!(report.db_read_share, Some(0.1));
        assert_eq!(report.own_write_miss_share, Some(0.1));
        assert!(!report.counters.contains_key("strata_db_pool_connections"));
    }

    #[test]
    fn rss_of_this_process_is_readable() {
        let (rss, hwm) = read_rss(std::process::id()).expect("linux /proc");
        assert!(rss > 0 && hwm >= rss);
    }
}
