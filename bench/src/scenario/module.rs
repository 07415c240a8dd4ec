//! `module`: the whole chain (the gateway module: authentication, policy,
//! two-phase admission with ratelimit-service) against Envoy with no filter
//! at all (`full / none`, the share of Envoy's throughput the gateway
//! keeps).

use testbed::FilterSet;

use super::{Settings, chat_recipe, require_built};
use crate::error::BenchError;
use crate::harness::{Contender, compare};
use crate::report::Report;

pub fn run(settings: &Settings) -> Result<Report, BenchError> {
    require_built(FilterSet::ALL)?;
    let recipe = chat_recipe("chat completion, small body", "Say hello in one word.");
    let comparisons = vec![compare(
        Contender::new("full", settings.testbed("full", FilterSet::ALL)),
        Contender::new("none", settings.testbed("none", FilterSet::NONE)),
        &recipe,
        &settings.plan,
    )?];
    Ok(settings.report(
        "module",
        "full chain (the gateway module) vs no filter",
        "Requests through the whole chain (the gateway module: authentication, policy, \
         two-phase admission with ratelimit-service) against Envoy with no filter. Limits are \
         far above the load.",
        comparisons,
    ))
}
