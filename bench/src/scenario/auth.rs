//! `auth`: what the tenant-auth filter costs, against the same Envoy without filters.

use testbed::FilterSet;

use super::{Settings, chat_recipe, require_built};
use crate::error::BenchError;
use crate::harness::{Contender, compare};
use crate::report::Report;

pub fn run(settings: &Settings) -> Result<Report, BenchError> {
    require_built(FilterSet::AUTH_ONLY)?;
    let recipe = chat_recipe("chat completion, small body", "Say hello in one word.");
    let comparison = compare(
        Contender::new("auth", settings.testbed("auth", FilterSet::AUTH_ONLY)),
        Contender::new("none", settings.testbed("none", FilterSet::NONE)),
        &recipe,
        &settings.plan,
    )?;
    Ok(settings.report(
        "auth",
        "tenant-auth filter vs no filters",
        "Requests through Envoy with the tenant-auth filter (API key → SHA-256 digest → tenant) \
         against the same Envoy without it, at a fixed request rate and at saturation.",
        vec![comparison],
    ))
}
