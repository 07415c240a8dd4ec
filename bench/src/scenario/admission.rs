//! `admission`: what the admission filter and its gRPC round trip to
//! ratelimit-service add to the rest of the chain. Limits are generous, so
//! every request is admitted and the figure is the cost of the bookkeeping.

use testbed::FilterSet;

use super::{Settings, chat_recipe, require_built};
use crate::error::BenchError;
use crate::harness::{Contender, compare};
use crate::report::Report;

const AUTH_POLICY: FilterSet = FilterSet {
    tenant_auth: true,
    llm_policy: true,
    admission: false,
};

pub fn run(settings: &Settings) -> Result<Report, BenchError> {
    require_built(FilterSet::ALL)?;
    let recipe = chat_recipe("chat completion, small body", "Say hello in one word.");
    let comparison = compare(
        Contender::new("full", settings.testbed("full", FilterSet::ALL)),
        Contender::new("auth+policy", settings.testbed("auth-policy", AUTH_POLICY)),
        &recipe,
        &settings.plan,
    )?;
    Ok(settings.report(
        "admission",
        "full chain (with admission + ratelimit-service) vs tenant-auth + llm-policy",
        "Requests through the full filter chain, whose admission filter reserves and settles every \
         request with ratelimit-service over gRPC, against the same chain without admission. \
         Limits are set far above the load, so nothing is rejected.",
        vec![comparison],
    ))
}
