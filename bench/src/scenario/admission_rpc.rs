//! `admission-rpc`: ratelimit-service alone, driven over gRPC on loopback
//! the way the admission filter drives it: one `Admit` then one `Complete`
//! per request. How many admission decisions per second, and how long an
//! Admit + Complete pair takes, with counters in memory against the same
//! service with `--redis` (a `redis-server` this run starts on a free port).
//!
//! Both services run side by side for the whole run and take turns, like
//! the HTTP benchmarks, so the ratio Redis / memory is taken from phases
//! interleaved in one run. Limits are far above the load and the pools have
//! no replicas to scrape, so every Admit is admitted at once: the figure is
//! the cost of reserve + settle (+ ledger append), not of queueing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use admission_proto::v1::admission_client::AdmissionClient;
use admission_proto::v1::{AdmitRequest, CompleteRequest, Decision, Outcome};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use test_support::redis::RedisServer;
use testbed::{ManagedProcess, Paths, TestbedError};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::{MODEL, Settings, registry};
use crate::error::BenchError;
use crate::harness::LoadPlan;
use crate::load::{
    ClosedLoop, OpenLoop, PhaseProgress, Record, Target, run_closed_loop, run_open_loop,
};
use crate::report::{Host, now_utc, reproduce_command, write_results};

const TENANT: &str = "bench";
const POOL: &str = "latency";
const PROMPT_TOKENS: u32 = 12;
const MAX_TOKENS: u32 = 1;
/// Longest latency tracked exactly, in microseconds.
const MAX_TRACKED_US: u64 = 60_000_000;

#[derive(Debug, Clone, Args)]
pub struct RpcArgs {
    /// The redis-server binary to start for the Redis side.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
    /// gRPC (HTTP/2) connections per side; concurrent calls share them, as
    /// an Envoy worker's calls share its connection to the cluster.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
    /// Ledger sync mode of both services (`batch` or `always`).
    #[arg(long, default_value = "batch")]
    pub fsync: String,
    /// A ratelimit-service binary built from another commit: the run then
    /// compares it (baseline) with this build (variant) on `--backend`,
    /// instead of memory with Redis.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// The counters' backend of both sides with `--baseline`: `memory` or
    /// `redis`.
    #[arg(long, default_value = "memory")]
    pub backend: String,
}

/// One ratelimit-service under test.
struct Side {
    label: String,
    calls: Arc<CallPair>,
    _service: ManagedProcess,
}

/// The load unit of this benchmark: one Admit then one Complete, on the
/// side's channels in turn (as an Envoy worker's calls share its connection).
struct CallPair {
    channels: Vec<Channel>,
}

impl Target for CallPair {
    type Sample = Sample;

    fn send(&self, n: u64, intended: Instant) -> impl std::future::Future<Output = Sample> + Send {
        let channel = self.channels[n as usize % self.channels.len()].clone();
        one_pair(AdmissionClient::new(channel), intended, n)
    }
}

/// Everything one phase measured on one side.
#[derive(Debug, Clone)]
struct Tally {
    /// Admit + Complete, from the intended start of the Admit.
    pair_us: Histogram<u64>,
    admit_us: Histogram<u64>,
    ok: u64,
    rejected: u64,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
}

impl Record for Tally {
    type Sample = Sample;

    fn empty() -> Self {
        let h = || {
            Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
                .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
        };
        Self {
            pair_us: h(),
            admit_us: h(),
            ok: 0,
            rejected: 0,
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// `latency` is the pair's, from the Admit's intended start.
    fn record(&mut self, latency: Duration, sample: Sample) {
        let us = |d: Duration| {
            u64::try_from(d.as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, MAX_TRACKED_US)
        };
        match sample {
            Sample::Ok { admit } => {
                self.ok += 1;
                self.admit_us.saturating_record(us(admit));
                self.pair_us.saturating_record(us(latency));
            }
            Sample::Rejected => self.rejected += 1,
            Sample::Failed(label) => *self.errors.entry(label).or_default() += 1,
        }
    }

    fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.pair_us.add(&other.pair_us);
        let _ = self.admit_us.add(&other.admit_us);
        self.ok += other.ok;
        self.rejected += other.rejected;
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += n;
        }
        self.elapsed += other.elapsed;
    }

    fn set_elapsed(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
    }
}

impl Tally {
    fn summary(&self) -> PhaseResult {
        let ms = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                f64::NAN
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let secs = self.elapsed.as_secs_f64();
        PhaseResult {
            ok: self.ok,
            rejected: self.rejected,
            errors: self.errors.clone(),
            elapsed_s: secs,
            decisions_per_s: if secs > 0.0 {
                self.ok as f64 / secs
            } else {
                0.0
            },
            pair_p50_ms: ms(&self.pair_us, 0.5),
            pair_p99_ms: ms(&self.pair_us, 0.99),
            pair_max_ms: ms(&self.pair_us, 1.0),
            admit_p50_ms: ms(&self.admit_us, 0.5),
            admit_p99_ms: ms(&self.admit_us, 0.99),
        }
    }
}

/// One Admit + Complete; the pair's latency is the load loop's to measure.
enum Sample {
    Ok { admit: Duration },
    Rejected,
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub ok: u64,
    /// Admit answered REJECTED (should stay 0: limits are far above the load).
    pub rejected: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    /// Admitted and completed pairs per second.
    pub decisions_per_s: f64,
    pub pair_p50_ms: f64,
    pub pair_p99_ms: f64,
    pub pair_max_ms: f64,
    pub admit_p50_ms: f64,
    pub admit_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseRow {
    /// `200 rps` or `saturation, 32 in flight`.
    pub load: String,
    /// The baseline side (memory, or `--baseline`), then the variant (Redis,
    /// or this build).
    pub baseline: PhaseResult,
    pub variant: PhaseResult,
    /// Variant / baseline per round, for the load's headline figure.
    pub ratio_by_round: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RpcReport {
    pub benchmark: &'static str,
    pub title: &'static str,
    pub command: String,
    pub generated_at: String,
    pub host: Host,
    pub plan: LoadPlan,
    pub channels: usize,
    pub fsync: String,
    pub redis_version: String,
    /// What each side is: `memory` / `redis`, or `baseline` / `this build`.
    pub baseline_label: String,
    pub variant_label: String,
    pub phases: Vec<PhaseRow>,
    /// Variant / baseline of merged phases.
    pub ratios: BTreeMap<String, f64>,
}

/// Starts both services (and Redis), measures, prints and writes the report.
pub fn run(args: &RpcArgs, settings: &Settings, out_dir: &Path) -> Result<(), BenchError> {
    if !matches!(args.backend.as_str(), "memory" | "redis") {
        return Err(BenchError::InvalidArgs(format!(
            "--backend must be memory or redis, not {}",
            args.backend
        )));
    }
    if !matches!(args.fsync.as_str(), "batch" | "always") {
        return Err(BenchError::InvalidArgs(format!(
            "--fsync must be batch or always, not {}",
            args.fsync
        )));
    }
    let paths = Paths::locate().map_err(BenchError::Locate)?;
    let binary = paths.binary("ratelimit-service").map_err(|e| match e {
        TestbedError::MissingArtifact(path) => BenchError::BinaryNotBuilt {
            binary: "ratelimit-service",
            path,
        },
        other => BenchError::Locate(other),
    })?;
    let (dir, _cleanup) = run_dir(settings)?;
    let registry_path = dir.join("registry.toml");
    std::fs::write(&registry_path, registry()).map_err(|source| BenchError::Write {
        path: registry_path.clone(),
        source,
    })?;
    let redis = RedisServer::start_binary(&args.redis_server);
    // Declared after `redis`, so dropped before it is stopped and reaped.
    let _stopped_on_signal = testbed::process::Tracked::new(redis.pid());
    let redis_addr = SocketAddr::from(([127, 0, 0, 1], redis.port));
    let redis_version = redis_version(&args.redis_server);
    let start_service = |label: &str, binary: &Path, extra: &[String]| {
        let data = dir.join(format!("data-{label}"));
        let mut command = Command::new(binary);
        command
            .arg("--registry")
            .arg(&registry_path)
            .args(["--admin-token", "bench-admin-token", "--fsync", &args.fsync])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("RUST_LOG", "warn");
        let process = ManagedProcess::spawn_listening(
            &format!("ratelimit-{label}"),
            command,
            &dir,
            Duration::from_secs(30),
        )
        .map_err(|source| testbed_error(label, source))?;
        let grpc = process
            .addr("grpc")
            .map_err(|source| testbed_error(label, source))?;
        Ok::<_, BenchError>((process, grpc))
    };
    let on_redis = || vec!["--redis".to_owned(), format!("redis://{redis_addr}/")];
    // Two services side by side: memory vs Redis, or (with --baseline) the
    // other build vs this one on the same backend. With Redis each side
    // gets its own database, so neither sees the other's counters.
    let (labels, baseline, variant) = match &args.baseline {
        None => {
            eprintln!("starting ratelimit-service: memory, and redis at {redis_addr}");
            (
                ["memory".to_owned(), "redis".to_owned()],
                start_service("memory", &binary, &[])?,
                start_service("redis", &binary, &on_redis())?,
            )
        }
        Some(other) => {
            let backend = |db: u8| match args.backend.as_str() {
                "redis" => vec!["--redis".to_owned(), format!("redis://{redis_addr}/{db}")],
                _ => Vec::new(),
            };
            eprintln!(
                "starting ratelimit-service: {} (baseline) and this build, on {}",
                other.display(),
                args.backend
            );
            (
                ["baseline".to_owned(), "this build".to_owned()],
                start_service("baseline", other, &backend(1))?,
                start_service("variant", &binary, &backend(2))?,
            )
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let report = runtime.block_on(async {
        let [first, second] = labels;
        let sides = [
            Side::connect(first, baseline, args.channels).await?,
            Side::connect(second, variant, args.channels).await?,
        ];
        measure(&sides, settings, args, redis_version).await
    })?;
    drop(runtime);
    drop(redis);

    let markdown = report.markdown();
    print!("{markdown}");
    let [md, json] = write_results(out_dir, "admission-rpc", markdown, &report)?;
    eprintln!("wrote {} and {}", md.display(), json.display());
    Ok(())
}

fn testbed_error(label: &str, source: TestbedError) -> BenchError {
    BenchError::Testbed {
        label: format!("admission-rpc {label}"),
        source,
    }
}

/// Removes a temporary run directory when dropped.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `--keep-logs DIR/admission-rpc`, or a temporary directory removed at the end.
fn run_dir(settings: &Settings) -> Result<(PathBuf, Cleanup), BenchError> {
    let (dir, cleanup) = match &settings.logs_dir {
        Some(logs) => (logs.join("admission-rpc"), Cleanup(None)),
        None => {
            let dir = std::env::temp_dir().join(format!(
                "gateway-bench-admission-rpc-{}",
                std::process::id()
            ));
            (dir.clone(), Cleanup(Some(dir)))
        }
    };
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Write {
        path: dir.clone(),
        source,
    })?;
    Ok((dir, cleanup))
}

fn redis_version(binary: &str) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Side {
    async fn connect(
        label: String,
        service: (ManagedProcess, SocketAddr),
        channels: usize,
    ) -> Result<Self, BenchError> {
        let (process, grpc) = service;
        let mut connected = Vec::new();
        for _ in 0..channels.max(1) {
            let channel = Endpoint::from_shared(format!("http://{grpc}"))
                .map_err(|e| BenchError::InvalidArgs(e.to_string()))?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| {
                    testbed_error(
                        &label,
                        TestbedError::Other(format!("gRPC connect to {grpc}: {e}")),
                    )
                })?;
            connected.push(channel);
        }
        let side = Self {
            label,
            calls: Arc::new(CallPair {
                channels: connected,
            }),
            _service: process,
        };
        side.probe().await?;
        Ok(side)
    }

    /// One pair must go through before anything is measured.
    async fn probe(&self) -> Result<(), BenchError> {
        match self.calls.send(0, Instant::now()).await {
            Sample::Ok { .. } => Ok(()),
            Sample::Rejected => Err(BenchError::Probe {
                label: self.label.clone(),
                status: "REJECTED".into(),
                body: "Admit refused the probe".into(),
            }),
            Sample::Failed(e) => Err(BenchError::Probe {
                label: self.label.clone(),
                status: "gRPC error".into(),
                body: e,
            }),
        }
    }

    async fn saturate(
        &self,
        connections: usize,
        duration: Duration,
        progress: &PhaseProgress,
    ) -> Tally {
        let plan = ClosedLoop {
            connections,
            duration,
        };
        run_closed_loop(Arc::clone(&self.calls), plan, progress).await
    }

    async fn fixed_rate(&self, plan: OpenLoop, progress: &PhaseProgress) -> Tally {
        run_open_loop(Arc::clone(&self.calls), plan, progress).await
    }
}

/// Admit, then Complete with usage; latency counted from `intended`.
async fn one_pair(mut client: AdmissionClient<Channel>, intended: Instant, n: u64) -> Sample {
    let admit = client
        .admit(AdmitRequest {
            phase: 0,
            tenant: TENANT.into(),
            tier: "bench".into(),
            model: MODEL.into(),
            pool: POOL.into(),
            estimated_prompt_tokens: PROMPT_TOKENS,
            max_tokens: MAX_TOKENS,
            request_id: format!("bench-{n}"),
            holder: "gateway-bench".into(),
            ..AdmitRequest::default()
        })
        .await;
    let admitted_at = Instant::now();
    let response = match admit {
        Ok(r) => r.into_inner(),
        Err(status) => return Sample::Failed(format!("admit {:?}", status.code())),
    };
    if response.decision() != Decision::Admitted {
        return Sample::Rejected;
    }
    let complete = client
        .complete(CompleteRequest {
            lease_id: response.lease_id,
            outcome: Outcome::Completed as i32,
            usage_known: true,
            prompt_tokens: PROMPT_TOKENS,
            completion_tokens: MAX_TOKENS,
            cached_tokens: 0,
            latency_ms: 1,
            ttft_ms: 1,
            cached_tokens_reported: Some(true),
            audit: None,
            traceparent: String::new(),
        })
        .await;
    match complete {
        Ok(_) => Sample::Ok {
            admit: admitted_at.duration_since(intended),
        },
        Err(status) => Sample::Failed(format!("complete {:?}", status.code())),
    }
}

async fn measure(
    sides: &[Side; 2],
    settings: &Settings,
    args: &RpcArgs,
    redis_version: String,
) -> Result<RpcReport, BenchError> {
    let plan = &settings.plan;
    let duration = Duration::from_secs_f64(plan.duration_s);
    if plan.warmup_s > 0.0 {
        for side in sides {
            let warm = Duration::from_secs_f64(plan.warmup_s);
            let progress = PhaseProgress::new(&format!("warm-up {}", side.label), warm);
            side.saturate(plan.connections, warm, &progress).await;
            progress.finish();
        }
    }
    // [load][side] merged over rounds, and the per-round tallies.
    let loads = plan.rates.len() + 1;
    let mut merged: Vec<[Tally; 2]> = (0..loads)
        .map(|_| [Tally::empty(), Tally::empty()])
        .collect();
    let mut rounds: Vec<Vec<[PhaseResult; 2]>> = (0..loads).map(|_| Vec::new()).collect();
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let turn = format!("round {}/{}", round + 1, plan.rounds);
        for load in 0..loads {
            let mut pair = [Tally::empty(), Tally::empty()];
            for i in order {
                let side = &sides[i];
                let tally = match plan.rates.get(load) {
                    Some(&rate) => {
                        let progress = PhaseProgress::new(
                            &format!("{turn} {} @ {rate}/s", side.label),
                            duration,
                        );
                        let load = OpenLoop {
                            rate,
                            duration,
                            max_in_flight: plan.max_in_flight,
                        };
                        let t = side.fixed_rate(load, &progress).await;
                        progress.finish();
                        t
                    }
                    None => {
                        let label =
                            format!("{turn} {} saturation x{}", side.label, plan.connections);
                        let progress = PhaseProgress::new(&label, duration);
                        let t = side.saturate(plan.connections, duration, &progress).await;
                        progress.finish();
                        t
                    }
                };
                merged[load][i].merge(&tally);
                pair[i] = tally;
            }
            rounds[load].push([pair[0].summary(), pair[1].summary()]);
        }
    }
    let mut phases = Vec::with_capacity(loads);
    let mut ratios = BTreeMap::new();
    for load in 0..loads {
        let label = match plan.rates.get(load) {
            Some(rate) => format!("{rate}/s"),
            None => format!("saturation, {} in flight", plan.connections),
        };
        let [baseline, variant] = [merged[load][0].summary(), merged[load][1].summary()];
        let saturation = load == plan.rates.len();
        // Saturation compares throughput; a fixed rate, p50 latency.
        let pick = |r: &PhaseResult| {
            if saturation {
                r.decisions_per_s
            } else {
                r.pair_p50_ms
            }
        };
        let ratio_by_round = rounds[load]
            .iter()
            .map(|[b, v]| pick(v) / pick(b))
            .collect();
        if saturation {
            ratios.insert(
                "max decisions/s".to_owned(),
                variant.decisions_per_s / baseline.decisions_per_s,
            );
        }
        ratios.insert(
            format!("p50 Admit+Complete at {label}"),
            variant.pair_p50_ms / baseline.pair_p50_ms,
        );
        ratios.insert(
            format!("p99 Admit+Complete at {label}"),
            variant.pair_p99_ms / baseline.pair_p99_ms,
        );
        phases.push(PhaseRow {
            load: label,
            baseline,
            variant,
            ratio_by_round,
        });
    }
    let root = Paths::locate().map(|p| p.root).unwrap_or_default();
    Ok(RpcReport {
        benchmark: "admission-rpc",
        title: match &args.baseline {
            None => "ratelimit-service Admit + Complete over gRPC: in memory vs --redis",
            Some(_) => "ratelimit-service Admit + Complete over gRPC: a baseline build vs this one",
        },
        command: reproduce_command(),
        generated_at: now_utc(),
        host: Host::current(&root, 0),
        plan: plan.clone(),
        channels: args.channels.max(1),
        fsync: args.fsync.clone(),
        redis_version,
        baseline_label: sides[0].label.clone(),
        variant_label: sides[1].label.clone(),
        phases,
        ratios,
    })
}

impl RpcReport {
    fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {}\n", self.title);
        let _ = writeln!(
            out,
            "One admission decision = `Admit` (reserve RPM/TPM/budget/concurrency, pass the pool gate) \
             + `Complete` (settle to real usage, append to the spend ledger with `--fsync {}`), \
             over {} gRPC connection(s) per side on loopback. Limits are far above the load, so \
             every Admit is admitted. Redis: {} on loopback, no persistence.\n",
            self.fsync, self.channels, self.redis_version
        );
        let _ = writeln!(out, "```sh\n{}\n```\n", self.command);
        let h = &self.host;
        let _ = writeln!(
            out,
            "Generated {} on {} CPUs ({}/{}), commit {}, ratelimit-service `{}` build; {} round(s) × {} s per phase, sides alternating.\n",
            self.generated_at,
            h.cpus,
            h.os,
            h.arch,
            h.commit.as_deref().unwrap_or("unknown"),
            h.testbed_profile,
            self.plan.rounds,
            self.plan.duration_s
        );
        let _ = writeln!(
            out,
            "| side | load | decisions | errors | pair p50 ms | pair p99 ms | pair max ms | Admit p50 ms | Admit p99 ms | decisions/s |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for phase in &self.phases {
            for (label, r) in [
                (&self.baseline_label, &phase.baseline),
                (&self.variant_label, &phase.variant),
            ] {
                let mut errors: Vec<String> =
                    r.errors.iter().map(|(k, n)| format!("{n}×{k}")).collect();
                if r.rejected > 0 {
                    errors.push(format!("{}×rejected", r.rejected));
                }
                let errors = if errors.is_empty() {
                    "0".to_owned()
                } else {
                    errors.join(" ")
                };
                let _ = writeln!(
                    out,
                    "| {label} | {} | {} | {errors} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} |",
                    phase.load,
                    r.ok,
                    r.pair_p50_ms,
                    r.pair_p99_ms,
                    r.pair_max_ms,
                    r.admit_p50_ms,
                    r.admit_p99_ms,
                    r.decisions_per_s
                );
            }
        }
        let _ = writeln!(
            out,
            "\n| ratio {} / {} | value |",
            self.variant_label, self.baseline_label
        );
        let _ = writeln!(out, "|---|---:|");
        for (name, value) in &self.ratios {
            let _ = writeln!(out, "| {name} | {value:.3} |");
        }
        let _ = writeln!(
            out,
            "\nPer round (p50 at fixed rates, decisions/s at saturation):\n"
        );
        for phase in &self.phases {
            let per: Vec<String> = phase
                .ratio_by_round
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect();
            let _ = writeln!(out, "- {}: {}", phase.load, per.join(", "));
        }
        out
    }
}
