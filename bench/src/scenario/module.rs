//! `module`: the whole chain as one module (`llm-gateway`: one VM per
//! worker, one registry, the phases passing values instead of headers)
//! against the three filters, and each against Envoy with no filter at all
//! (`full / none`, the share of Envoy's throughput the gateway keeps).

use testbed::{FilterModule, FilterSet, TestbedConfig};

use super::{Settings, chat_recipe, require_built, require_gateway_built};
use crate::error::BenchError;
use crate::harness::{Contender, compare};
use crate::report::Report;

pub fn run(settings: &Settings) -> Result<Report, BenchError> {
    require_built(FilterSet::ALL)?;
    require_gateway_built()?;
    let recipe = chat_recipe("chat completion, small body", "Say hello in one word.");
    let full = |side: &str, module: FilterModule| -> TestbedConfig {
        let mut config = settings.testbed(side, FilterSet::ALL);
        config.module = module;
        config
    };
    let none = |side: &str| settings.testbed(side, FilterSet::NONE);
    let comparisons = vec![
        compare(
            Contender::new("one module", full("module", FilterModule::Gateway)),
            Contender::new("three filters", full("filters", FilterModule::Filters)),
            &recipe,
            &settings.plan,
        )?,
        compare(
            Contender::new("one module", full("module-vs-none", FilterModule::Gateway)),
            Contender::new("none", none("none-1")),
            &recipe,
            &settings.plan,
        )?,
        compare(
            Contender::new(
                "three filters",
                full("filters-vs-none", FilterModule::Filters),
            ),
            Contender::new("none", none("none-2")),
            &recipe,
            &settings.plan,
        )?,
    ];
    Ok(settings.report(
        "module",
        "full chain as one module vs as three filters, and each vs no filter",
        "Requests through the whole chain (authentication, policy, two-phase admission with \
         ratelimit-service) packaged as one module against the same chain as three filters \
         (four wasm filters in Envoy's chain, passing the tenant and the decision as headers), \
         and each against Envoy with no filter. Limits are far above the load.",
        comparisons,
    ))
}
