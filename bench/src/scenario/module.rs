//! `module`: the whole chain (the gateway module: authentication, policy,
//! admission with ratelimit-service) against Envoy with no filter at all
//! (`full / none`, the share of Envoy's throughput the gateway keeps), and
//! a small body admitted in one call (FULL, the default) against the same
//! request admitted in two (OPEN on the headers, RESERVE after the policy:
//! `one_call_max_body_bytes = 0`).

use testbed::FilterSet;

use super::{Settings, chat_recipe, require_built};
use crate::error::BenchError;
use crate::harness::{Contender, compare};
use crate::report::Report;

pub fn run(settings: &Settings) -> Result<Report, BenchError> {
    require_built(FilterSet::ALL)?;
    let recipe = chat_recipe("chat completion, small body", "Say hello in one word.");
    let two_calls = {
        let mut config = settings.testbed("two-calls", FilterSet::ALL);
        config.one_call_max_body_bytes = Some(0);
        config
    };
    let comparisons = vec![
        compare(
            Contender::new("one call", settings.testbed("one-call", FilterSet::ALL)),
            Contender::new("two calls", two_calls),
            &recipe,
            &settings.plan,
        )?,
        compare(
            Contender::new("full", settings.testbed("full", FilterSet::ALL)),
            Contender::new("none", settings.testbed("none", FilterSet::NONE)),
            &recipe,
            &settings.plan,
        )?,
    ];
    Ok(settings.report(
        "module",
        "full chain (the gateway module) vs no filter; one Admit call vs two",
        "Requests through the whole chain (the gateway module: authentication, policy, \
         admission with ratelimit-service) against Envoy with no filter, and the small body \
         admitted in one call (FULL, the default) against the same chain admitting it in two \
         (OPEN on the headers, RESERVE after the policy; one_call_max_body_bytes = 0). Limits \
         are far above the load.",
        comparisons,
    ))
}
