//! `policy`: what the llm-policy filter adds on top of tenant-auth, for small
//! and large request bodies (it buffers and parses the body).

use testbed::FilterSet;

use super::{Settings, chat_recipe_of_size, require_built};
use crate::error::BenchError;
use crate::harness::{Contender, SideBySide};
use crate::report::Report;

const AUTH_POLICY: FilterSet = FilterSet {
    tenant_auth: true,
    llm_policy: true,
    admission: false,
};

pub fn run(settings: &Settings, body_sizes: &[usize]) -> Result<Report, BenchError> {
    require_built(AUTH_POLICY)?;
    let pair = SideBySide::start(
        Contender::new("policy", settings.testbed("policy", AUTH_POLICY)),
        Contender::new("auth", settings.testbed("auth", FilterSet::AUTH_ONLY)),
    )?;
    let comparisons = body_sizes
        .iter()
        .map(|&size| {
            let recipe =
                chat_recipe_of_size(&format!("chat completion, {} body", human_size(size)), size);
            pair.compare(&recipe, &settings.plan)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(settings.report(
        "policy",
        "llm-policy filter vs tenant-auth only",
        "Requests through tenant-auth + llm-policy (body parsing, model allowlist, context caps, \
         cache_salt, prefix-affinity key, pool choice) against tenant-auth alone, per request body size.",
        comparisons,
    ))
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}
