//! The cache's operator routes (`STRATA_ADMIN_TOKEN`): counters since the
//! last reset, health, and reset. Never shows a key or a tenant: counters
//! are per view (`contacts.list`, `dashboard`, `sessions`, …).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use tiered_cache::{L2Status, LabelStats, LayerStats as Layer, StatsSnapshot};

use super::metrics::authorize;
use crate::app::AppState;
use crate::cache::SESSIONS;
use crate::http::AppError;

#[derive(Serialize)]
struct Metrics {
    mode: &'static str,
    /// Share of data reads (every view but sessions) answered by L1 or L2.
    hit_ratio: f64,
    /// Data reads that reached the database (fills), and their share.
    database_reads: u64,
    database_read_ratio: f64,
    l1: Layer,
    l2: Layer,
    fills: u64,
    fills_stored: u64,
    fills_refused: u64,
    fills_discarded: u64,
    fill_errors: u64,
    coalesced: u64,
    stale_served: u64,
    invalidations: u64,
    l2_errors: u64,
    l2_timeouts: u64,
    l2_skipped: u64,
    sync_timeouts: u64,
    bus_connected: bool,
    l1_entries: u64,
    l1_bytes: u64,
    l1_max_bytes: u64,
    /// Per view; `sessions` is the local copy of sessions.
    views: std::collections::BTreeMap<String, LabelStats>,
    /// The live store (tiered mode): records applied, resyncs, views dropped, its size.
    /// Its entries and bytes are also in `l1_entries` and `l1_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<crate::cache::live::LiveCounts>,
}

fn metrics_of(mode: &'static str, s: StatsSnapshot, l1_max_bytes: u64) -> Metrics {
    let data = || {
        s.labels
            .iter()
            .filter(|(l, _)| *l != SESSIONS)
            .map(|(_, v)| v)
    };
    let sum = |f: fn(&LabelStats) -> u64| data().map(f).sum::<u64>();
    let (l1_hits, l1_misses) = (sum(|v| v.l1.hits), sum(|v| v.l1.misses));
    let (l2_hits, l2_misses) = (sum(|v| v.l2.hits), sum(|v| v.l2.misses));
    // With L1 off every read is an L1 miss; reads are what reached L1.
    let reads = l1_hits + l1_misses;
    let fills = sum(|v| v.fills);
    let ratio = |n: u64| {
        if reads == 0 {
            0.0
        } else {
            n as f64 / reads as f64
        }
    };
    Metrics {
        mode,
        hit_ratio: ratio(l1_hits + l2_hits),
        database_reads: fills,
        database_read_ratio: ratio(fills),
        l1: Layer::new(l1_hits, l1_misses),
        l2: Layer::new(l2_hits, l2_misses),
        fills,
        fills_stored: sum(|v| v.fills_stored),
        fills_refused: sum(|v| v.fills_refused),
        fills_discarded: sum(|v| v.fills_discarded),
        fill_errors: sum(|v| v.fill_errors + v.fill_timeouts),
        coalesced: sum(|v| v.coalesced),
        stale_served: sum(|v| v.stale_served),
        invalidations: sum(|v| v.invalidations),
        l2_errors: s.l2_errors,
        l2_timeouts: s.l2_timeouts,
        l2_skipped: s.l2_skipped,
        sync_timeouts: s.sync_timeouts,
        bus_connected: s.bus_connected,
        l1_entries: s.l1_entries,
        l1_bytes: s.l1_bytes,
        l1_max_bytes,
        views: s.labels,
        live: None,
    }
}

fn mode_name(app: &AppState) -> &'static str {
    match app.cache.mode() {
        crate::config::CacheMode::Tiered if app.config.redis_url.is_some() => "tiered",
        crate::config::CacheMode::Tiered => "l1",
        crate::config::CacheMode::L2 => "l2",
        crate::config::CacheMode::Off => "off",
    }
}

/// `GET /api/admin/cache/metrics`.
pub async fn metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    authorize(&app, &headers)?;
    let mut snapshot = app.cache.snapshot().unwrap_or_default();
    let live = app.cache.live().map(|l| l.counts());
    if let Some(l) = &live {
        snapshot.l1_entries += l.entries;
        snapshot.l1_bytes += l.bytes;
    }
    let mut m = metrics_of(mode_name(&app), snapshot, app.cache.l1_max_bytes());
    m.live = live;
    Ok(Json(m).into_response())
}

/// `GET /api/admin/cache/health`: `degraded` while Redis is configured but
/// not answering (the cache then serves from L1 and the database).
pub async fn health(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    authorize(&app, &headers)?;
    let Some(cache) = app.cache.tiered() else {
        return Ok(Json(json!({
            "status": "ok",
            "mode": "off",
            "l1": {"status": "disabled"},
            "l2": {"status": "disabled", "latency_ms": null},
        }))
        .into_response());
    };
    let h = cache.health().await;
    let mut s = cache.snapshot();
    if let Some(l) = app.cache.live() {
        let (entries, bytes) = l.size();
        s.l1_entries += entries;
        s.l1_bytes += bytes;
    }
    let l2 = match h.l2 {
        L2Status::Disabled => "disabled",
        L2Status::Up => "up",
        L2Status::Down => "down",
    };
    let l1_on = app.cache.l1_max_bytes() > 0;
    Ok(Json(json!({
        "status": if h.l2 == L2Status::Down || !h.bus_connected { "degraded" } else { "ok" },
        "live": app.cache.live().map(|l| json!({"trusted": l.trusted()})),
        "mode": mode_name(&app),
        "l1": {
            "status": if l1_on { "up" } else { "disabled" },
            "entries": s.l1_entries,
            "bytes": s.l1_bytes,
            "max_bytes": app.cache.l1_max_bytes(),
        },
        "l2": {
            "status": l2,
            "latency_ms": h.l2_latency_micros.map(|us| us as f64 / 1000.0),
            "breaker": h.breaker,
            "bus_connected": h.bus_connected,
        },
    }))
    .into_response())
}

/// `POST /api/admin/cache/reset`: the counters start again from zero; the
/// cached data stays.
pub async fn reset(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    authorize(&app, &headers)?;
    if let Some(cache) = app.cache.tiered() {
        cache.reset_stats();
    }
    if let Some(live) = app.cache.live() {
        live.reset_counts();
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
