//! The analysis, plans and plots on synthetic requests whose right answers
//! are known.

use super::analysis::{self, Quantiles, jains_index, largest_swing};
use super::client::stream_usage;
use super::driver::{RequestRecord, Rng, arrivals};
use super::plan::{self, Phase, ScenarioName};
use super::pool::{self, PoolShape, QueueMode};
use super::report::{self, FairnessReport, ScenarioResult};
use super::svg;
use crate::load::Outcome;

fn pool_shape() -> PoolShape {
    PoolShape {
        replicas: 2,
        slots_per_replica: 4,
        step_ms: 20,
        prefill_us_per_token: 10,
    }
}

/// A successful chat request of tenant `tenant` (10 prompt + 10 output
/// tokens, cost 30) waiting from `intended` to `first` and streaming for 1 s.
fn ok(tenant: usize, intended: f64, first: f64) -> RequestRecord {
    RequestRecord {
        tenant,
        intended_s: intended,
        first_byte_s: Some(first),
        done_s: first + 1.0,
        outcome: Outcome::Status(200),
        prompt_tokens: 10,
        completion_tokens: 10,
    }
}

fn refused(tenant: usize, at: f64, status: u16, done: f64) -> RequestRecord {
    RequestRecord {
        tenant,
        intended_s: at,
        first_byte_s: Some(done),
        done_s: done,
        outcome: Outcome::Status(status),
        prompt_tokens: 0,
        completion_tokens: 0,
    }
}

#[test]
fn jains_index_is_one_when_even_and_one_over_n_when_one_takes_all() {
    assert_eq!(jains_index(&[5.0, 5.0, 5.0]), Some(1.0));
    let one_takes_all = jains_index(&[9.0, 0.0, 0.0]).unwrap();
    assert!((one_takes_all - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(
        jains_index(&[4.0]),
        None,
        "one tenant has nobody to be fair to"
    );
    assert!((jains_index(&[2.0, 1.0]).unwrap() - 0.9).abs() < 1e-12);
}

#[test]
fn quantiles_are_nearest_rank() {
    let q = Quantiles::of((1..=100).map(f64::from).rev().collect());
    assert_eq!(
        (q.count, q.p50, q.p99, q.max),
        (100, Some(50.0), Some(99.0), Some(100.0))
    );
    assert_eq!(Quantiles::of(vec![7.0]).p99, Some(7.0));
    assert_eq!(Quantiles::of(Vec::new()).p50, None);
}

#[test]
fn swing_is_taken_within_common_backlog_only() {
    let diff = [0.0, 5.0, -3.0, 100.0, 1.0, 2.0, 4.0];
    let both = [true, true, true, false, true, true, true];
    // Across the gap the 100 would dominate; it is not common backlog.
    assert_eq!(largest_swing(&diff, &both, 2), Some((8.0, 0, 2)));
    assert_eq!(
        largest_swing(&diff, &both, 4),
        None,
        "runs shorter than the minimum are ignored"
    );
    assert_eq!(largest_swing(&diff, &[false; 7], 1), None);
}

#[test]
fn arrivals_follow_each_phase_rate() {
    let phases = [
        Phase {
            from_s: 0.0,
            to_s: 100.0,
            rate: 20.0,
        },
        Phase {
            from_s: 200.0,
            to_s: 300.0,
            rate: 5.0,
        },
    ];
    let times = arrivals(&phases, &mut Rng::new(3));
    let first = times.iter().filter(|t| **t < 100.0).count() as f64;
    let second = times.iter().filter(|t| **t >= 200.0 && **t < 300.0).count() as f64;
    assert_eq!(
        times.len() as f64,
        first + second,
        "nothing outside the phases"
    );
    assert!((first - 2000.0).abs() < 150.0, "{first}");
    assert!((second - 500.0).abs() < 75.0, "{second}");
    assert!(times.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        times,
        arrivals(&phases, &mut Rng::new(3)),
        "seeded runs repeat"
    );
}

#[test]
fn usage_comes_from_the_last_chunk_that_has_it() {
    let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
                  data: {\"choices\":[],\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":16,\"total_tokens\":58}}\n\n\
                  data: [DONE]\n\n";
    assert_eq!(stream_usage(stream), Some((42, 16)));
    assert_eq!(stream_usage("data: [DONE]\n\n"), None);
    assert_eq!(stream_usage("{\"error\":{}}"), None);
}

#[test]
fn scenarios_scale_with_capacity_and_bursts_alternate() {
    let capacity = pool_shape().capacity_rps();
    assert!(
        (capacity - 25.0).abs() < 1e-9,
        "8 slots / (16 tokens x 20 ms)"
    );
    let noisy = plan::scenario(ScenarioName::Noisy, capacity, 20.0);
    let heavy = noisy.tenants.iter().find(|t| t.role == "heavy").unwrap();
    assert!((heavy.offered_rps(20.0) - 250.0).abs() < 1e-9);
    assert_eq!(noisy.tenants.iter().filter(|t| t.steady).count(), 3);
    let onoff = plan::scenario(ScenarioName::Onoff, capacity, 18.0);
    let burst = &onoff.tenants[0];
    let on: Vec<(f64, f64)> = burst.phases.iter().map(|p| (p.from_s, p.to_s)).collect();
    assert_eq!(on.len(), 4);
    assert_eq!(on[0], (2.0, 2.6));
    assert!(
        (on[3].0 - 17.0).abs() < 1e-9 && (on[3].1 - 17.6).abs() < 1e-9,
        "{on:?}"
    );
    // Four bursts of 0.6 s at 2x capacity over 18 s.
    assert!((burst.offered_rps(18.0) - 4.0 * 0.6 * 2.0 * capacity / 18.0).abs() < 1e-9);
}

#[test]
fn the_registry_holds_every_tenant_with_its_weight() {
    let capacity = pool_shape().capacity_rps();
    let scenarios: Vec<_> = ScenarioName::ALL
        .iter()
        .map(|&n| plan::scenario(n, capacity, 18.0))
        .collect();
    let registry = tenant_registry::Registry::from_toml(&pool::registry(&scenarios, &pool_shape()))
        .expect("fairness registry");
    let gold = registry.tenant("weighted-gold").expect("gold");
    assert_eq!(registry.weight(gold), 2.0);
    let digest = tenant_registry::api_key_digest(&pool::api_key("noisy-heavy"));
    let (tenant, _, _) = registry.key_by_digest(&digest).expect("heavy's key");
    assert_eq!(tenant.id, "noisy-heavy");
    let pool = &registry.config().pools[pool::POOL];
    assert_eq!(pool.max_in_flight_per_replica, 4);
    assert!(registry.tenant(pool::PROBE_TENANT).is_some());
}

/// Two tenants of weights 2 and 1, both backlogged from 0 to 10 s: the
/// weight-2 one gets two requests started per second, the other one.
fn weighted_records() -> Vec<RequestRecord> {
    let mut records = Vec::new();
    for s in 0..10 {
        let t = f64::from(s);
        // Each tenant always has a request waiting since t = 0.
        records.push(ok(0, 0.0, t + 0.25));
        records.push(ok(0, 0.0, t + 0.75));
        records.push(ok(1, 0.0, t + 0.5));
    }
    records.push(refused(1, 3.0, 429, 3.01));
    records.push(refused(1, 4.0, 503, 9.0));
    records
}

fn weighted_scenario() -> plan::Scenario {
    let mut scenario = plan::scenario(ScenarioName::Weighted, 25.0, 10.0);
    assert_eq!(scenario.tenants[0].weight, 2.0);
    scenario.tenants.truncate(2);
    scenario
}

#[test]
fn analysis_measures_shares_ttft_backlog_and_failures() {
    let scenario = weighted_scenario();
    let result = analysis::analyse(&scenario, QueueMode::Fair, &weighted_records(), 2.0);
    assert_eq!(result.window.from_s, 2.0);
    let gold = result.tenant("gold").unwrap();
    let silver = result.tenant("silver").unwrap();
    assert_eq!(
        (gold.sent, gold.ok, silver.sent, silver.ok),
        (20, 20, 12, 10)
    );
    assert_eq!(silver.errors.get("429"), Some(&1));
    assert_eq!(silver.errors.get("503"), Some(&1));
    // Twice the raw service, the same service per unit of weight.
    assert!(
        (gold.share / silver.share - 2.0).abs() < 0.05,
        "{} / {}",
        gold.share,
        silver.share
    );
    assert!((gold.service / silver.service - 1.0).abs() < 0.05);
    assert!(result.jain.unwrap() > 0.999, "{:?}", result.jain);
    assert_eq!(result.backlogged, ["gold", "silver"]);
    // Requests meant for t = 0 are outside the window: no TTFT sample.
    assert_eq!(gold.ttft_ms.count, 0);
    // 3 requests of 10 + 2 x 10 tokens per second.
    assert!(
        (result.tokens_per_s - 60.0).abs() < 3.0,
        "{}",
        result.tokens_per_s
    );
    assert_eq!(result.timeline.len(), 2);
    assert_eq!(result.timeline[0].service_per_s.len(), 10);
    assert_eq!(result.timeline[1].failed.iter().sum::<u64>(), 2);
}

#[test]
fn the_gap_stays_under_the_bound_when_service_alternates_and_grows_when_it_does_not() {
    let scenario = weighted_scenario();
    let fair = analysis::analyse(&scenario, QueueMode::Fair, &weighted_records(), 0.0);
    let gap = fair.service_gap.expect("both backlogged");
    // One request costs 30 tokens (15 per unit of weight for gold).
    assert_eq!(gap.bound, 60.0);
    assert!(gap.gap <= gap.bound, "{gap:?}");
    // Silver served for 3 s, then starved while still waiting.
    let mut starved: Vec<RequestRecord> = (0..10).map(|s| ok(0, 0.0, f64::from(s) + 0.5)).collect();
    starved.extend((0..3).map(|s| ok(1, 0.0, f64::from(s) + 0.5)));
    starved.push(refused(1, 3.0, 503, 10.0));
    let unfair = analysis::analyse(&scenario, QueueMode::Fifo, &starved, 0.0);
    let gap = unfair.service_gap.expect("both backlogged");
    assert!(gap.gap > gap.bound, "{gap:?}");
}

#[test]
fn targets_are_checked_from_the_scenarios() {
    let scenario = weighted_scenario();
    let fair = analysis::analyse(&scenario, QueueMode::Fair, &weighted_records(), 2.0);
    let fifo = analysis::analyse(&scenario, QueueMode::Fifo, &weighted_records(), 2.0);
    let mut report = FairnessReport {
        benchmark: "fairness",
        title: "test",
        command: "gateway-bench fairness".into(),
        generated_at: "now".into(),
        host: crate::report::Host::current(std::path::Path::new("."), 2),
        setup: report::setup(pool_shape(), 10.0, 2.0, 7),
        targets: Vec::new(),
        scenarios: vec![ScenarioResult {
            scenario,
            fair,
            fifo,
            plot: "fairness/weighted.svg".into(),
        }],
    };
    report.check_targets();
    let weighted = report
        .targets
        .iter()
        .find(|t| t.target.starts_with("weighted"))
        .unwrap();
    assert_eq!(weighted.met, Some(true), "{weighted:?}");
    let equal = report
        .targets
        .iter()
        .find(|t| t.target.starts_with("equal weights"))
        .unwrap();
    assert_eq!(equal.met, None, "the equal scenario did not run");
    let md = report.markdown();
    assert!(md.contains("## weighted: weighted tiers 2:1"), "{md}");
    assert!(md.contains("![weighted](fairness/weighted.svg)"));
    let svg_text = svg::render(&report::figure(&report.scenarios[0]));
    assert!(svg_text.starts_with("<svg") && svg_text.trim_end().ends_with("</svg>"));
    assert!(
        svg_text.matches("<polyline").count() >= 4,
        "two tenants in two panels"
    );
    assert!(svg_text.contains("gold (w 2)"));
}

#[test]
fn axes_get_round_ticks() {
    assert_eq!(svg::nice_step(100.0), 20.0);
    assert_eq!(svg::nice_step(12.0), 2.5);
    assert_eq!(svg::nice_step(0.0), 1.0);
    assert_eq!(svg::tick_label(2500.0), "2.5k");
    assert_eq!(svg::tick_label(20.0), "20");
    assert_eq!(svg::tick_label(0.25), "0.25");
}

#[test]
fn queue_waits_come_from_the_service_histogram() {
    let exposition = "# TYPE ratelimit_queue_wait_seconds histogram\n\
        ratelimit_queue_wait_seconds_sum{tenant=\"a\"} 0.3\n\
        ratelimit_queue_wait_seconds_count{tenant=\"a\"} 100\n\
        ratelimit_queue_wait_seconds_bucket{le=\"0.001\",tenant=\"a\"} 50\n\
        ratelimit_queue_wait_seconds_bucket{le=\"0.002\",tenant=\"a\"} 98\n\
        ratelimit_queue_wait_seconds_bucket{le=\"0.004\",tenant=\"a\"} 100\n\
        ratelimit_queue_wait_seconds_bucket{le=\"+Inf\",tenant=\"a\"} 100\n\
        ratelimit_queue_wait_seconds_count{tenant=\"idle\"} 0\n\
        ratelimit_queue_depth{pool=\"latency\",tenant=\"a\"} 3\n";
    let none = std::collections::HashMap::new();
    let waits = super::telemetry::queue_waits(exposition, &none);
    let a = waits.get("a").expect("tenant a");
    assert_eq!(a.count, 100);
    assert!((a.mean_ms - 3.0).abs() < 1e-9);
    assert_eq!(a.p99_le_ms, 4.0);
    assert!(!waits.contains_key("idle"), "no waits, no figure");
    // 50 of the 100 were refused at once: the rest waited 6 ms on average,
    // and their p99 sits in the 4 ms bucket still.
    let refused = [("a".to_owned(), 50)].into_iter().collect();
    let a = super::telemetry::queue_waits(exposition, &refused)["a"];
    assert_eq!(a.count, 50);
    assert!((a.mean_ms - 6.0).abs() < 1e-9);
    assert_eq!(a.p99_le_ms, 4.0);
}

#[test]
fn live_gauges_give_the_service_side_gap_and_jain() {
    let scenario = weighted_scenario();
    let exposition = |gold: f64, silver: f64, silver_depth: u32, jain: f64| {
        format!(
            "ratelimit_queue_service_weighted_tokens{{pool=\"latency\",tenant=\"weighted-gold\"}} {gold}\n\
             ratelimit_queue_service_weighted_tokens{{pool=\"latency\",tenant=\"weighted-silver\"}} {silver}\n\
             ratelimit_queue_depth{{pool=\"latency\",tenant=\"weighted-gold\"}} 3\n\
             ratelimit_queue_depth{{pool=\"latency\",tenant=\"weighted-silver\"}} {silver_depth}\n\
             ratelimit_queue_depth{{pool=\"other\",tenant=\"weighted-silver\"}} 9\n\
             ratelimit_queue_jains_index{{pool=\"latency\"}} {jain}\n"
        )
    };
    let snap = super::telemetry::snapshot(&exposition(1.0, 2.0, 1, 0.9), pool::POOL, 4.0);
    assert_eq!(snap.service["weighted-silver"], 2.0);
    assert_eq!(
        snap.depth["weighted-silver"], 1.0,
        "the other pool's gauge is not this one"
    );
    assert_eq!(snap.jain, Some(0.9));
    let snapshots: Vec<_> = [
        (1.0, 0.0, 0.0, 1, 0.5),    // before the window
        (2.2, 500.0, 0.0, 1, 0.99), // may have been computed before the common backlog
        (3.0, 100.0, 110.0, 1, 0.99),
        (5.0, 200.0, 190.0, 1, 0.97),
        (6.0, 200.0, 190.0, 1, 0.97), // not refreshed
        (7.0, 300.0, 330.0, 1, 0.995),
        (9.8, 900.0, 330.0, 0, 0.2), // silver no longer waiting
    ]
    .into_iter()
    .map(|(at, gold, silver, depth, jain)| {
        super::telemetry::snapshot(&exposition(gold, silver, depth, jain), pool::POOL, at)
    })
    .collect();
    let window = analysis::Window {
        from_s: 2.0,
        to_s: 10.0,
    };
    let backlog = analysis::Backlog::of(2, &weighted_records(), window);
    let runs = backlog.common_runs(0, 1);
    assert_eq!(runs.len(), 1);
    assert!(
        (runs[0].0 - 2.0).abs() < 1e-9 && (runs[0].1 - 9.5).abs() < 1e-9,
        "{runs:?}"
    );
    let live = super::live::live(&scenario, &snapshots, window, &backlog, |_, _| 60.0);
    assert_eq!(live.samples, 6);
    assert_eq!(live.jain_min, Some(0.97));
    let gap = live.gap.expect("gap");
    // D = -10, +10, -30 within the common backlog: swing 40.
    assert_eq!(gap.gap, 40.0);
    assert_eq!((gap.from_s, gap.to_s, gap.bound), (3.0, 7.0, 60.0));
}
