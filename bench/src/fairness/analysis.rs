//! From the requests a scenario sent to what the report says: per-tenant
//! throughput, TTFT and rejections, service over time, Jain's index over the
//! backlogged tenants and the largest service gap against VTC's bound.
//!
//! Service is VTC's: `(input + w_out·output) / weight` tokens. For shares and
//! plots a request's prompt tokens count when its first token arrives and
//! its output tokens spread evenly until its last, like the GPU delivers
//! them. For the gap the whole cost counts at the first token, the moment
//! closest to the admission at which the queue charges it: the bound is a
//! statement about admissions.

use std::collections::BTreeMap;

use serde::Serialize;

use super::driver::RequestRecord;
use super::live::LiveTelemetry;
use super::plan::Scenario;
use super::pool::{OUTPUT_TOKEN_WEIGHT, QueueMode};
use super::telemetry::QueueWait;
use crate::load::Outcome;

pub const BUCKET_S: f64 = 1.0;
/// Resolution at which backlog is sampled.
const GRID_S: f64 = 0.1;
/// A tenant counts as backlogged when it had a request waiting at this
/// fraction of the window's samples.
pub const BACKLOGGED_FRACTION: f64 = 0.9;
/// Shorter stretches of common backlog are ignored by the gap measure.
const MIN_COMMON_BACKLOG_S: f64 = 1.0;

/// The part of a scenario the statistics cover.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub from_s: f64,
    pub to_s: f64,
}

impl Window {
    pub fn len(&self) -> f64 {
        (self.to_s - self.from_s).max(f64::MIN_POSITIVE)
    }

    fn contains(&self, t: f64) -> bool {
        t >= self.from_s && t < self.to_s
    }

    /// Sample instants, one per grid step, at the middle of each step.
    fn grid(&self) -> Vec<f64> {
        let steps = (self.len() / GRID_S).floor() as usize;
        (0..steps)
            .map(|k| self.from_s + (k as f64 + 0.5) * GRID_S)
            .collect()
    }
}

/// Nearest-rank percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    pub count: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Quantiles {
    pub fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let n = values.len();
            (n > 0).then(|| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        Self {
            count: values.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: values.last().copied(),
        }
    }
}

/// One tenant in one mode.
#[derive(Debug, Clone, Serialize)]
pub struct TenantResult {
    pub tenant: String,
    pub role: String,
    pub weight: f64,
    pub steady: bool,
    pub offered_rps: f64,
    /// Every request of the scenario.
    pub sent: u64,
    pub ok: u64,
    /// Failures by outcome (`429` queue full, `503` queue timeout, `timeout`).
    pub errors: BTreeMap<String, u64>,
    /// Successful requests completed in the window, per second.
    pub ok_rps: f64,
    /// Prompt + output tokens delivered in the window, per second.
    pub tokens_per_s: f64,
    /// Weighted service in the window, divided by the tenant's weight.
    pub service: f64,
    /// Share of all weighted (not divided) service in the window.
    pub share: f64,
    /// TTFT of successful requests meant to leave in the window.
    pub ttft_ms: Quantiles,
    /// Fraction of the window with at least one request waiting.
    pub backlogged: f64,
    /// Wait in the pool queue as ratelimit-service measured it, when its
    /// metrics could be read.
    pub queue_wait: Option<QueueWait>,
}

/// The largest difference of service received by two tenants over a
/// stretch of time both were backlogged.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceGap {
    pub between: [String; 2],
    /// Weighted tokens divided by weight.
    pub gap: f64,
    /// VTC's bound for the pair: twice the largest single-request cost.
    pub bound: f64,
    pub from_s: f64,
    pub to_s: f64,
}

/// Per-second series of one tenant, for the plots.
#[derive(Debug, Clone, Serialize)]
pub struct TenantTimeline {
    pub role: String,
    /// Weighted service divided by weight, per second.
    pub service_per_s: Vec<f64>,
    /// TTFT of successful requests, by the second they were meant to leave.
    pub ttft_p50_ms: Vec<Option<f64>>,
    pub ttft_p99_ms: Vec<Option<f64>>,
    pub failed: Vec<u64>,
}

/// One scenario in one queue mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub mode: QueueMode,
    pub window: Window,
    pub tenants: Vec<TenantResult>,
    /// Roles backlogged for at least [`BACKLOGGED_FRACTION`] of the window.
    pub backlogged: Vec<String>,
    /// Jain's index of the backlogged tenants' service; `None` under two.
    pub jain: Option<f64>,
    pub service_gap: Option<ServiceGap>,
    pub tokens_per_s: f64,
    pub ok_rps: f64,
    /// Pooled TTFT of the steady (light chat) tenants.
    pub steady_ttft_ms: Quantiles,
    /// The samples behind it, to pool baselines across runs.
    #[serde(skip)]
    pub steady_ttft_samples_ms: Vec<f64>,
    /// Seconds after the last arrival until the last answer.
    pub drain_s: f64,
    /// The service's own gauges over the run, when they could be read.
    pub live: Option<LiveTelemetry>,
    pub timeline: Vec<TenantTimeline>,
}

impl ModeResult {
    pub fn tenant(&self, role: &str) -> Option<&TenantResult> {
        self.tenants.iter().find(|t| t.role == role)
    }
}

/// VTC cost of a request before division by the weight.
pub fn cost(prompt_tokens: u64, completion_tokens: u64) -> f64 {
    prompt_tokens as f64 + OUTPUT_TOKEN_WEIGHT * completion_tokens as f64
}

/// `(prompt, output)` tokens a successful request delivered in `[from, to)`.
fn delivered(r: &RequestRecord, from: f64, to: f64) -> (f64, f64) {
    let Some(first) = r.first_byte_s.filter(|_| r.is_success()) else {
        return (0.0, 0.0);
    };
    let prompt = if first >= from && first < to {
        r.prompt_tokens as f64
    } else {
        0.0
    };
    let span = r.done_s - first;
    let output = if span <= 0.0 {
        if first >= from && first < to {
            r.completion_tokens as f64
        } else {
            0.0
        }
    } else {
        let overlap = (r.done_s.min(to) - first.max(from)).max(0.0);
        r.completion_tokens as f64 * overlap / span
    };
    (prompt, output)
}

fn weighted(tokens: (f64, f64)) -> f64 {
    tokens.0 + OUTPUT_TOKEN_WEIGHT * tokens.1
}

/// When a request sat in the queue: until its first token, or until the
/// gateway gave up on it. A request refused at once never waited.
fn waiting(r: &RequestRecord) -> Option<(f64, f64)> {
    match (r.is_success(), r.first_byte_s, r.outcome) {
        (true, Some(first), _) => Some((r.intended_s, first)),
        (false, _, Outcome::Status(503) | Outcome::Timeout) => Some((r.intended_s, r.done_s)),
        _ => None,
    }
}

/// For each grid sample, whether one of `intervals` covers it.
fn covered(intervals: impl Iterator<Item = (f64, f64)>, grid: &[f64]) -> Vec<bool> {
    let Some(&start) = grid.first() else {
        return Vec::new();
    };
    let mut delta = vec![0i64; grid.len() + 1];
    for (from, to) in intervals {
        // Samples k with from <= start + k·GRID < to.
        let first = ((from - start) / GRID_S).ceil().max(0.0) as usize;
        let end = (((to - start) / GRID_S).ceil().max(0.0) as usize).min(grid.len());
        if first < end {
            delta[first] += 1;
            delta[end] -= 1;
        }
    }
    let mut depth = 0;
    delta[..grid.len()]
        .iter()
        .map(|d| {
            depth += d;
            depth > 0
        })
        .collect()
}

/// When each tenant of a scenario had a request waiting, on a 0.1 s grid
/// over the window.
#[derive(Debug, Clone)]
pub struct Backlog {
    pub grid: Vec<f64>,
    waiting: Vec<Vec<bool>>,
}

impl Backlog {
    pub fn of(tenants: usize, records: &[RequestRecord], window: Window) -> Self {
        let grid = window.grid();
        let waiting = (0..tenants)
            .map(|i| {
                covered(
                    records.iter().filter(|r| r.tenant == i).filter_map(waiting),
                    &grid,
                )
            })
            .collect();
        Self { grid, waiting }
    }

    /// Fraction of the window tenant `i` had a request waiting.
    pub fn fraction(&self, i: usize) -> f64 {
        let samples = &self.waiting[i];
        samples.iter().filter(|&&w| w).count() as f64 / samples.len().max(1) as f64
    }

    /// Tenants waiting for at least [`BACKLOGGED_FRACTION`] of the window.
    pub fn backlogged(&self) -> Vec<usize> {
        (0..self.waiting.len())
            .filter(|&i| self.fraction(i) >= BACKLOGGED_FRACTION)
            .collect()
    }

    /// Per grid sample: both `f` and `g` waiting.
    pub fn common(&self, f: usize, g: usize) -> Vec<bool> {
        self.waiting[f]
            .iter()
            .zip(&self.waiting[g])
            .map(|(a, b)| *a && *b)
            .collect()
    }

    /// Stretches `[from, to)` of at least a second both waited throughout.
    pub fn common_runs(&self, f: usize, g: usize) -> Vec<(f64, f64)> {
        let both = self.common(f, g);
        let min_len = (MIN_COMMON_BACKLOG_S / GRID_S).round() as usize;
        let mut runs = Vec::new();
        let mut k = 0;
        while k < both.len() {
            let start = k;
            while k < both.len() && both[k] {
                k += 1;
            }
            if k - start >= min_len.max(1) {
                runs.push((
                    self.grid[start] - GRID_S / 2.0,
                    self.grid[k - 1] + GRID_S / 2.0,
                ));
            }
            k += 1;
        }
        runs
    }
}

/// Jain's fairness index (Σx)² / (n·Σx²); 1 is perfectly even.
pub fn jains_index(shares: &[f64]) -> Option<f64> {
    let sum: f64 = shares.iter().sum();
    let sum_sq: f64 = shares.iter().map(|x| x * x).sum();
    (shares.len() >= 2 && sum_sq > 0.0).then(|| sum * sum / (shares.len() as f64 * sum_sq))
}

/// Largest `max(D) − min(D)` of `diff` over runs of `both` at least
/// `min_len` samples long; with the run's first and last index.
pub fn largest_swing(diff: &[f64], both: &[bool], min_len: usize) -> Option<(f64, usize, usize)> {
    let mut best: Option<(f64, usize, usize)> = None;
    let mut k = 0;
    while k < both.len() {
        if !both[k] {
            k += 1;
            continue;
        }
        let start = k;
        while k < both.len() && both[k] {
            k += 1;
        }
        if k - start < min_len.max(1) {
            continue;
        }
        let run = &diff[start..k];
        let hi = run.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lo = run.iter().copied().fold(f64::INFINITY, f64::min);
        if best.is_none_or(|(swing, _, _)| hi - lo > swing) {
            best = Some((hi - lo, start, k - 1));
        }
    }
    best
}

/// Everything the report needs from one run of `scenario`.
pub fn analyse(
    scenario: &Scenario,
    mode: QueueMode,
    records: &[RequestRecord],
    settle_s: f64,
) -> ModeResult {
    let window = Window {
        from_s: settle_s.min(scenario.seconds * 0.5),
        to_s: scenario.seconds,
    };
    let n = scenario.tenants.len();
    let of = |i: usize| records.iter().filter(move |r| r.tenant == i);
    let backlog = Backlog::of(n, records, window);

    let raw_service: Vec<f64> = (0..n)
        .map(|i| {
            of(i)
                .map(|r| weighted(delivered(r, window.from_s, window.to_s)))
                .sum()
        })
        .collect();
    let total_raw: f64 = raw_service.iter().sum();
    let mut tenants = Vec::with_capacity(n);
    for (i, load) in scenario.tenants.iter().enumerate() {
        let mut errors = BTreeMap::new();
        for r in of(i).filter(|r| !r.is_success()) {
            *errors.entry(r.outcome.label()).or_insert(0) += 1;
        }
        let ok_in_window = of(i)
            .filter(|r| r.is_success() && window.contains(r.done_s))
            .count();
        let tokens: f64 = of(i)
            .map(|r| {
                let (p, o) = delivered(r, window.from_s, window.to_s);
                p + o
            })
            .sum();
        tenants.push(TenantResult {
            tenant: load.tenant.clone(),
            role: load.role.clone(),
            weight: load.weight,
            steady: load.steady,
            offered_rps: load.offered_rps(scenario.seconds),
            sent: of(i).count() as u64,
            ok: of(i).filter(|r| r.is_success()).count() as u64,
            errors,
            ok_rps: ok_in_window as f64 / window.len(),
            tokens_per_s: tokens / window.len(),
            service: raw_service[i] / load.weight,
            share: if total_raw > 0.0 {
                raw_service[i] / total_raw
            } else {
                0.0
            },
            ttft_ms: Quantiles::of(ttfts(of(i), window)),
            backlogged: backlog.fraction(i),
            queue_wait: None,
        });
    }

    let backlogged = backlog.backlogged();
    let jain = jains_index(
        &backlogged
            .iter()
            .map(|&i| tenants[i].service)
            .collect::<Vec<_>>(),
    );
    let steady_ttft_samples_ms: Vec<f64> = scenario
        .tenants
        .iter()
        .enumerate()
        .filter(|(_, t)| t.steady)
        .flat_map(|(i, _)| ttfts(of(i), window))
        .collect();
    let last_arrival = records.iter().map(|r| r.intended_s).fold(0.0, f64::max);
    let last_answer = records.iter().map(|r| r.done_s).fold(0.0, f64::max);
    ModeResult {
        mode,
        window,
        backlogged: backlogged
            .iter()
            .map(|&i| tenants[i].role.clone())
            .collect(),
        jain,
        service_gap: service_gap(scenario, records, &backlog),
        tokens_per_s: tenants.iter().map(|t| t.tokens_per_s).sum(),
        ok_rps: tenants.iter().map(|t| t.ok_rps).sum(),
        tenants,
        steady_ttft_ms: Quantiles::of(steady_ttft_samples_ms.clone()),
        steady_ttft_samples_ms,
        drain_s: (last_answer - last_arrival).max(0.0),
        live: None,
        timeline: timeline(scenario, records),
    }
}

fn ttfts<'a>(records: impl Iterator<Item = &'a RequestRecord>, window: Window) -> Vec<f64> {
    records
        .filter(|r| r.is_success() && window.contains(r.intended_s))
        .filter_map(|r| r.first_byte_s.map(|first| (first - r.intended_s) * 1000.0))
        .collect()
}

/// The pair of backlogged tenants whose service drifted apart the most
/// while both were waiting.
fn service_gap(
    scenario: &Scenario,
    records: &[RequestRecord],
    backlog: &Backlog,
) -> Option<ServiceGap> {
    let grid = &backlog.grid;
    // Cumulative cost charged at the first token, per tenant, on the grid.
    let charged: Vec<Vec<f64>> = (0..scenario.tenants.len())
        .map(|i| {
            let weight = scenario.tenants[i].weight;
            let mut charges: Vec<(f64, f64)> = records
                .iter()
                .filter(|r| r.tenant == i && r.is_success())
                .filter_map(|r| {
                    Some((
                        r.first_byte_s?,
                        cost(r.prompt_tokens, r.completion_tokens) / weight,
                    ))
                })
                .collect();
            charges.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut sum = 0.0;
            let mut next = 0;
            grid.iter()
                .map(|&t| {
                    while next < charges.len() && charges[next].0 <= t {
                        sum += charges[next].1;
                        next += 1;
                    }
                    sum
                })
                .collect()
        })
        .collect();
    let largest = largest_costs(scenario, records);
    let min_len = (MIN_COMMON_BACKLOG_S / GRID_S).round() as usize;
    let backlogged = backlog.backlogged();
    let mut best: Option<ServiceGap> = None;
    for (k, &f) in backlogged.iter().enumerate() {
        for &g in &backlogged[k + 1..] {
            let diff: Vec<f64> = charged[f]
                .iter()
                .zip(&charged[g])
                .map(|(a, b)| a - b)
                .collect();
            let Some((gap, start, end)) = largest_swing(&diff, &backlog.common(f, g), min_len)
            else {
                continue;
            };
            if best.as_ref().is_none_or(|b| gap > b.gap) {
                best = Some(ServiceGap {
                    between: [
                        scenario.tenants[f].role.clone(),
                        scenario.tenants[g].role.clone(),
                    ],
                    gap,
                    bound: vtc_bound(&largest, f, g),
                    from_s: grid[start] - GRID_S / 2.0,
                    to_s: grid[end] + GRID_S / 2.0,
                });
            }
        }
    }
    best
}

/// Each tenant's largest single-request cost, divided by its weight.
pub fn largest_costs(scenario: &Scenario, records: &[RequestRecord]) -> Vec<f64> {
    (0..scenario.tenants.len())
        .map(|i| {
            records
                .iter()
                .filter(|r| r.tenant == i && r.is_success())
                .map(|r| cost(r.prompt_tokens, r.completion_tokens) / scenario.tenants[i].weight)
                .fold(0.0, f64::max)
        })
        .collect()
}

/// VTC's bound on the service gap of two backlogged tenants (Sheng et al.,
/// OSDI'24): twice the largest cost one request can add to a counter.
pub fn vtc_bound(largest_costs: &[f64], f: usize, g: usize) -> f64 {
    2.0 * largest_costs[f].max(largest_costs[g])
}

fn timeline(scenario: &Scenario, records: &[RequestRecord]) -> Vec<TenantTimeline> {
    let buckets = (scenario.seconds / BUCKET_S).ceil() as usize;
    let bucket_of =
        |t: f64| ((t / BUCKET_S).floor().max(0.0) as usize).min(buckets.saturating_sub(1));
    scenario
        .tenants
        .iter()
        .enumerate()
        .map(|(i, load)| {
            let mine: Vec<&RequestRecord> = records.iter().filter(|r| r.tenant == i).collect();
            let service_per_s = (0..buckets)
                .map(|b| {
                    let (from, to) = (b as f64 * BUCKET_S, (b + 1) as f64 * BUCKET_S);
                    mine.iter()
                        .map(|r| weighted(delivered(r, from, to)))
                        .sum::<f64>()
                        / load.weight
                        / BUCKET_S
                })
                .collect();
            let mut ttft: Vec<Vec<f64>> = vec![Vec::new(); buckets];
            let mut failed = vec![0u64; buckets];
            for r in &mine {
                let b = bucket_of(r.intended_s);
                match r.first_byte_s.filter(|_| r.is_success()) {
                    Some(first) => ttft[b].push((first - r.intended_s) * 1000.0),
                    None => failed[b] += 1,
                }
            }
            let quantiles: Vec<Quantiles> = ttft.into_iter().map(Quantiles::of).collect();
            TenantTimeline {
                role: load.role.clone(),
                service_per_s,
                ttft_p50_ms: quantiles.iter().map(|q| q.p50).collect(),
                ttft_p99_ms: quantiles.iter().map(|q| q.p99).collect(),
                failed,
            }
        })
        .collect()
}
