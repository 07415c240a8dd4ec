//! Room in a pool, as its vLLM replicas report it on `/metrics`.
//!
//! A scraper per pool reads every replica each `metrics_interval_ms` and
//! gives the pool's [`FairQueue`] a capacity of `max_in_flight_per_replica`
//! for every replica with room. A replica has no room when it says it is
//! busy (too many requests waiting, KV cache too full) or when it has not
//! answered well for three intervals: a replica we cannot see is not one we
//! send more work to.
//!
//! The same rounds read each replica's `/v1/models` (see [`crate::pool::models`]):
//! at first contact, then every [`MODELS_REFRESH`]. A replica that stops
//! answering keeps the models it last reported.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tenant_registry::Pool;
use thiserror::Error;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use crate::pool::fair_queue::FairQueue;
use crate::pool::models::{
    MAX_MODELS_BODY, ModelLens, PoolModels, min_over_replicas, parse_models,
};

/// Requests queued inside the replica's engine.
pub const NUM_REQUESTS_WAITING: &str = "vllm:num_requests_waiting";
/// Requests in the replica's running batch.
pub const NUM_REQUESTS_RUNNING: &str = "vllm:num_requests_running";
/// KV-cache usage, 0..=1.
pub const KV_CACHE_USAGE: &str = "vllm:kv_cache_usage_perc";
/// Name of the KV-cache gauge before vLLM 0.10 renamed it.
pub const LEGACY_KV_CACHE_USAGE: &str = "vllm:gpu_cache_usage_perc";

/// Metrics older than this many scrape intervals count as saturated.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// How often a replica's `/v1/models` is read again once known: its
/// `max_model_len` only changes when it restarts with other flags.
pub const MODELS_REFRESH: Duration = Duration::from_secs(30);
/// Next try for a replica whose `/metrics` answered but `/v1/models` did not.
pub const MODELS_RETRY: Duration = Duration::from_secs(5);

/// How busy one replica says it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaLoad {
    /// Summed over label sets (engines, models).
    pub waiting: f64,
    /// Summed over label sets.
    pub running: f64,
    /// The fullest engine's usage: a fraction is not summed across engines.
    pub kv_cache_usage: Option<f64>,
}

/// Why a scrape did not produce a usable load.
#[derive(Debug, Error)]
pub enum ScrapeError {
    #[error("metrics request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("metrics endpoint answered HTTP {0}")]
    Status(u16),
    #[error("metric {0} is missing")]
    MissingMetric(&'static str),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("/v1/models did not answer a model list")]
    NotAModelList,
}

/// Reads a replica's load out of its exposition. NaN samples are ignored.
pub fn parse_replica_load(text: &str) -> Result<ReplicaLoad, ScrapeError> {
    let mut waiting = None;
    let mut running = None;
    let mut kv = None;
    let mut legacy_kv = None;
    for sample in prom_text::samples(text).filter(|s| !s.value.is_nan()) {
        let add = |total: &mut Option<f64>| *total = Some(total.unwrap_or(0.0) + sample.value);
        let max = |peak: &mut Option<f64>| *peak = Some(peak.unwrap_or(0.0).max(sample.value));
        match sample.name {
            NUM_REQUESTS_WAITING => add(&mut waiting),
            NUM_REQUESTS_RUNNING => add(&mut running),
            KV_CACHE_USAGE => max(&mut kv),
            LEGACY_KV_CACHE_USAGE => max(&mut legacy_kv),
            _ => {}
        }
    }
    Ok(ReplicaLoad {
        waiting: waiting.ok_or(ScrapeError::MissingMetric(NUM_REQUESTS_WAITING))?,
        running: running.unwrap_or(0.0),
        kv_cache_usage: kv.or(legacy_kv),
    })
}

/// Whether a replica takes more work, as of its last scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaHealth {
    Ready,
    /// Over a configured threshold (or a configured metric is missing).
    Busy,
    /// No good scrape for three intervals, or never.
    Stale,
}

/// What the scraper knows of one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    pub replica: String,
    /// Load from the last good scrape.
    pub load: Option<ReplicaLoad>,
    pub last_good: Option<Instant>,
    pub health: ReplicaHealth,
    /// What its `/v1/models` last said (model -> max_model_len).
    pub models: Option<ModelLens>,
}

impl ReplicaStatus {
    fn unseen(replica: &str) -> Self {
        Self {
            replica: replica.to_owned(),
            load: None,
            last_good: None,
            health: ReplicaHealth::Stale,
            models: None,
        }
    }
}

/// Verdict on a load under the pool's thresholds. An unset threshold does
/// not apply; a set one whose metric is absent fails closed.
pub fn load_health(load: &ReplicaLoad, pool: &Pool) -> ReplicaHealth {
    let waiting_ok = pool
        .max_waiting_per_replica
        .is_none_or(|max| load.waiting <= f64::from(max));
    let kv_ok = pool
        .max_kv_cache_usage
        .is_none_or(|max| load.kv_cache_usage.is_some_and(|kv| kv <= max));
    if waiting_ok && kv_ok {
        ReplicaHealth::Ready
    } else {
        ReplicaHealth::Busy
    }
}

fn scrape_interval(pool: &Pool) -> Duration {
    // A zero interval would spin, and a huge one overflow instants; neither
    // bound is a useful scrape period anyway.
    Duration::from_millis(pool.metrics_interval_ms.clamp(10, 3_600_000))
}

/// A replica's health at `now`, from its last good load.
pub fn replica_health(
    load: Option<&ReplicaLoad>,
    last_good: Option<Instant>,
    pool: &Pool,
    now: Instant,
) -> ReplicaHealth {
    let fresh_for = scrape_interval(pool) * STALE_AFTER_INTERVALS;
    match (load, last_good) {
        (Some(load), Some(at)) if now.saturating_duration_since(at) <= fresh_for => {
            load_health(load, pool)
        }
        _ => ReplicaHealth::Stale,
    }
}

/// Room the pool's queue gets: the per-replica cap and light-tenant reserve
/// for each ready replica, as `(capacity, light_reserve)`.
pub fn pool_room(pool: &Pool, replicas: &[ReplicaStatus]) -> (u32, u32) {
    let ready = replicas
        .iter()
        .filter(|r| r.health == ReplicaHealth::Ready)
        .count();
    let ready = u32::try_from(ready).unwrap_or(u32::MAX);
    (
        pool.max_in_flight_per_replica.saturating_mul(ready),
        pool.light_tenant_reserve_per_replica.saturating_mul(ready),
    )
}

/// `path` (starting with `/`) on a replica named `host:port` or by URL.
fn replica_url(replica: &str, path: &str) -> String {
    if replica.contains("://") {
        format!("{}{path}", replica.trim_end_matches('/'))
    } else {
        format!("http://{replica}{path}")
    }
}

async fn scrape(
    client: &reqwest::Client,
    replica: &str,
    timeout: Duration,
) -> Result<ReplicaLoad, ScrapeError> {
    let response = client
        .get(replica_url(replica, "/metrics"))
        .timeout(timeout)
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(ScrapeError::Status(response.status().as_u16()));
    }
    parse_replica_load(&response.text().await?)
}

/// A replica's model cards, reading at most [`MAX_MODELS_BODY`] bytes.
async fn fetch_models(
    client: &reqwest::Client,
    replica: &str,
    timeout: Duration,
) -> Result<ModelLens, ScrapeError> {
    let mut response = client
        .get(replica_url(replica, "/v1/models"))
        .timeout(timeout)
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(ScrapeError::Status(response.status().as_u16()));
    }
    let too_large = ScrapeError::TooLarge(MAX_MODELS_BODY);
    if response
        .content_length()
        .is_some_and(|len| len > MAX_MODELS_BODY as u64)
    {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_MODELS_BODY {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    parse_models(&body).ok_or(ScrapeError::NotAModelList)
}

/// Background task keeping one pool's queue capacity in line with its
/// replicas. Dropping it stops the task; the queue keeps the last capacity.
#[derive(Debug)]
pub struct PoolScraper {
    task: JoinHandle<()>,
    replicas: Arc<Mutex<Vec<ReplicaStatus>>>,
}

impl PoolScraper {
    /// Starts scraping; `None` for a pool without replicas, whose queue
    /// keeps its configured capacity. The replicas' models go to `models`.
    pub fn spawn(
        pool_name: String,
        pool: Pool,
        queue: FairQueue,
        models: PoolModels,
        client: reqwest::Client,
    ) -> Option<Self> {
        if pool.replicas.is_empty() {
            return None;
        }
        let replicas = Arc::new(Mutex::new(
            pool.replicas
                .iter()
                .map(|r| ReplicaStatus::unseen(r))
                .collect(),
        ));
        let task = tokio::spawn(run(
            pool_name,
            pool,
            queue,
            models,
            client,
            replicas.clone(),
        ));
        Some(Self { task, replicas })
    }

    /// Last known status of every replica, in the pool's order.
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for PoolScraper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    pool_name: String,
    pool: Pool,
    queue: FairQueue,
    models: PoolModels,
    client: reqwest::Client,
    shared: Arc<Mutex<Vec<ReplicaStatus>>>,
) {
    let interval = scrape_interval(&pool);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut statuses: Vec<ReplicaStatus> = pool
        .replicas
        .iter()
        .map(|r| ReplicaStatus::unseen(r))
        .collect();
    // When each replica's /v1/models is next read: at once at first.
    let mut models_due = vec![Instant::now(); statuses.len()];
    loop {
        ticker.tick().await;
        // One round never outlasts the interval, so a hung replica cannot
        // delay the verdict on the others: the model cards, when due, are
        // read alongside the metrics, not after them.
        let started = Instant::now();
        let mut round = JoinSet::new();
        for (index, replica) in pool.replicas.iter().enumerate() {
            let client = client.clone();
            let replica = replica.clone();
            let read_models = models_due.get(index).is_some_and(|due| *due <= started);
            round.spawn(async move {
                let load = scrape(&client, &replica, interval);
                if read_models {
                    let (load, cards) =
                        tokio::join!(load, fetch_models(&client, &replica, interval));
                    (index, load, Some(cards))
                } else {
                    (index, load.await, None)
                }
            });
        }
        while let Some(joined) = round.join_next().await {
            let Ok((index, result, cards)) = joined else {
                continue;
            };
            let Some(status) = statuses.get_mut(index) else {
                continue;
            };
            let answered = result.is_ok();
            match result {
                Ok(load) => {
                    status.load = Some(load);
                    status.last_good = Some(Instant::now());
                }
                Err(error) => {
                    tracing::debug!(pool = %pool_name, replica = %status.replica, %error, "scrape failed");
                }
            }
            let next = match cards {
                None => None,
                Some(Ok(lens)) => {
                    status.models = Some(lens);
                    Some(MODELS_REFRESH)
                }
                // A replica that is down is tried again with its metrics;
                // one that answers those but not its cards, less often.
                Some(Err(error)) => {
                    tracing::debug!(pool = %pool_name, replica = %status.replica, %error, "/v1/models failed");
                    Some(if answered {
                        MODELS_RETRY
                    } else {
                        Duration::ZERO
                    })
                }
            };
            if let (Some(next), Some(due)) = (next, models_due.get_mut(index)) {
                *due = started + next;
            }
        }
        let lens = min_over_replicas(statuses.iter().map(|s| s.models.as_ref()));
        if models.set(&pool_name, lens.clone()) {
            tracing::info!(pool = %pool_name, ?lens, "pool max_model_len per model changed");
        }
        let now = Instant::now();
        for status in &mut statuses {
            let health = replica_health(status.load.as_ref(), status.last_good, &pool, now);
            if health != status.health && health == ReplicaHealth::Ready {
                tracing::info!(pool = %pool_name, replica = %status.replica, "replica has room again");
            } else if health != status.health {
                tracing::warn!(pool = %pool_name, replica = %status.replica, ?health, "replica has no room");
            }
            status.health = health;
        }
        let (capacity, light_reserve) = pool_room(&pool, &statuses);
        if capacity != queue.capacity() {
            tracing::info!(pool = %pool_name, capacity, "pool capacity changed");
        }
        queue.set_room(capacity, light_reserve);
        shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone_from(&statuses);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::fair_queue::{QueueConfig, SchedulingPolicy};
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const VLLM_SAMPLE: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
vllm:num_requests_running{engine="2",model_name="odd \"quoted\" {name}, x"} 1 1712345678000
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0
vllm:num_requests_waiting{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
vllm:num_requests_waiting{engine="2",model_name="path\\with\\backslash"} NaN
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.42
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.87
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.04",model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 57.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 57.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.25
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 123456.0
vllm:num_requests_waiting_decoy{engine="0"} 1000
python_gc_objects_collected_total{generation="0"} 8713.0
process_start_time_seconds 1.712345678e+09
this line is not a sample
vllm:num_requests_waiting{engine="3" 7
"#;

    #[test]
    fn reads_a_vllm_exposition() {
        let load = parse_replica_load(VLLM_SAMPLE).unwrap();
        assert_eq!(load.waiting, 5.0);
        assert_eq!(load.running, 6.0);
        assert_eq!(load.kv_cache_usage, Some(0.87));
    }

    #[test]
    fn histogram_bounds_are_labels_not_values() {
        let all: Vec<_> = prom_text::samples(VLLM_SAMPLE).collect();
        let inf = all
            .iter()
            .find(|s| s.name == "vllm:time_to_first_token_seconds_bucket" && s.value.is_infinite());
        assert!(
            inf.is_none(),
            "+Inf is a label value here, not the sample value"
        );
        assert!(
            all.iter()
                .any(|s| s.name == "process_start_time_seconds" && s.value == 1.712345678e9)
        );
    }

    #[test]
    fn legacy_kv_gauge_and_missing_waiting() {
        let load = parse_replica_load(
            "vllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc{engine=\"0\"} 0.5\n",
        )
        .unwrap();
        assert_eq!(load.kv_cache_usage, Some(0.5));
        assert!(matches!(
            parse_replica_load("vllm:num_requests_running 3\n"),
            Err(ScrapeError::MissingMetric(NUM_REQUESTS_WAITING))
        ));
    }

    fn pool(replicas: Vec<String>) -> Pool {
        Pool {
            replicas,
            max_in_flight_per_replica: 4,
            max_waiting_per_replica: Some(10),
            max_kv_cache_usage: Some(0.9),
            metrics_interval_ms: 50,
            ..Pool::default()
        }
    }

    #[test]
    fn thresholds_and_staleness() {
        let pool = pool(vec![]);
        let load = |waiting, kv| ReplicaLoad {
            waiting,
            running: 0.0,
            kv_cache_usage: kv,
        };
        assert_eq!(
            load_health(&load(10.0, Some(0.9)), &pool),
            ReplicaHealth::Ready
        );
        assert_eq!(
            load_health(&load(11.0, Some(0.1)), &pool),
            ReplicaHealth::Busy
        );
        assert_eq!(
            load_health(&load(0.0, Some(0.95)), &pool),
            ReplicaHealth::Busy
        );
        assert_eq!(load_health(&load(0.0, None), &pool), ReplicaHealth::Busy);
        let unlimited = Pool::default();
        assert_eq!(
            load_health(&load(1e9, None), &unlimited),
            ReplicaHealth::Ready
        );

        let now = Instant::now();
        let good = load(0.0, Some(0.1));
        let health = |age_ms| {
            replica_health(
                Some(&good),
                now.checked_sub(Duration::from_millis(age_ms)),
                &pool,
                now,
            )
        };
        assert_eq!(health(150), ReplicaHealth::Ready);
        assert_eq!(health(151), ReplicaHealth::Stale);
        assert_eq!(replica_health(None, None, &pool, now), ReplicaHealth::Stale);
    }

    type Body = Arc<Mutex<Option<String>>>;

    /// A fake replica: serves `body` as its metrics, or HTTP 500 when `None`.
    async fn fake_replica(body: Body) -> (String, JoinHandle<()>) {
        fake_vllm(body, Body::default()).await
    }

    /// A fake replica with model cards too (`GET /v1/models`).
    async fn fake_vllm(metrics: Body, models: Body) -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (metrics, models) = (metrics.clone(), models.clone());
                connections.spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = if request.starts_with(b"GET /v1/models ") {
                        models.lock().unwrap().clone()
                    } else {
                        metrics.lock().unwrap().clone()
                    };
                    let (status, text) = match body {
                        Some(text) => ("200 OK", text),
                        None => ("500 Internal Server Error", String::new()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (addr, server)
    }

    fn metrics(waiting: u32, kv: f64) -> Option<String> {
        Some(format!(
            "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{engine=\"0\"}} {waiting}\nvllm:kv_cache_usage_perc{{engine=\"0\"}} {kv}\n"
        ))
    }

    async fn wait_for_capacity(queue: &FairQueue, capacity: u32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while queue.capacity() != capacity {
            assert!(
                Instant::now() < deadline,
                "capacity stuck at {}",
                queue.capacity()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn scraper_gives_capacity_per_ready_replica_and_drops_stale_ones() {
        let a_body = Arc::new(Mutex::new(metrics(0, 0.2)));
        let b_body = Arc::new(Mutex::new(metrics(2, 0.3)));
        let (a, a_server) = fake_replica(a_body.clone()).await;
        let (b, b_server) = fake_replica(b_body.clone()).await;
        // Slower than `pool()`'s 50 ms so a loaded test machine does not
        // make a healthy replica look stale.
        let pool = Pool {
            metrics_interval_ms: 100,
            ..pool(vec![a, format!("http://{b}")])
        };
        let queue = FairQueue::new(QueueConfig::for_pool(&pool, SchedulingPolicy::default()));
        queue.set_capacity(0);
        let scraper = PoolScraper::spawn(
            "latency".into(),
            pool,
            queue.clone(),
            PoolModels::default(),
            reqwest::Client::new(),
        )
        .unwrap();

        wait_for_capacity(&queue, 8).await;
        assert_eq!(queue.snapshot().light_reserve, 4);
        *b_body.lock().unwrap() = metrics(50, 0.3);
        wait_for_capacity(&queue, 4).await;
        assert_eq!(scraper.replicas()[1].health, ReplicaHealth::Busy);
        assert_eq!(
            queue.snapshot().light_reserve,
            2,
            "the reserve shrinks with the ready replicas"
        );
        *b_body.lock().unwrap() = metrics(0, 0.95);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            queue.snapshot().capacity,
            4,
            "KV cache over threshold keeps b out"
        );

        // a stops answering well: it keeps its room until its last good
        // scrape is three intervals old, then the pool is saturated.
        let failed_at = Instant::now();
        *a_body.lock().unwrap() = None;
        wait_for_capacity(&queue, 0).await;
        // The last good scrape was at most one interval before the failure.
        let waited = failed_at.elapsed();
        assert!(
            waited >= Duration::from_millis(200),
            "stale after {waited:?}"
        );
        assert!(queue.snapshot().saturated);
        assert_eq!(scraper.replicas()[0].health, ReplicaHealth::Stale);

        *a_body.lock().unwrap() = metrics(0, 0.1);
        wait_for_capacity(&queue, 4).await;

        drop(scraper);
        a_server.abort();
        b_server.abort();
    }

    #[test]
    fn pool_without_replicas_is_not_scraped() {
        let queue = FairQueue::new(QueueConfig::for_pool(
            &Pool::default(),
            SchedulingPolicy::default(),
        ));
        assert!(
            PoolScraper::spawn(
                "p".into(),
                Pool::default(),
                queue,
                PoolModels::default(),
                reqwest::Client::new()
            )
            .is_none()
        );
        assert_eq!(
            replica_url("10.0.0.1:8000", "/metrics"),
            "http://10.0.0.1:8000/metrics"
        );
        assert_eq!(
            replica_url("https://r:1/", "/v1/models"),
            "https://r:1/v1/models"
        );
    }

    fn cards(len: u32) -> Option<String> {
        Some(format!(
            r#"{{"object":"list","data":[{{"id":"m","object":"model","owned_by":"vllm","root":"m","parent":null,"max_model_len":{len}}}]}}"#
        ))
    }

    async fn wait_for_limits(models: &PoolModels, want: &[(&str, &str, u32)], within: Duration) {
        let want: Vec<(String, String, u32)> = want
            .iter()
            .map(|(p, m, l)| (p.to_string(), m.to_string(), *l))
            .collect();
        let deadline = Instant::now() + within;
        while models.snapshot() != want {
            assert!(
                Instant::now() < deadline,
                "limits stuck at {:?}",
                models.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn scraper_learns_the_smallest_max_model_len_and_keeps_it() {
        let a_models = Arc::new(Mutex::new(cards(4096)));
        let b_models = Body::default();
        let (a, a_server) =
            fake_vllm(Arc::new(Mutex::new(metrics(0, 0.1))), a_models.clone()).await;
        let (b, b_server) =
            fake_vllm(Arc::new(Mutex::new(metrics(0, 0.1))), b_models.clone()).await;
        let pool = Pool {
            metrics_interval_ms: 50,
            ..pool(vec![a, b])
        };
        let queue = FairQueue::new(QueueConfig::for_pool(&pool, SchedulingPolicy::default()));
        let gauge = Family::<crate::metrics::PoolModelLabel, Gauge>::default();
        let models = PoolModels::new(gauge.clone());
        let scraper = PoolScraper::spawn(
            "latency".into(),
            pool,
            queue,
            models.clone(),
            reqwest::Client::new(),
        )
        .unwrap();
        // b answers its metrics but not its cards: a's alone count.
        wait_for_limits(&models, &[("latency", "m", 4096)], Duration::from_secs(5)).await;
        // b's cards appear (it is retried): the smaller one wins.
        *b_models.lock().unwrap() = cards(2048);
        // The retry is due MODELS_RETRY after b's failed read; allow one
        // more for a loaded machine (a 5 s wait of its own flaked in CI).
        wait_for_limits(&models, &[("latency", "m", 2048)], MODELS_RETRY * 2).await;
        assert_eq!(
            gauge
                .get_or_create(&crate::metrics::PoolModelLabel {
                    pool: "latency".into(),
                    model: "m".into()
                })
                .get(),
            2048
        );
        // b goes away altogether: its last known value stays.
        b_server.abort();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            models.snapshot(),
            vec![("latency".into(), "m".into(), 2048)]
        );
        assert_eq!(
            scraper.replicas()[1].models,
            Some(ModelLens::from([("m".into(), 2048)]))
        );
        drop(scraper);
        a_server.abort();
    }
}
