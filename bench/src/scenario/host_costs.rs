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

fn probe(settings: &Settings, side: &str, work: serde_json::Value) -> TestbedConfig {
    let mut config = settings.testbed(side, FilterSet::NONE);
    config.probe_filters = vec![PROBE.to_owned()];
    config.probe_config = Some(work);
    config
}

/// [`probe`] with ratelimit-service running (the `ratelimit` cluster).
fn probe_with_service(settings: &Settings, side: &str, work: serde_json::Value) -> TestbedConfig {
    let mut config = probe(settings, side, work);
    config.ratelimit = true;
    config
}

pub fn run(settings: &Settings) -> Result<Report, BenchError> {
    require_built(FilterSet::ALL)?;
    require_wasm(PROBE)?;
    let recipe = chat_recipe("chat completion, small body", "Say hello in one word.");
    let plain = || probe(settings, "probe", json!({}));
    let comparisons = vec![
        compare(
            Contender::new("probe", plain()),
            Contender::new("none", settings.testbed("none", FilterSet::NONE)),
            &recipe,
            &settings.plan,
        )?,
        compare(
            Contender::new(
                "reads",
                probe(settings, "reads", json!({ "header_reads": HEADER_READS })),
            ),
            Contender::new("probe", plain()),
            &recipe,
            &settings.plan,
        )?,
        compare(
            Contender::new(
                "spin",
                probe(settings, "spin", json!({ "spin_rounds": SPIN_ROUNDS })),
            ),
            Contender::new("probe", plain()),
            &recipe,
            &settings.plan,
        )?,
        compare(
            Contender::new(
                "call",
                probe_with_service(settings, "call", json!({ "grpc_call": true })),
            ),
            Contender::new("probe", probe_with_service(settings, "probe", json!({}))),
            &recipe,
            &settings.plan,
        )?,
        compare(
            Contender::new(
                "hold",
                probe(settings, "hold", json!({ "hold_body": true })),
            ),
            Contender::new("probe", plain()),
            &recipe,
            &settings.plan,
        )?,
        compare(
            Contender::new(
                "rewrite",
                probe(
                    settings,
                    "rewrite",
                    json!({ "hold_body": true, "rewrite_body": true }),
                ),
            ),
            Contender::new(
                "hold",
                probe(settings, "hold", json!({ "hold_body": true })),
            ),
            &recipe,
            &settings.plan,
        )?,
        compare(
            Contender::new(
                "writes",
                probe(
                    settings,
                    "writes",
                    json!({ "header_writes": HEADER_WRITES }),
                ),
            ),
            Contender::new("probe", plain()),
            &recipe,
            &settings.plan,
        )?,
        compare(
            Contender::new(
                "respond",
                probe(settings, "respond", json!({ "respond": true })),
            ),
            Contender::new("probe", plain()),
            &recipe,
            &settings.plan,
        )?,
    ];
    Ok(settings.report(
        "host-costs",
        "what Envoy charges a wasm filter: per filter, host crossing, wasm instruction, gRPC call \
         and held body",
        &format!(
            "The test-only crash probe (reads one header, passes everything) against no filter; \
             the probe reading `:path` {HEADER_READS} more times ({} crossings: a host call and \
             an allocation callback each) against the plain probe; the probe running \
             {SPIN_ROUNDS} xorshift rounds against the plain probe; the probe holding each \
             request for one unary gRPC call to ratelimit-service (an unknown method, answered \
             at once) against the plain probe, both with the service running; the probe holding \
             the headers until the body is in and reading it against the plain probe; the held \
             body rewritten longer, its length set and its route matched again against the held \
             body; {HEADER_WRITES} request headers written against the plain probe; four \
             response headers written and the response read against the plain probe. Envoy's \
             CPU per request added, divided by the work, prices each (bench/README.md, \
             \"host-costs\").",
            2 * HEADER_READS
        ),
        comparisons,
    ))
}
