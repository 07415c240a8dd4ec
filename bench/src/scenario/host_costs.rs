//! `host-costs`: what Envoy charges for hosting a proxy-wasm filter, priced
//! with the test-only crash probe (`tests/crash-probe`), whose plugin
//! configuration asks for a known amount of work per request:
//!
//! - `probe / none`: a filter that reads one header and passes: the floor
//!   under any module's cost (context creation, the callbacks);
//! - `reads / probe`: the same filter reading `:path` 50 more times: a
//!   host call and an allocation callback each, so Envoy's CPU added,
//!   divided by 100, is the price of one crossing;
//! - `spin / probe`: the same filter running 20,000 xorshift rounds: the
//!   price of wasm instructions in V8 (the mock host counts the rounds'
//!   instructions: `tests/host_calls`, `the_probe_spends_a_known_*`);
//! - `call / probe`: the same filter holding each request for one unary
//!   gRPC call to ratelimit-service (a method it does not have, answered
//!   at once): Envoy's side of a call such as the gateway's Admit. Both
//!   sides run ratelimit-service;
//! - `hold / probe`: the same filter holding the headers until the whole
//!   body is in and reading it, as the gateway's policy does;
//! - `rewrite / hold`: the held body replaced by a longer one, its
//!   `content-length` set and the route matched again, as the policy does;
//! - `writes / probe`: 12 request headers written (as many as the module
//!   writes on a request and its response);
//! - `respond / probe`: four response headers written and each response
//!   chunk read, as admission does (`x-ratelimit-*`, usage).
//!
//! With the gateway module's crossings and instructions per request (also
//! from `tests/host_calls`), these prices say what a change to the module
//! can save before it is benchmarked.

use serde_json::json;
use testbed::{FilterSet, TestbedConfig};

use super::{Settings, chat_recipe, require_built, require_wasm};
use crate::error::BenchError;
use crate::harness::{Contender, compare};
use crate::report::Report;

const PROBE: &str = "crash_probe";
/// Extra `:path` reads of the `reads` side: 100 crossings.
pub const HEADER_READS: u32 = 50;
/// Xorshift rounds of the `spin` side.
pub const SPIN_ROUNDS: u32 = 20_000;
/// Request headers the `writes` side writes.
pub const HEADER_WRITES: u32 = 12;

/// One kind of work priced: the probe doing it against the same testbed
/// without it.
struct Pricing {
    side: &'static str,
    /// What the side does more than its baseline, for the report.
    what: String,
    work: serde_json::Value,
    /// The baseline's side and the probe's work there; `None`: no filter.
    baseline: Option<(&'static str, serde_json::Value)>,
    /// Both sides run ratelimit-service (the `ratelimit` cluster).
    service: bool,
}

impl Pricing {
    fn against_plain(side: &'static str, what: &str, work: serde_json::Value) -> Self {
        Self {
            side,
            what: what.to_owned(),
            work,
            baseline: Some(("probe", json!({}))),
            service: false,
        }
    }
}

fn pricings() -> Vec<Pricing> {
    let hold = json!({ "hold_body": true });
    vec![
        Pricing {
            baseline: None,
            ..Pricing::against_plain(
                "probe",
                "reads one header and passes everything, against no filter",
                json!({}),
            )
        },
        Pricing::against_plain(
            "reads",
            &format!(
                "reads `:path` {HEADER_READS} more times ({} crossings: a host call and an \
                 allocation callback each)",
                2 * HEADER_READS
            ),
            json!({ "header_reads": HEADER_READS }),
        ),
        Pricing::against_plain(
            "spin",
            &format!("runs {SPIN_ROUNDS} xorshift rounds"),
            json!({ "spin_rounds": SPIN_ROUNDS }),
        ),
        Pricing {
            service: true,
            ..Pricing::against_plain(
                "call",
                "holds each request for one unary gRPC call to ratelimit-service (an unknown \
                 method, answered at once), both sides running the service",
                json!({ "grpc_call": true }),
            )
        },
        Pricing::against_plain(
            "hold",
            "holds the headers until the body is in, and reads it",
            hold.clone(),
        ),
        Pricing {
            baseline: Some(("hold", hold)),
            ..Pricing::against_plain(
                "rewrite",
                "rewrites the held body longer, sets its length and has its route matched \
                 again, against the probe holding it",
                json!({ "hold_body": true, "rewrite_body": true }),
            )
        },
        Pricing::against_plain(
            "writes",
            &format!("writes {HEADER_WRITES} request headers"),
            json!({ "header_writes": HEADER_WRITES }),
        ),
        Pricing::against_plain(
            "respond",
            "writes four response headers and reads the response",
            json!({ "respond": true }),
        ),
    ]
}

/// A testbed with the probe doing `work` (no filter at all when `None`).
fn testbed(
    settings: &Settings,
    side: &str,
    work: Option<serde_json::Value>,
    service: bool,
) -> TestbedConfig {
    let mut config = settings.testbed(side, FilterSet::NONE);
    if let Some(work) = work {
        config.probe_filters = vec![PROBE.to_owned()];
        config.probe_config = Some(work);
    }
    config.ratelimit = service;
    config
}

pub fn run(settings: &Settings) -> Result<Report, BenchError> {
    require_built(FilterSet::ALL)?;
    require_wasm(PROBE)?;
    let recipe = chat_recipe("chat completion, small body", "Say hello in one word.");
    let pricings = pricings();
    let question = format!(
        "The test-only crash probe, against the plain probe unless said: {}. Envoy's CPU per \
         request added, divided by the work, prices each (bench/README.md, \"host-costs\").",
        pricings
            .iter()
            .map(|p| format!("`{}` {}", p.side, p.what))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let comparisons = pricings
        .into_iter()
        .map(|pricing| {
            let (baseline, baseline_work) = match pricing.baseline {
                Some((side, work)) => (side, Some(work)),
                None => ("none", None),
            };
            compare(
                Contender::new(
                    pricing.side,
                    testbed(settings, pricing.side, Some(pricing.work), pricing.service),
                ),
                Contender::new(
                    baseline,
                    testbed(settings, baseline, baseline_work, pricing.service),
                ),
                &recipe,
                &settings.plan,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(settings.report(
        "host-costs",
        "what Envoy charges a wasm filter: per filter, host crossing, wasm instruction, gRPC call \
         and held body",
        &question,
        comparisons,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typo in a knob would only show when Envoy refuses the probe's
    /// configuration, minutes into a run.
    #[test]
    fn every_priced_work_is_one_the_probe_accepts() {
        for pricing in pricings() {
            let works =
                std::iter::once(&pricing.work).chain(pricing.baseline.iter().map(|(_, w)| w));
            for work in works {
                let text = serde_json::to_vec(work).expect("JSON");
                assert!(
                    crash_probe::Work::from_config(&text).is_ok(),
                    "{}: {work}",
                    pricing.side
                );
            }
        }
    }
}
