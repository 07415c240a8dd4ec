//! The fair queue as the pool gate: one [`FairQueue`] per registry pool,
//! sized by a [`PoolScraper`] from the replicas' own vLLM metrics, and the
//! live fairness telemetry exported on `/metrics`.
//!
//! Pools are read from the registry at start; a changed pool list or replica
//! set takes a restart (tenants, weights and limits reload live).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;
use tenant_registry::Registry;
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, PoolLabel};
use crate::pool::fair_queue::{
    self, FairQueue, QueueConfig, QueueError, SchedulingPolicy, Ticket, jains_index,
};
use crate::pool::gate::{GateError, PermitGuard, PoolGate, PoolPermit};
use crate::pool::metrics::PoolScraper;
use crate::pool::models::PoolModels;

/// How long a tenant whose queue is full should wait before retrying.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Period of the telemetry update, and the window of the live Jain's index.
const TELEMETRY_PERIOD: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolTenantLabel {
    pool: String,
    tenant: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Default)]
struct Telemetry {
    service: Family<PoolTenantLabel, FloatGauge>,
    queue_depth: Family<PoolTenantLabel, Gauge>,
    in_flight: Family<PoolTenantLabel, Gauge>,
    jain: Family<PoolLabel, FloatGauge>,
    capacity: Family<PoolLabel, Gauge>,
    over_cap: Family<PoolLabel, Gauge>,
}

impl Telemetry {
    fn register(&self, metrics: &mut Metrics) {
        let r = metrics.registry_mut();
        r.register(
            "queue_service_weighted_tokens",
            "Weighted token service received (w_in*in + w_out*out over tenant weight)",
            self.service.clone(),
        );
        r.register(
            "queue_depth",
            "Requests waiting in the pool queue",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_in_flight",
            "Requests admitted and running",
            self.in_flight.clone(),
        );
        r.register(
            "queue_jains_index",
            "Jain's fairness index of weighted service over tenants backlogged through the last 2 s (1 with fewer than two)",
            self.jain.clone(),
        );
        r.register(
            "pool_capacity",
            "Requests the pool admits at once (from replica metrics)",
            self.capacity.clone(),
        );
        r.register(
            "pool_over_cap",
            "Requests running above the pool's capacity, on the light-tenant reserve",
            self.over_cap.clone(),
        );
    }
}

struct PoolQueue {
    queue: FairQueue,
    _scraper: Option<PoolScraper>,
}

/// Per-pool fair admission.
pub struct FairGate {
    pools: HashMap<String, PoolQueue>,
    telemetry_task: Option<JoinHandle<()>>,
}

impl FairGate {
    /// Queues for every pool of `registry`, scrapers for pools with replicas
    /// (their model cards go to `models`), and the telemetry task. Must run
    /// inside the tokio runtime.
    pub fn new(
        registry: &Registry,
        policy: SchedulingPolicy,
        metrics: &mut Metrics,
        models: &PoolModels,
    ) -> Arc<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        let pools: HashMap<String, PoolQueue> = registry
            .config()
            .pools
            .iter()
            .map(|(name, pool)| {
                let queue = FairQueue::new(QueueConfig::for_pool(pool, policy.clone()));
                let scraper = PoolScraper::spawn(
                    name.to_string(),
                    pool.clone(),
                    queue.clone(),
                    models.clone(),
                    client.clone(),
                );
                (
                    name.to_string(),
                    PoolQueue {
                        queue,
                        _scraper: scraper,
                    },
                )
            })
            .collect();
        let telemetry = Telemetry::default();
        telemetry.register(metrics);
        let queues: Vec<(String, FairQueue)> = pools
            .iter()
            .map(|(n, p)| (n.clone(), p.queue.clone()))
            .collect();
        let telemetry_task = tokio::spawn(update_telemetry(queues, telemetry));
        Arc::new(Self {
            pools,
            telemetry_task: Some(telemetry_task),
        })
    }
}

impl Drop for FairGate {
    fn drop(&mut self) {
        if let Some(task) = self.telemetry_task.take() {
            task.abort();
        }
    }
}

struct FairPermit(fair_queue::QueuePermit);

impl PermitGuard for FairPermit {
    fn settle(&mut self, real_in: u64, real_out: u64) {
        self.0.settle(real_in, real_out);
    }
}

#[async_trait]
impl PoolGate for FairGate {
    async fn acquire(
        &self,
        pool: &str,
        ticket: Ticket,
        deadline: Instant,
    ) -> Result<PoolPermit, GateError> {
        // llm-policy only routes to registry pools; anything else has no queue.
        let Some(pool_queue) = self.pools.get(pool) else {
            return Ok(PoolPermit::none());
        };
        match pool_queue
            .queue
            .acquire(ticket, tokio::time::Instant::from_std(deadline))
            .await
        {
            Ok(permit) => Ok(PoolPermit::new(FairPermit(permit))),
            Err(QueueError::QueueFull { .. }) => Err(GateError::QueueFull {
                pool: pool.to_owned(),
                retry_after: FULL_RETRY_AFTER,
            }),
            Err(QueueError::Timeout { waited }) => Err(GateError::QueueTimeout {
                pool: pool.to_owned(),
                waited,
            }),
        }
    }
}

async fn update_telemetry(queues: Vec<(String, FairQueue)>, t: Telemetry) {
    // Per (pool, tenant): service and whether it was backlogged at the last tick.
    let mut previous: HashMap<(String, String), (f64, bool)> = HashMap::new();
    let mut ticker = tokio::time::interval(TELEMETRY_PERIOD);
    loop {
        ticker.tick().await;
        for (pool, queue) in &queues {
            let stats = queue.snapshot();
            let pool_label = PoolLabel { pool: pool.clone() };
            t.capacity
                .get_or_create(&pool_label)
                .set(i64::from(stats.capacity));
            t.over_cap
                .get_or_create(&pool_label)
                .set(i64::from(stats.in_flight.saturating_sub(stats.capacity)));
            let mut window = Vec::new();
            for ts in &stats.tenants {
                let label = PoolTenantLabel {
                    pool: pool.clone(),
                    tenant: ts.tenant.clone(),
                };
                t.service.get_or_create(&label).set(ts.service);
                t.queue_depth
                    .get_or_create(&label)
                    .set(i64::from(ts.queued));
                t.in_flight
                    .get_or_create(&label)
                    .set(i64::from(ts.in_flight));
                let key = (pool.clone(), ts.tenant.clone());
                let backlogged = ts.queued > 0;
                let (before, was_backlogged) = previous
                    .insert(key, (ts.service, backlogged))
                    .unwrap_or((ts.service, false));
                // Only tenants backlogged through the whole window are owed an
                // equal share; one that merely had a request queued at a tick
                // did not ask for more than it got.
                if backlogged && was_backlogged {
                    window.push(ts.service - before);
                }
            }
            // Fewer than two backlogged tenants cannot be treated unequally:
            // 1, not the last contested value, which an alert would keep
            // firing on long after the contention ended.
            t.jain.get_or_create(&pool_label).set(if window.len() >= 2 {
                jains_index(&window)
            } else {
                1.0
            });
        }
    }
}
