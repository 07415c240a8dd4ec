//! The service's own fairness telemetry over a run: its live Jain's index
//! and the service gap computed from its per-tenant service gauge, which
//! counts what the queue charged at admission (estimates, corrected by the
//! real usage) rather than what the client saw streaming back.

use serde::Serialize;

use super::analysis::{Backlog, ServiceGap, Window, largest_swing};
use super::plan::Scenario;
use super::telemetry::Snapshot;

/// What the gauges said while the scenario's tenants were backlogged.
#[derive(Debug, Clone, Serialize)]
pub struct LiveTelemetry {
    /// Snapshots in the window.
    pub samples: usize,
    /// `ratelimit_queue_jains_index` while at least two of the scenario's
    /// tenants had requests queued.
    pub jain_min: Option<f64>,
    pub jain_mean: Option<f64>,
    /// Largest swing of the service gauges of two tenants both queued.
    pub gap: Option<ServiceGap>,
}

/// How long after a snapshot's time the service's gauge may have been
/// computed: one sampling period.
const GAUGE_LAG_S: f64 = 0.5;

/// `bound(f, g)` is VTC's bound for tenants `f` and `g` of the scenario.
/// The gap is taken between the backlogged tenants of `backlog`, within
/// stretches both waited throughout (VTC's bound says nothing across a
/// tenant's idle time, when its counter is lifted), from snapshots whose
/// gauges were refreshed inside the stretch.
pub fn live(
    scenario: &Scenario,
    snapshots: &[Snapshot],
    window: Window,
    backlog: &Backlog,
    bound: impl Fn(usize, usize) -> f64,
) -> LiveTelemetry {
    let in_window: Vec<&Snapshot> = snapshots
        .iter()
        .filter(|s| s.at_s >= window.from_s && s.at_s < window.to_s)
        .collect();
    let tenant = |i: usize| scenario.tenants[i].tenant.as_str();
    let queued = |s: &Snapshot, i: usize| s.depth.get(tenant(i)).is_some_and(|d| *d > 0.0);
    let n = scenario.tenants.len();
    let jains: Vec<f64> = in_window
        .iter()
        .filter(|s| (0..n).filter(|&i| queued(s, i)).count() >= 2)
        .filter_map(|s| s.jain)
        .collect();
    let service = |s: &Snapshot, i: usize| s.service.get(tenant(i)).copied();
    let mut gap: Option<ServiceGap> = None;
    let backlogged = backlog.backlogged();
    for (k, &f) in backlogged.iter().enumerate() {
        for &g in &backlogged[k + 1..] {
            for (from, to) in backlog.common_runs(f, g) {
                // Snapshots that carry a fresh value, computed within the stretch.
                let points: Vec<(f64, f64)> = snapshots
                    .windows(2)
                    .filter(|w| w[1].at_s >= from + GAUGE_LAG_S && w[1].at_s <= to)
                    .filter(|w| {
                        service(&w[1], f) != service(&w[0], f)
                            || service(&w[1], g) != service(&w[0], g)
                    })
                    .filter_map(|w| Some((w[1].at_s, service(&w[1], f)? - service(&w[1], g)?)))
                    .collect();
                let diff: Vec<f64> = points.iter().map(|p| p.1).collect();
                let Some((swing, start, end)) = largest_swing(&diff, &vec![true; diff.len()], 2)
                else {
                    continue;
                };
                if gap.as_ref().is_none_or(|b| swing > b.gap) {
                    gap = Some(ServiceGap {
                        between: [
                            scenario.tenants[f].role.clone(),
                            scenario.tenants[g].role.clone(),
                        ],
                        gap: swing,
                        bound: bound(f, g),
                        from_s: points[start].0,
                        to_s: points[end].0,
                    });
                }
            }
        }
    }
    LiveTelemetry {
        samples: in_window.len(),
        jain_min: jains.iter().copied().reduce(f64::min),
        jain_mean: (!jains.is_empty()).then(|| jains.iter().sum::<f64>() / jains.len() as f64),
        gap,
    }
}
