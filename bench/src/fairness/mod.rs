//! `fairness`: does one tenant's burst move another tenant's latency?
//!
//! Two testbeds with the full filter chain and the same small mock pool,
//! one admitting by ratelimit-service's fair queue (VTC), one in arrival
//! order (FIFO). Each scenario of [`plan`] runs against both in turn with
//! the same seeded open-loop arrivals; [`analysis`] turns the requests into
//! per-tenant throughput, TTFT, rejections, Jain's index and service gaps,
//! [`report`] checks them against the targets and writes markdown,
//! JSON and one SVG plot per scenario.

mod analysis;
mod client;
mod driver;
mod live;
mod plan;
mod pool;
mod report;
mod svg;
mod telemetry;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use testbed::{FilterSet, Testbed};

use crate::error::BenchError;
use crate::report::{Host, now_utc, reproduce_command};
use crate::scenario::{Settings, require_built};
use client::TenantClient;
use plan::{Scenario, ScenarioName, Shape};
use pool::{MAX_QUEUE_WAIT_MS, PROBE_TENANT, PoolShape, QueueMode};
use report::{FairnessReport, PLOTS_DIR, ScenarioResult};

/// Command-line knobs of `gateway-bench fairness`.
#[derive(Debug, Clone, clap::Args)]
pub struct FairnessArgs {
    /// Scenarios to run, comma-separated [default: all, in this order:
    /// solo, noisy, equal, weighted, onoff, mixed].
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<ScenarioName>,
    /// Seconds of load per scenario and queue mode.
    #[arg(long, default_value_t = 18.0)]
    seconds: f64,
    /// Seconds at the start of each scenario left out of the statistics.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Mock replicas in the shared pool.
    #[arg(long, default_value_t = 2)]
    pool_replicas: usize,
    /// Admission slots per replica (`max_in_flight_per_replica`).
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Mock decode step in milliseconds.
    #[arg(long, default_value_t = 20)]
    step_ms: u64,
    /// Seed of the Poisson arrivals.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

impl FairnessArgs {
    fn validate(&self) -> Result<(), BenchError> {
        let invalid = |what: String| Err(BenchError::InvalidArgs(what));
        if !(self.seconds.is_finite() && self.seconds >= 4.0) {
            return invalid(format!(
                "--seconds must be at least 4, not {}",
                self.seconds
            ));
        }
        if !(self.settle.is_finite() && self.settle >= 0.0 && self.settle < self.seconds / 2.0) {
            return invalid(format!(
                "--settle must be in [0, seconds / 2), not {}",
                self.settle
            ));
        }
        if self.pool_replicas == 0 || self.slots == 0 || self.step_ms == 0 {
            return invalid("--pool-replicas, --slots and --step-ms must be at least 1".into());
        }
        Ok(())
    }

    fn pool(&self) -> PoolShape {
        PoolShape {
            replicas: self.pool_replicas,
            slots_per_replica: self.slots,
            step_ms: self.step_ms,
            prefill_us_per_token: 10,
        }
    }
}

/// Runs the selected scenarios on both queue modes and writes the report
/// to `out_dir`.
pub fn run(settings: &Settings, args: &FairnessArgs, out_dir: &Path) -> Result<(), BenchError> {
    args.validate()?;
    require_built(FilterSet::ALL)?;
    let pool = args.pool();
    let all: Vec<Scenario> = ScenarioName::ALL
        .iter()
        .map(|&name| plan::scenario(name, pool.capacity_rps(), args.seconds))
        .collect();
    let selected: Vec<&Scenario> = all
        .iter()
        .filter(|s| args.scenarios.is_empty() || args.scenarios.contains(&s.name))
        .collect();
    // Every tenant of every scenario is registered, so a scenario's
    // tenants start with fresh virtual counters even on a shared testbed.
    let registry = pool::registry(&all, &pool);
    // Started outside the runtime: the testbed's control calls block.
    let fair = start(settings, &registry, &pool, QueueMode::Fair)?;
    let fifo = start(settings, &registry, &pool, QueueMode::Fifo)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    // Longer than any queue wait: the gateway, not the client, gives up.
    let timeout = Duration::from_millis(MAX_QUEUE_WAIT_MS) + Duration::from_secs(20);
    for (mode, testbed) in [(QueueMode::Fair, &fair), (QueueMode::Fifo, &fifo)] {
        runtime.block_on(probe(mode, testbed, timeout))?;
    }
    eprintln!(
        "pool: {} slots, {:.1} chat requests/s; {} scenarios x 2 queue modes x {} s",
        pool.slots(),
        pool.capacity_rps(),
        selected.len(),
        args.seconds
    );
    let mut results = Vec::with_capacity(selected.len());
    for (k, scenario) in selected.into_iter().enumerate() {
        // Alternate who goes first, so neither mode always runs on a warmer machine.
        let order = if k % 2 == 0 {
            [QueueMode::Fair, QueueMode::Fifo]
        } else {
            [QueueMode::Fifo, QueueMode::Fair]
        };
        let mut by_mode = Vec::with_capacity(2);
        for mode in order {
            let testbed = if mode == QueueMode::Fair {
                &fair
            } else {
                &fifo
            };
            let label = format!("{} / {}", scenario.name.as_str(), mode.as_str());
            let (records, snapshots) =
                runtime.block_on(run_once(testbed, scenario, args.seed, timeout, &label))?;
            let mut result = analysis::analyse(scenario, mode, &records, args.settle);
            let largest = analysis::largest_costs(scenario, &records);
            let backlog = analysis::Backlog::of(scenario.tenants.len(), &records, result.window);
            result.live = (!snapshots.is_empty()).then(|| {
                live::live(scenario, &snapshots, result.window, &backlog, |f, g| {
                    analysis::vtc_bound(&largest, f, g)
                })
            });
            runtime.block_on(add_queue_waits(testbed, &mut result));
            eprintln!(
                "{label}: {} requests, {:.1} ok rps, {:.0} tokens/s, Jain {}",
                records.len(),
                result.ok_rps,
                result.tokens_per_s,
                result.jain.map_or("-".to_owned(), |j| format!("{j:.4}")),
            );
            by_mode.push(result);
        }
        let (fair_result, fifo_result) = match (by_mode.remove(0), by_mode.remove(0)) {
            (a, b) if a.mode == QueueMode::Fair => (a, b),
            (a, b) => (b, a),
        };
        results.push(ScenarioResult {
            scenario: scenario.clone(),
            fair: fair_result,
            fifo: fifo_result,
            plot: format!("{PLOTS_DIR}/{}.svg", scenario.name.as_str()),
        });
    }
    drop(runtime);
    drop(fair);
    drop(fifo);

    let root = testbed::Paths::locate().map(|p| p.root).unwrap_or_default();
    let mut report = FairnessReport {
        benchmark: "fairness",
        title: "fair admission queue (VTC) vs FIFO on a shared pool",
        command: reproduce_command(),
        generated_at: now_utc(),
        host: Host::current(&root, settings.envoy_concurrency),
        setup: report::setup(pool, args.seconds, args.settle, args.seed),
        targets: Vec::new(),
        scenarios: results,
    };
    report.check_targets();
    print!("{}", report.markdown());
    for path in report.write(out_dir)? {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn start(
    settings: &Settings,
    registry: &str,
    pool: &PoolShape,
    mode: QueueMode,
) -> Result<Testbed, BenchError> {
    let config = pool::testbed(settings, registry, pool, mode);
    Testbed::start(config).map_err(|source| BenchError::Testbed {
        label: mode.as_str().to_owned(),
        source,
    })
}

/// Gauges are sampled twice a second; the service refreshes them every 2 s.
const GAUGE_PERIOD: Duration = Duration::from_millis(500);

/// Drives `scenario` against `testbed` while sampling the service's live
/// fairness gauges.
async fn run_once(
    testbed: &Testbed,
    scenario: &Scenario,
    seed: u64,
    timeout: Duration,
    label: &str,
) -> Result<(Vec<driver::RequestRecord>, Vec<telemetry::Snapshot>), BenchError> {
    // A short lead so every tenant's client is ready at the first arrival.
    let epoch = tokio::time::Instant::now() + Duration::from_millis(200);
    let snapshots = Arc::new(Mutex::new(Vec::new()));
    let sampler = testbed.ratelimit_admin_url().map(|admin| {
        tokio::spawn(telemetry::sample_gauges(
            admin,
            testbed.config.admin_token.clone(),
            pool::POOL,
            epoch,
            GAUGE_PERIOD,
            Arc::clone(&snapshots),
        ))
    });
    let records = driver::run(
        &testbed.gateway_url(),
        scenario,
        seed,
        timeout,
        epoch,
        label,
    )
    .await;
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    let snapshots = std::mem::take(&mut *snapshots.lock().unwrap_or_else(PoisonError::into_inner));
    Ok((records?, snapshots))
}

/// Each tenant's queue wait as ratelimit-service measured it; the report
/// does without when the metrics cannot be read.
async fn add_queue_waits(testbed: &Testbed, result: &mut analysis::ModeResult) {
    let Some(admin) = testbed.ratelimit_admin_url() else {
        return;
    };
    match telemetry::fetch(&admin, &testbed.config.admin_token).await {
        Ok(exposition) => {
            let refused_at_once = result
                .tenants
                .iter()
                .map(|t| (t.tenant.clone(), t.errors.get("429").copied().unwrap_or(0)))
                .collect();
            let waits = telemetry::queue_waits(&exposition, &refused_at_once);
            for tenant in &mut result.tenants {
                tenant.queue_wait = waits.get(&tenant.tenant).copied();
            }
        }
        Err(error) => eprintln!("warning: cannot read ratelimit-service metrics: {error}"),
    }
}

async fn probe(mode: QueueMode, testbed: &Testbed, timeout: Duration) -> Result<(), BenchError> {
    let client = TenantClient::new(
        &testbed.gateway_url(),
        PROBE_TENANT,
        &pool::api_key(PROBE_TENANT),
        Shape::Chat,
        timeout,
    )?;
    client.probe().await.map_err(|(status, mut body)| {
        body.truncate(500);
        BenchError::Probe {
            label: mode.as_str().to_owned(),
            status,
            body,
        }
    })
}
