//! `gateway-bench`: side-by-side benchmarks of the gateway's filter chain on
//! the local testbed. Each subcommand starts two testbeds that differ in one
//! filter, drives the same request against both in alternating turns, prints
//! a markdown report and writes it (with JSON) to `bench/results/`.

mod cpu;
mod error;
mod fairness;
mod harness;
mod load;
mod report;
mod scenario;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::BenchError;
use crate::harness::LoadPlan;
use crate::report::Report;
use crate::scenario::Settings;

#[derive(Debug, Parser)]
#[command(name = "gateway-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    benchmark: Benchmark,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Subcommand)]
enum Benchmark {
    /// Authentication alone (the module's auth phase) against no filter.
    Auth,
    /// Authentication + policy against authentication, per body size.
    Policy {
        /// Request body sizes in bytes.
        #[arg(long, value_delimiter = ',', default_values_t = [1024, 65536])]
        sizes: Vec<usize>,
    },
    /// Full chain (admission + ratelimit-service) against authentication + policy.
    Admission,
    /// The full chain (the gateway module) against no filter: full / none.
    Module,
    /// What Envoy charges a wasm filter: per filter, crossing, instruction, gRPC call, held body.
    HostCosts,
    /// This build of the module against another build (`--baseline DIR`), full chain both.
    Builds(scenario::builds::BuildsArgs),
    /// ratelimit-service alone over gRPC: Admit + Complete, in memory vs --redis.
    AdmissionRpc(scenario::admission_rpc::RpcArgs),
    /// Fair admission queue (VTC) vs FIFO: noisy neighbour, weights, bursts, long prompts.
    Fairness(fairness::FairnessArgs),
    /// A registry of real size: start, reload, memory, auth latency.
    RegistryScale(scenario::registry_scale::ScaleArgs),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Seconds of each measured phase, per side and round.
    #[arg(long, global = true, default_value_t = 5.0)]
    duration: f64,
    /// Open-loop request rate(s) per second, comma-separated.
    #[arg(long, global = true, value_delimiter = ',', default_values_t = [200.0])]
    rate: Vec<f64>,
    /// Connections of the closed-loop saturation phase.
    #[arg(long, global = true, default_value_t = 32)]
    connections: usize,
    /// Rounds; each runs every phase on both sides, alternating who goes first.
    #[arg(long, global = true, default_value_t = 2)]
    rounds: usize,
    /// Seconds of unmeasured load on each side before the first round.
    #[arg(long, global = true, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds before a request counts as timed out.
    #[arg(long, global = true, default_value_t = 10.0)]
    timeout: f64,
    /// Most requests in flight during open-loop phases.
    #[arg(long, global = true, default_value_t = 1024)]
    max_in_flight: usize,
    /// Envoy worker threads of each testbed.
    #[arg(long, global = true, default_value_t = 2)]
    envoy_concurrency: u32,
    /// Mock vLLM replicas per pool.
    #[arg(long, global = true, default_value_t = 1)]
    replicas: usize,
    /// Keep each testbed's configs and logs in <DIR>/<side> instead of a temporary directory.
    #[arg(long, global = true, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
    /// Where to write `<benchmark>.md` and `.json` [default: bench/results of the checkout].
    #[arg(long, global = true)]
    out: Option<PathBuf>,
}

impl LoadArgs {
    fn settings(&self) -> Result<Settings, BenchError> {
        let positive = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(BenchError::InvalidArgs(format!(
                    "--{name} must be a positive number, not {value}"
                )))
            }
        };
        positive("duration", self.duration)?;
        positive("timeout", self.timeout)?;
        for &rate in &self.rate {
            positive("rate", rate)?;
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            return Err(BenchError::InvalidArgs(format!(
                "--warmup must be 0 or more, not {}",
                self.warmup
            )));
        }
        Ok(Settings {
            plan: LoadPlan {
                rates: self.rate.clone(),
                duration_s: self.duration,
                connections: self.connections,
                rounds: self.rounds.max(1),
                warmup_s: self.warmup,
                timeout_s: self.timeout,
                max_in_flight: self.max_in_flight,
            },
            envoy_concurrency: self.envoy_concurrency,
            replicas: self.replicas.max(1),
            logs_dir: self.keep_logs.clone(),
        })
    }

    fn out_dir(&self) -> Result<PathBuf, BenchError> {
        match &self.out {
            Some(dir) => Ok(dir.clone()),
            None => Ok(testbed::Paths::locate()
                .map_err(BenchError::Locate)?
                .root
                .join("bench/results")),
        }
    }
}

fn run(cli: &Cli) -> Result<(), BenchError> {
    let settings = cli.load.settings()?;
    if std::env::var_os("TESTBED_PROFILE").is_none() && !cfg!(debug_assertions) {
        eprintln!(
            "note: TESTBED_PROFILE is unset, so the testbed runs the debug mock-vllm/ratelimit-service builds"
        );
    }
    let report: Report = match &cli.benchmark {
        Benchmark::Auth => scenario::auth::run(&settings)?,
        Benchmark::Policy { sizes } => scenario::policy::run(&settings, sizes)?,
        Benchmark::Admission => scenario::admission::run(&settings)?,
        Benchmark::Module => scenario::module::run(&settings)?,
        Benchmark::HostCosts => scenario::host_costs::run(&settings)?,
        Benchmark::Builds(args) => scenario::builds::run(&settings, args)?,
        Benchmark::AdmissionRpc(args) => {
            return scenario::admission_rpc::run(args, &settings, &cli.load.out_dir()?);
        }
        Benchmark::Fairness(args) => return fairness::run(&settings, args, &cli.load.out_dir()?),
        Benchmark::RegistryScale(args) => {
            return scenario::registry_scale::run(args, &settings, &cli.load.out_dir()?);
        }
    };
    print!("{}", report.markdown());
    let [md, json] = report.write(&cli.load.out_dir()?)?;
    eprintln!("wrote {} and {}", md.display(), json.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The testbeds live on this thread: a Ctrl-C or a kill would skip
    // their drops and leave Envoys and mock pools running.
    if let Err(error) = testbed::process::stop_all_on_signal() {
        eprintln!("gateway-bench: cannot handle signals: {error}");
        return ExitCode::FAILURE;
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The testbeds failed because a signal's handler is stopping them;
        // it exits the process once they are gone.
        Err(_) if testbed::process::stopping() => loop {
            std::thread::park();
        },
        Err(error) => {
            eprintln!("gateway-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
