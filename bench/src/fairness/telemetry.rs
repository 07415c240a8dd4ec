//! What ratelimit-service itself reports on `/metrics`, read during and
//! after each run: every tenant's wait in the pool queue (its
//! `ratelimit_queue_wait_seconds` histogram), and the live fairness gauges
//! (`ratelimit_queue_service_weighted_tokens`, `ratelimit_queue_depth`,
//! `ratelimit_queue_jains_index`), sampled twice a second. Set next to the
//! client's view they split queueing from everything else on the path, and
//! check the service's own telemetry end to end.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

const FAMILY: &str = "ratelimit_queue_wait_seconds";

/// One tenant's queue wait, as the service's histogram has it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QueueWait {
    pub count: u64,
    pub mean_ms: f64,
    /// Upper bound of the bucket holding the 99th percentile.
    pub p99_le_ms: f64,
}

#[derive(Debug, Default)]
struct Histogram {
    /// `(upper bound in seconds, cumulative count)`.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

/// Queue waits by tenant from a Prometheus exposition. The service also
/// records requests it refused at once (queue full) with a wait of about
/// nothing; `refused_at_once` gives their number per tenant, taken out of
/// the lowest bucket so the figures describe requests that queued.
pub fn queue_waits(
    exposition: &str,
    refused_at_once: &HashMap<String, u64>,
) -> HashMap<String, QueueWait> {
    let mut histograms: HashMap<String, Histogram> = HashMap::new();
    for s in prom_text::samples(exposition) {
        let Some(suffix) = s.name.strip_prefix(FAMILY) else {
            continue;
        };
        let Some(tenant) = s.label("tenant") else {
            continue;
        };
        let h = histograms.entry(tenant).or_default();
        match suffix {
            "_sum" => h.sum = s.value,
            "_count" => h.count = s.value as u64,
            "_bucket" => {
                let le = match s.label("le").as_deref() {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => le.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                h.buckets.push((le, s.value as u64));
            }
            _ => {}
        }
    }
    histograms
        .into_iter()
        .filter_map(|(tenant, mut h)| {
            let refused = refused_at_once.get(&tenant).copied().unwrap_or(0);
            let count = h.count.checked_sub(refused).filter(|n| *n > 0)?;
            h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let target = (0.99 * count as f64).ceil() as u64 + refused;
            let p99 = h
                .buckets
                .iter()
                .find(|(_, cumulative)| *cumulative >= target)
                .map_or(f64::INFINITY, |(le, _)| *le);
            let wait = QueueWait {
                count,
                mean_ms: h.sum / count as f64 * 1000.0,
                p99_le_ms: p99 * 1000.0,
            };
            Some((tenant, wait))
        })
        .collect()
}

/// Fetches ratelimit-service's exposition from its admin listener.
pub async fn fetch(admin_url: &str, token: &str) -> Result<String, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?
        .get(format!("{admin_url}/metrics"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

/// The live fairness gauges of one pool at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Seconds since the scenario start.
    pub at_s: f64,
    /// `ratelimit_queue_service_weighted_tokens` by tenant.
    pub service: HashMap<String, f64>,
    /// `ratelimit_queue_depth` by tenant.
    pub depth: HashMap<String, f64>,
    /// `ratelimit_queue_jains_index` of the pool.
    pub jain: Option<f64>,
}

/// The pool's gauges in an exposition.
pub fn snapshot(exposition: &str, pool: &str, at_s: f64) -> Snapshot {
    let mut snap = Snapshot {
        at_s,
        ..Snapshot::default()
    };
    for s in prom_text::samples(exposition) {
        if s.label("pool").as_deref() != Some(pool) {
            continue;
        }
        let tenant = s.label("tenant");
        match (s.name, tenant) {
            ("ratelimit_queue_service_weighted_tokens", Some(t)) => {
                snap.service.insert(t, s.value);
            }
            ("ratelimit_queue_depth", Some(t)) => {
                snap.depth.insert(t, s.value);
            }
            ("ratelimit_queue_jains_index", None) => snap.jain = Some(s.value),
            _ => {}
        }
    }
    snap
}

/// Reads the gauges every `period` until aborted, into `into`.
pub async fn sample_gauges(
    admin_url: String,
    token: String,
    pool: &'static str,
    epoch: tokio::time::Instant,
    period: Duration,
    into: std::sync::Arc<std::sync::Mutex<Vec<Snapshot>>>,
) {
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        if let Ok(text) = fetch(&admin_url, &token).await {
            let snap = snapshot(&text, pool, epoch.elapsed().as_secs_f64());
            into.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(snap);
        }
    }
}
