//! The fairness report: targets checked, one section per scenario with its
//! per-tenant table and plot, as markdown, JSON and SVG files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::analysis::{ModeResult, Quantiles, ServiceGap, TenantResult};
use super::plan::{BATCH_PROMPT_BYTES, CHAT_PROMPT_BYTES, MAX_TOKENS, Scenario, ScenarioName};
use super::pool::{MAX_QUEUE_DEPTH, MAX_QUEUE_WAIT_MS, OUTPUT_TOKEN_WEIGHT, PoolShape};
use super::svg::{self, Figure, PALETTE, Panel, Row, Scale, Series};
use crate::error::BenchError;
use crate::report::Host;

/// Subdirectory of the output directory that holds the plots.
pub const PLOTS_DIR: &str = "fairness";

#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub pool: PoolShape,
    pub slots: u32,
    /// Chat requests per second the pool completes at full occupancy.
    pub capacity_rps: f64,
    pub max_queue_wait_ms: u64,
    pub max_queue_depth_per_tenant: u32,
    pub output_token_weight: f64,
    pub chat_prompt_bytes: usize,
    pub batch_prompt_bytes: usize,
    pub max_tokens: u32,
    pub seconds: f64,
    pub settle_s: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub fair: ModeResult,
    pub fifo: ModeResult,
    /// Plot, relative to the report.
    pub plot: String,
}

/// One target of the issue, checked on this run.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub goal: String,
    pub fair: Option<f64>,
    pub fifo: Option<f64>,
    /// `None` when the scenarios it needs did not run.
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FairnessReport {
    pub benchmark: &'static str,
    pub title: &'static str,
    pub command: String,
    pub generated_at: String,
    pub host: Host,
    pub setup: Setup,
    pub targets: Vec<TargetCheck>,
    pub scenarios: Vec<ScenarioResult>,
}

/// Scenarios whose requests all have the same shape, so token throughput
/// compares like with like across queue modes.
const HOMOGENEOUS: [ScenarioName; 4] = [
    ScenarioName::Noisy,
    ScenarioName::Equal,
    ScenarioName::Weighted,
    ScenarioName::Onoff,
];

impl FairnessReport {
    fn scenario(&self, name: ScenarioName) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.scenario.name == name)
    }

    /// Fills `targets` from the scenario results.
    pub fn check_targets(&mut self) {
        let mut targets = Vec::new();
        let equal = self.scenario(ScenarioName::Equal);
        let jain = |m: &ModeResult| m.jain;
        targets.push(TargetCheck {
            target: "equal weights, saturated: Jain's index of backlogged tenants' service".into(),
            goal: ">= 0.99".into(),
            fair: equal.and_then(|s| jain(&s.fair)),
            fifo: equal.and_then(|s| jain(&s.fifo)),
            met: equal.and_then(|s| jain(&s.fair)).map(|j| j >= 0.99),
        });

        // Without contention the queue mode makes no difference: both solo
        // runs together are the baseline, twice the samples for its p99.
        let solo = self.scenario(ScenarioName::Solo).map(|s| {
            let mut samples = s.fair.steady_ttft_samples_ms.clone();
            samples.extend_from_slice(&s.fifo.steady_ttft_samples_ms);
            Quantiles::of(samples)
        });
        let versus_solo = |name: ScenarioName, fair: bool, pick: fn(&Quantiles) -> Option<f64>| {
            let scenario = self.scenario(name)?;
            let mode = if fair { &scenario.fair } else { &scenario.fifo };
            Some(pick(&mode.steady_ttft_ms)? / pick(solo.as_ref()?)?)
        };
        let p99 = |q: &Quantiles| q.p99;
        let p50 = |q: &Quantiles| q.p50;
        let noisy_fair = versus_solo(ScenarioName::Noisy, true, p99);
        targets.push(TargetCheck {
            target: "noisy neighbour: light tenants' p99 TTFT / solo p99 TTFT".into(),
            goal: "<= 1.2 (FIFO typically > 10)".into(),
            fair: noisy_fair,
            fifo: versus_solo(ScenarioName::Noisy, false, p99),
            met: noisy_fair.map(|r| r <= 1.2),
        });
        targets.push(TargetCheck {
            target: "noisy neighbour: light tenants' p50 TTFT / solo p50 TTFT (no target set)"
                .into(),
            goal: "-".into(),
            fair: versus_solo(ScenarioName::Noisy, true, p50),
            fifo: versus_solo(ScenarioName::Noisy, false, p50),
            met: None,
        });

        let weighted = self.scenario(ScenarioName::Weighted);
        let deviation = |m: &ModeResult| {
            let (gold, silver) = (m.tenant("gold")?, m.tenant("silver")?);
            Some((gold.share / silver.share) / (gold.weight / silver.weight) - 1.0)
        };
        let weighted_fair = weighted.and_then(|s| deviation(&s.fair));
        targets.push(TargetCheck {
            target: "weighted 2:1: service ratio / weight ratio - 1".into(),
            goal: "within ±0.03".into(),
            fair: weighted_fair,
            fifo: weighted.and_then(|s| deviation(&s.fifo)),
            met: weighted_fair.map(|d| d.abs() <= 0.03),
        });

        let homogeneous: Vec<&ScenarioResult> = HOMOGENEOUS
            .iter()
            .filter_map(|&n| self.scenario(n))
            .collect();
        let fair_tokens: f64 = homogeneous.iter().map(|s| s.fair.tokens_per_s).sum();
        let fifo_tokens: f64 = homogeneous.iter().map(|s| s.fifo.tokens_per_s).sum();
        let ratio =
            (!homogeneous.is_empty() && fifo_tokens > 0.0).then(|| fair_tokens / fifo_tokens);
        targets.push(TargetCheck {
            target: "token throughput fair / FIFO (noisy, equal, weighted, onoff)".into(),
            goal: ">= 0.95".into(),
            fair: ratio,
            fifo: None,
            met: ratio.map(|r| r >= 0.95),
        });

        for name in [
            ScenarioName::Equal,
            ScenarioName::Weighted,
            ScenarioName::Onoff,
        ] {
            let scenario = self.scenario(name);
            let ratio = |g: &ServiceGap| g.gap / g.bound;
            let gauge = |m: &ModeResult| m.live.as_ref()?.gap.as_ref().map(ratio);
            let fair = scenario.and_then(|s| gauge(&s.fair));
            targets.push(TargetCheck {
                target: format!(
                    "{}: largest service gap of backlogged tenants / VTC bound, from the service's gauges",
                    name.as_str()
                ),
                goal: "<= 1".into(),
                fair,
                fifo: scenario.and_then(|s| gauge(&s.fifo)),
                met: fair.map(|g| g <= 1.0),
            });
            let client = |m: &ModeResult| m.service_gap.as_ref().map(ratio);
            targets.push(TargetCheck {
                target: format!(
                    "{}: the same gap as the clients saw tokens arrive (no target set)",
                    name.as_str()
                ),
                goal: "-".into(),
                fair: scenario.and_then(|s| client(&s.fair)),
                fifo: scenario.and_then(|s| client(&s.fifo)),
                met: None,
            });
        }

        targets.push(TargetCheck {
            target: "long-prompt batch: chat tenants' p99 TTFT / solo p99 TTFT (no target set)"
                .into(),
            goal: "-".into(),
            fair: versus_solo(ScenarioName::Mixed, true, p99),
            fifo: versus_solo(ScenarioName::Mixed, false, p99),
            met: None,
        });
        self.targets = targets;
    }

    /// Writes `fairness.md`, `fairness.json` and the plots under `dir`.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
        let plots = dir.join(PLOTS_DIR);
        std::fs::create_dir_all(&plots).map_err(|source| BenchError::Write {
            path: plots.clone(),
            source,
        })?;
        let mut files = vec![
            (dir.join("fairness.md"), self.markdown()),
            (
                dir.join("fairness.json"),
                serde_json::to_string_pretty(self)? + "\n",
            ),
        ];
        for s in &self.scenarios {
            files.push((dir.join(&s.plot), svg::render(&figure(s))));
        }
        let mut written = Vec::with_capacity(files.len());
        for (path, text) in files {
            std::fs::write(&path, text).map_err(|source| BenchError::Write {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
        Ok(written)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let s = &self.setup;
        let _ = writeln!(md, "# fairness: {}\n", self.title);
        let _ = writeln!(md, "```sh\n{}\n```\n", self.command);
        let _ = writeln!(
            md,
            "Generated {} on {} CPUs ({} {}), testbed binaries: {}, Envoy workers: {}, commit {}.\n",
            self.generated_at,
            self.host.cpus,
            self.host.os,
            self.host.arch,
            self.host.testbed_profile,
            self.host.envoy_concurrency,
            self.host.commit.as_deref().unwrap_or("unknown"),
        );
        let _ = writeln!(
            md,
            "**Setup.** One pool of {} mock replicas x {} admission slots = {} requests at once; every \
             decode step takes {} ms whatever the batch, so a chat request ({} output tokens) holds its \
             slot {:.2} s and the pool serves {:.1} chat requests/s. Prompts: chat ~{} bytes, batch ~{} \
             bytes (prefill {} us/token). Queue: at most {} requests waiting per tenant (then 429), at \
             most {} ms of waiting (then 503); output tokens cost {}x input tokens. Each scenario runs {} \
             s of open-loop Poisson arrivals (seed {}) against two testbeds that differ only in \
             `--queue-mode` (fair = VTC, fifo = arrival order), alternating which goes first; \
             statistics leave out the first {} s. TTFT runs from the time a request was meant to leave \
             to its first SSE chunk. Service = (prompt + {} x output tokens) / weight.\n",
            s.pool.replicas,
            s.pool.slots_per_replica,
            s.slots,
            s.pool.step_ms,
            s.max_tokens,
            s.pool.chat_service_s(),
            s.capacity_rps,
            s.chat_prompt_bytes,
            s.batch_prompt_bytes,
            s.pool.prefill_us_per_token,
            s.max_queue_depth_per_tenant,
            s.max_queue_wait_ms,
            s.output_token_weight,
            s.seconds,
            s.seed,
            s.settle_s,
            s.output_token_weight,
        );
        md.push_str(
            "## Targets\n\n| target | goal | fair | FIFO | met |\n|---|---|---:|---:|---|\n",
        );
        for t in &self.targets {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                t.target,
                t.goal,
                number(t.fair),
                number(t.fifo),
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "-",
                }
            );
        }
        for result in &self.scenarios {
            scenario_section(&mut md, result);
        }
        md
    }
}

fn number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
        None => "-".into(),
    }
}

fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
        None => "-".into(),
    }
}

fn failures(t: &TenantResult) -> String {
    if t.errors.is_empty() {
        return "0".into();
    }
    t.errors
        .iter()
        .map(|(label, n)| format!("{n} x {label}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn scenario_section(md: &mut String, result: &ScenarioResult) {
    let scenario = &result.scenario;
    let _ = writeln!(
        md,
        "\n## {}: {}\n\n{}\n",
        scenario.name.as_str(),
        scenario.title,
        scenario.question
    );
    let _ = writeln!(md, "![{}]({})\n", scenario.name.as_str(), result.plot);
    md.push_str(
        "| tenant | weight | offered rps | queue | ok rps | tokens/s | share | TTFT p50 ms | TTFT p99 ms | \
         queue wait mean / p99 ms | failed | backlogged |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for (fair, fifo) in result.fair.tenants.iter().zip(&result.fifo.tenants) {
        for (mode, t) in [("fair", fair), ("fifo", fifo)] {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {mode} | {:.1} | {:.0} | {:.3} | {} | {} | {} | {} | {:.0}% |",
                t.role,
                t.weight,
                t.offered_rps,
                t.ok_rps,
                t.tokens_per_s,
                t.share,
                ms(t.ttft_ms.p50),
                ms(t.ttft_ms.p99),
                t.queue_wait.map_or("-".to_owned(), |w| format!(
                    "{} / <= {}",
                    ms(Some(w.mean_ms)),
                    ms(Some(w.p99_le_ms))
                )),
                failures(t),
                t.backlogged * 100.0,
            );
        }
    }
    md.push('\n');
    for m in [&result.fair, &result.fifo] {
        let gap =
            m.service_gap
                .as_ref()
                .map_or("no two tenants backlogged together".to_owned(), |g| {
                    format!(
                        "{} vs {}: {:.0} (VTC bound {:.0}) over {:.1}-{:.1} s",
                        g.between[0], g.between[1], g.gap, g.bound, g.from_s, g.to_s
                    )
                });
        let _ = writeln!(
            md,
            "- **{}**: {:.1} ok rps, {:.0} tokens/s; Jain's index over backlogged [{}]: {}; largest \
             service gap {}; light tenants' TTFT p50/p99 {}/{} ms; drained {:.1} s after the last arrival.",
            m.mode.as_str(),
            m.ok_rps,
            m.tokens_per_s,
            m.backlogged.join(", "),
            number(m.jain),
            gap,
            ms(m.steady_ttft_ms.p50),
            ms(m.steady_ttft_ms.p99),
            m.drain_s,
        );
    }
    for m in [&result.fair, &result.fifo] {
        let Some(live) = &m.live else { continue };
        let gap = live.gap.as_ref().map_or("-".to_owned(), |g| {
            format!(
                "{} vs {}: {:.0} (bound {:.0})",
                g.between[0], g.between[1], g.gap, g.bound
            )
        });
        let _ = writeln!(
            md,
            "- **{}**, ratelimit-service's gauges ({} samples): live Jain's index min {} / mean {} while \
             two or more tenants were queued; largest gap of the service gauges {}.",
            m.mode.as_str(),
            live.samples,
            number(live.jain_min),
            number(live.jain_mean),
            gap,
        );
    }
    if result.fifo.tokens_per_s > 0.0 {
        let _ = writeln!(
            md,
            "- token throughput fair / FIFO: {:.3}",
            result.fair.tokens_per_s / result.fifo.tokens_per_s
        );
    }
    let _ = steady_summary(md, &result.fair.steady_ttft_ms, &result.fifo.steady_ttft_ms);
}

fn steady_summary(md: &mut String, fair: &Quantiles, fifo: &Quantiles) -> std::fmt::Result {
    if fair.count == 0 && fifo.count == 0 {
        return Ok(());
    }
    writeln!(
        md,
        "- light tenants' TTFT samples: {} fair, {} FIFO (max {} / {} ms)",
        fair.count,
        fifo.count,
        ms(fair.max),
        ms(fifo.max)
    )
}

/// Service per second (top) and TTFT p99 per second (bottom, log scale),
/// fair queue left, FIFO right, one colour per tenant.
pub fn figure(result: &ScenarioResult) -> Figure {
    let color = |i: usize| PALETTE[i % PALETTE.len()];
    let panels = |pick: &dyn Fn(usize, &ModeResult) -> Vec<Option<f64>>| {
        [(&result.fair, "fair queue (VTC)"), (&result.fifo, "FIFO")]
            .into_iter()
            .map(|(mode, title)| Panel {
                title: title.to_owned(),
                series: (0..mode.timeline.len())
                    .map(|i| Series {
                        color: color(i),
                        points: pick(i, mode),
                    })
                    .collect(),
            })
            .collect()
    };
    let service = |i: usize, m: &ModeResult| {
        m.timeline[i]
            .service_per_s
            .iter()
            .map(|v| Some(*v))
            .collect()
    };
    let ttft = |i: usize, m: &ModeResult| m.timeline[i].ttft_p99_ms.clone();
    Figure {
        title: format!(
            "{}: {}",
            result.scenario.name.as_str(),
            result.scenario.title
        ),
        x_label: "seconds".into(),
        x_step: super::analysis::BUCKET_S,
        x_max: result.scenario.seconds,
        legend: result
            .scenario
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{} (w {})", t.role, t.weight), color(i)))
            .collect(),
        rows: vec![
            Row {
                y_label: "service / weight (tokens/s)".into(),
                scale: Scale::Linear,
                panels: panels(&service),
            },
            Row {
                y_label: "TTFT p99 (ms)".into(),
                scale: Scale::Log,
                panels: panels(&ttft),
            },
        ],
    }
}

pub fn setup(pool: PoolShape, seconds: f64, settle_s: f64, seed: u64) -> Setup {
    Setup {
        slots: pool.slots(),
        capacity_rps: pool.capacity_rps(),
        pool,
        max_queue_wait_ms: MAX_QUEUE_WAIT_MS,
        max_queue_depth_per_tenant: MAX_QUEUE_DEPTH,
        output_token_weight: OUTPUT_TOKEN_WEIGHT,
        chat_prompt_bytes: CHAT_PROMPT_BYTES,
        batch_prompt_bytes: BATCH_PROMPT_BYTES,
        max_tokens: MAX_TOKENS,
        seconds,
        settle_s,
        seed,
    }
}
