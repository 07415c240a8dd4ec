//! The side-by-side harness: two testbeds that differ in one thing, the same
//! request driven against both in alternating turns, and the ratio of what
//! each measured.
//!
//! Absolute numbers on a shared laptop or CI runner drift by tens of percent
//! from minute to minute; a ratio taken from turns interleaved in one run
//! does not, because the drift hits both sides alike. Rounds alternate which
//! side goes first so neither always runs on a warmer (or busier) machine.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use testbed::{FilterSet, Testbed, TestbedConfig};

use crate::cpu::{CpuSample, CpuShare, CpuTally};
use crate::error::BenchError;
use crate::load::{
    ClosedLoop, Endpoint, OpenLoop, PhaseProgress, PhaseRecorder, PhaseSummary, RequestRecipe,
    run_closed_loop, run_open_loop,
};

/// One side of a comparison: a name and the testbed it runs on.
#[derive(Debug, Clone)]
pub struct Contender {
    pub label: String,
    pub config: TestbedConfig,
}

impl Contender {
    pub fn new(label: &str, config: TestbedConfig) -> Self {
        Self {
            label: label.to_owned(),
            config,
        }
    }
}

/// How hard and how long to drive each side.
#[derive(Debug, Clone, Serialize)]
pub struct LoadPlan {
    /// Open-loop rates (requests per second), one phase each.
    pub rates: Vec<f64>,
    /// Length of each measured phase.
    pub duration_s: f64,
    /// Connections of the closed-loop saturation phase.
    pub connections: usize,
    pub rounds: usize,
    /// Unmeasured closed-loop load before the first round (connections, wasm VMs, caches).
    pub warmup_s: f64,
    pub timeout_s: f64,
    /// In-flight cap of the open-loop phases.
    pub max_in_flight: usize,
}

impl LoadPlan {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
}

/// Two running testbeds, ready to be compared on any number of recipes.
#[derive(Debug)]
pub struct SideBySide {
    runtime: tokio::runtime::Runtime,
    variant: Running,
    baseline: Running,
}

#[derive(Debug)]
struct Running {
    label: String,
    filters: String,
    testbed: Testbed,
}

/// Starts both sides, measures `recipe` once and stops everything.
pub fn compare(
    variant: Contender,
    baseline: Contender,
    recipe: &RequestRecipe,
    plan: &LoadPlan,
) -> Result<Comparison, BenchError> {
    SideBySide::start(variant, baseline)?.compare(recipe, plan)
}

impl SideBySide {
    pub fn start(variant: Contender, baseline: Contender) -> Result<Self, BenchError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(BenchError::Runtime)?;
        // Testbeds are started outside the runtime: their control-plane client blocks.
        Ok(Self {
            variant: Running::start(variant)?,
            baseline: Running::start(baseline)?,
            runtime,
        })
    }

    /// Drives `recipe` against both sides by `plan` and returns what each measured.
    pub fn compare(
        &self,
        recipe: &RequestRecipe,
        plan: &LoadPlan,
    ) -> Result<Comparison, BenchError> {
        self.runtime.block_on(self.compare_async(recipe, plan))
    }

    async fn compare_async(
        &self,
        recipe: &RequestRecipe,
        plan: &LoadPlan,
    ) -> Result<Comparison, BenchError> {
        let timeout = Duration::from_secs_f64(plan.timeout_s);
        let sides = [&self.variant, &self.baseline];
        let mut endpoints = Vec::with_capacity(2);
        for side in sides {
            let endpoint = Arc::new(Endpoint::new(&side.testbed.gateway_url(), recipe, timeout)?);
            probe(side, &endpoint).await?;
            endpoints.push(endpoint);
        }
        if plan.warmup_s > 0.0 {
            for (side, endpoint) in sides.iter().zip(&endpoints) {
                let load = ClosedLoop {
                    connections: plan.connections,
                    duration: Duration::from_secs_f64(plan.warmup_s),
                };
                let progress =
                    PhaseProgress::new(&format!("warm-up {}", side.label), load.duration);
                run_closed_loop::<_, PhaseRecorder>(Arc::clone(endpoint), load, &progress).await;
                progress.finish();
            }
        }
        let mut fixed: [Vec<Tally>; 2] = [
            plan.rates.iter().map(|_| Tally::default()).collect(),
            plan.rates.iter().map(|_| Tally::default()).collect(),
        ];
        let mut saturation = [Tally::default(), Tally::default()];
        let mut cpu = [CpuTally::default(), CpuTally::default()];
        for round in 0..plan.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let turn = format!("round {}/{}", round + 1, plan.rounds);
            for (k, &rate) in plan.rates.iter().enumerate() {
                for i in order {
                    let load = OpenLoop {
                        rate,
                        duration: plan.duration(),
                        max_in_flight: plan.max_in_flight,
                    };
                    let progress = PhaseProgress::new(
                        &format!("{turn} {} @ {rate} rps", sides[i].label),
                        load.duration,
                    );
                    let recorder: PhaseRecorder =
                        run_open_loop(Arc::clone(&endpoints[i]), load, &progress).await;
                    progress.finish();
                    fixed[i][k].add(recorder);
                }
            }
            for i in order {
                let load = ClosedLoop {
                    connections: plan.connections,
                    duration: plan.duration(),
                };
                let label = format!("{turn} {} saturation x{}", sides[i].label, plan.connections);
                let progress = PhaseProgress::new(&label, load.duration);
                let before = CpuSample::take(&sides[i].testbed);
                let recorder: PhaseRecorder =
                    run_closed_loop(Arc::clone(&endpoints[i]), load, &progress).await;
                cpu[i].add(&before, &CpuSample::take(&sides[i].testbed));
                progress.finish();
                saturation[i].add(recorder);
            }
        }
        let [fixed_variant, fixed_baseline] = fixed;
        let [sat_variant, sat_baseline] = saturation;
        let [cpu_variant, cpu_baseline] = cpu;
        let variant = self
            .variant
            .result(plan, fixed_variant, sat_variant, &cpu_variant);
        let baseline = self
            .baseline
            .result(plan, fixed_baseline, sat_baseline, &cpu_baseline);
        Ok(Comparison {
            ratios: Ratios::of(&variant, &baseline),
            recipe: recipe.clone(),
            plan: plan.clone(),
            variant,
            baseline,
        })
    }
}

impl Running {
    fn start(contender: Contender) -> Result<Self, BenchError> {
        eprintln!(
            "starting testbed `{}` ({})",
            contender.label,
            describe(contender.config.filters)
        );
        let filters = describe(contender.config.filters);
        let testbed = Testbed::start(contender.config).map_err(|source| BenchError::Testbed {
            label: contender.label.clone(),
            source,
        })?;
        Ok(Self {
            label: contender.label,
            filters,
            testbed,
        })
    }

    fn result(
        &self,
        plan: &LoadPlan,
        fixed: Vec<Tally>,
        saturation: Tally,
        cpu: &CpuTally,
    ) -> ContenderResult {
        let saturation = saturation.into_phase();
        ContenderResult {
            saturation_cpu: cpu.per_request(saturation.merged.ok),
            label: self.label.clone(),
            filters: self.filters.clone(),
            fixed_rate: plan
                .rates
                .iter()
                .zip(fixed)
                .map(|(&rate, tally)| RatePhase {
                    rate,
                    phase: tally.into_phase(),
                })
                .collect(),
            saturation,
        }
    }
}

/// The filter chain in words, for reports.
pub fn describe(filters: FilterSet) -> String {
    let names: Vec<&str> = [
        (filters.tenant_auth, "tenant-auth"),
        (filters.llm_policy, "llm-policy"),
        (filters.admission, "admission"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if names.is_empty() {
        "no filters".to_owned()
    } else {
        names.join(" + ")
    }
}

/// Refuses to measure a chain that does not answer 2xx: a benchmark of 401s
/// or 500s would produce numbers that look fine and mean nothing.
async fn probe(side: &Running, endpoint: &Endpoint) -> Result<(), BenchError> {
    let (outcome, body) = endpoint.probe().await;
    if outcome.is_success() {
        return Ok(());
    }
    let mut body = body;
    body.truncate(500);
    Err(BenchError::Probe {
        label: side.label.clone(),
        status: outcome.label(),
        body,
    })
}

/// Rounds of one phase: merged, and each on its own for the spread.
#[derive(Debug, Default)]
struct Tally {
    merged: PhaseRecorder,
    rounds: Vec<PhaseSummary>,
}

impl Tally {
    fn add(&mut self, round: PhaseRecorder) {
        self.rounds.push(round.summary());
        self.merged.merge(&round);
    }

    fn into_phase(self) -> Phase {
        Phase {
            merged: self.merged.summary(),
            rounds: self.rounds,
        }
    }
}

/// Everything one comparison measured.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub recipe: RequestRecipe,
    pub plan: LoadPlan,
    pub variant: ContenderResult,
    pub baseline: ContenderResult,
    pub ratios: Ratios,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContenderResult {
    pub label: String,
    pub filters: String,
    pub fixed_rate: Vec<RatePhase>,
    pub saturation: Phase,
    /// CPU per process over the saturation phases, and per request.
    pub saturation_cpu: Vec<CpuShare>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// All rounds together.
    pub merged: PhaseSummary,
    pub rounds: Vec<PhaseSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RatePhase {
    pub rate: f64,
    #[serde(flatten)]
    pub phase: Phase,
}

/// Variant divided by baseline; the `by_round` lists pair the two sides'
/// turns of the same round, which shows how stable the ratio is.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub fixed_rate: Vec<RateRatios>,
    pub max_throughput: f64,
    pub max_throughput_by_round: Vec<f64>,
    pub saturation_p50: f64,
    pub saturation_p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateRatios {
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub p50_by_round: Vec<f64>,
    pub p99_by_round: Vec<f64>,
    /// Latency the variant adds, in milliseconds.
    pub p50_added_ms: f64,
    pub p99_added_ms: f64,
}

impl Ratios {
    fn of(variant: &ContenderResult, baseline: &ContenderResult) -> Self {
        let by_round = |v: &Phase, b: &Phase, pick: fn(&PhaseSummary) -> f64| -> Vec<f64> {
            v.rounds
                .iter()
                .zip(&b.rounds)
                .map(|(v, b)| pick(v) / pick(b))
                .collect()
        };
        let p50 = |s: &PhaseSummary| s.latency_ms.p50;
        let p99 = |s: &PhaseSummary| s.latency_ms.p99;
        let rps = |s: &PhaseSummary| s.throughput_rps;
        let fixed_rate = variant
            .fixed_rate
            .iter()
            .zip(&baseline.fixed_rate)
            .map(|(v, b)| RateRatios {
                rate: v.rate,
                p50: p50(&v.phase.merged) / p50(&b.phase.merged),
                p99: p99(&v.phase.merged) / p99(&b.phase.merged),
                p50_by_round: by_round(&v.phase, &b.phase, p50),
                p99_by_round: by_round(&v.phase, &b.phase, p99),
                p50_added_ms: p50(&v.phase.merged) - p50(&b.phase.merged),
                p99_added_ms: p99(&v.phase.merged) - p99(&b.phase.merged),
            })
            .collect();
        let (vs, bs) = (&variant.saturation, &baseline.saturation);
        Self {
            fixed_rate,
            max_throughput: rps(&vs.merged) / rps(&bs.merged),
            max_throughput_by_round: by_round(vs, bs, rps),
            saturation_p50: p50(&vs.merged) / p50(&bs.merged),
            saturation_p99: p99(&vs.merged) / p99(&bs.merged),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_filter_chains_in_order() {
        assert_eq!(describe(FilterSet::NONE), "no filters");
        assert_eq!(describe(FilterSet::AUTH_ONLY), "tenant-auth");
        assert_eq!(
            describe(FilterSet::ALL),
            "tenant-auth + llm-policy + admission"
        );
    }
}
