//! `builds`: this build of the gateway module against another build of it,
//! both running the whole chain. What a change to the module's code or its
//! build settings costs or saves, side by side in one run: build the
//! baseline, copy its `llm_gateway.wasm` aside, make the change, rebuild.
//! A `ratelimit-service` binary beside the baseline's module is run on the
//! baseline side too: a change to the service is measured the same way.

use std::path::PathBuf;

use clap::Args;
use testbed::FilterSet;

use super::{Settings, chat_recipe, require_built};
use crate::error::BenchError;
use crate::harness::{Contender, compare};
use crate::report::Report;

#[derive(Debug, Args)]
pub struct BuildsArgs {
    /// Directory holding the baseline build's `llm_gateway.wasm` (and, to
    /// compare the service too, its `ratelimit-service`).
    #[arg(long, value_name = "DIR")]
    pub baseline: PathBuf,
}

pub fn run(settings: &Settings, args: &BuildsArgs) -> Result<Report, BenchError> {
    let baseline_wasm = args.baseline.join("llm_gateway.wasm");
    if !baseline_wasm.is_file() {
        return Err(BenchError::ModuleNotBuilt {
            path: baseline_wasm,
        });
    }
    require_built(FilterSet::ALL)?;
    let recipe = chat_recipe("chat completion, small body", "Say hello in one word.");
    let baseline = {
        let mut config = settings.testbed("baseline-build", FilterSet::ALL);
        config.module_dir = Some(args.baseline.clone());
        let service = args.baseline.join("ratelimit-service");
        config.ratelimit_binary = service.is_file().then_some(service);
        config
    };
    let with_service = baseline.ratelimit_binary.is_some();
    let comparison = compare(
        Contender::new("this build", settings.testbed("this-build", FilterSet::ALL)),
        Contender::new("baseline build", baseline),
        &recipe,
        &settings.plan,
    )?;
    Ok(settings.report(
        "builds",
        "this build of the gateway module vs a baseline build",
        &format!(
            "The whole chain on this checkout's llm_gateway.wasm against the same chain on \
             the build in {}{}: what a change to the module costs or saves. Envoy's CPU per \
             request (below the tables) is where the module's own work shows.",
            args.baseline.display(),
            if with_service {
                " (its ratelimit-service too)"
            } else {
                ""
            }
        ),
        vec![comparison],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::LoadPlan;

    #[test]
    fn a_baseline_without_the_module_is_refused_before_anything_starts() {
        let settings = Settings {
            plan: LoadPlan {
                rates: vec![1.0],
                duration_s: 1.0,
                connections: 1,
                rounds: 1,
                warmup_s: 0.0,
                timeout_s: 1.0,
                max_in_flight: 1,
            },
            envoy_concurrency: 1,
            replicas: 1,
            logs_dir: None,
        };
        let empty = tempfile::tempdir().expect("temp dir");
        let args = BuildsArgs {
            baseline: empty.path().to_owned(),
        };
        match run(&settings, &args) {
            Err(BenchError::ModuleNotBuilt { path }) => {
                assert_eq!(path, empty.path().join("llm_gateway.wasm"));
            }
            other => panic!("expected ModuleNotBuilt, got {other:?}"),
        }
    }
}
