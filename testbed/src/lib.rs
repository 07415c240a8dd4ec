//! The local testbed: real Envoy with the built gateway module, ratelimit-service
//! and mock vLLM pools on loopback ports, all owned by one [`Testbed`] value
//! that stops every process when dropped.
//!
//! `make run` uses it through the `testbed` binary; the end-to-end tests and
//! the benchmarks use it as a library.

pub mod envoy;
mod paths;
pub mod process;
pub mod tls;
pub mod vllm;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tenant_registry::{ModelKind, Registry, RegistryConfig};
use thiserror::Error;

pub use envoy::MtlsFiles;
pub use paths::Paths;
pub use process::ManagedProcess;

#[derive(Debug, Error)]
pub enum TestbedError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} failed to start: {reason}\n--- last lines of its log ---\n{log_tail}")]
    Startup {
        name: String,
        reason: String,
        log_tail: String,
    },
    #[error("missing build output {0}: run `make build` first")]
    MissingArtifact(PathBuf),
    #[error("registry: {0}")]
    Registry(#[from] tenant_registry::RegistryError),
    #[error("{0}")]
    Other(String),
}

impl TestbedError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TestbedError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// A blocking HTTP client with a short timeout, for control-plane calls.
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|_| reqwest::blocking::Client::new())
}

/// Which phases of the gateway module run (all off: Envoy with no filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterSet {
    pub tenant_auth: bool,
    pub llm_policy: bool,
    pub admission: bool,
}

impl FilterSet {
    pub const ALL: FilterSet = FilterSet {
        tenant_auth: true,
        llm_policy: true,
        admission: true,
    };
    pub const NONE: FilterSet = FilterSet {
        tenant_auth: false,
        llm_policy: false,
        admission: false,
    };
    pub const AUTH_ONLY: FilterSet = FilterSet {
        tenant_auth: true,
        llm_policy: false,
        admission: false,
    };
}

/// A pool of vLLM replicas: mocks the testbed starts, and servers it does
/// not own (real vLLM) that it only routes to and scrapes.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    pub name: String,
    /// Mock replicas to start.
    pub replicas: usize,
    /// Extra `mock-vllm` flags (timings, batch size).
    pub mock_args: Vec<String>,
    /// Running servers to use as they are: never started or stopped here.
    pub external: Vec<SocketAddr>,
}

impl PoolSpec {
    pub fn new(name: &str, replicas: usize) -> Self {
        Self {
            name: name.to_owned(),
            replicas,
            mock_args: Vec::new(),
            external: Vec::new(),
        }
    }

    /// A pool of servers that already run.
    pub fn external(name: &str, replicas: Vec<SocketAddr>) -> Self {
        Self {
            external: replicas,
            ..Self::new(name, 0)
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct TestbedConfig {
    /// Registry (TOML), with API key digests already in it.
    pub registry_toml: String,
    /// Server secret for tenant cache salts.
    pub cache_secret: String,
    pub filters: FilterSet,
    pub pools: Vec<PoolSpec>,
    /// Start ratelimit-service (needed by the admission filter).
    pub ratelimit: bool,
    pub ratelimit_args: Vec<String>,
    pub admin_token: String,
    pub mtls: Option<MtlsFiles>,
    /// 0 = any free port.
    pub gateway_port: u16,
    pub envoy_concurrency: u32,
    /// Where configs, logs and data go; a temporary directory when `None`.
    pub run_dir: Option<PathBuf>,
    /// Envoy's native `envoy.filters.http.ratelimit` against ratelimit-service
    /// (RLS v3) in this domain, one descriptor `tenant` from `x-tenant-id`.
    pub native_ratelimit_domain: Option<String>,
    /// Envoy's `request_timeout`: a request (body and admission wait
    /// included) not received in this time is refused with 408.
    pub request_timeout: Duration,
    /// Test-only filter modules (crate names built by `make wasm`, e.g.
    /// `crash_probe`) placed first in the chain, with an empty config.
    pub probe_filters: Vec<String>,
    /// The probes' plugin configuration instead of `{}` (every probe's).
    pub probe_config: Option<serde_json::Value>,
    /// The module's `admission.one_call_max_body_bytes` (`None`: its
    /// default; 0: every request admitted on its headers, two calls).
    pub one_call_max_body_bytes: Option<u64>,
    /// The module's `admission.admit_stream`: admissions as messages on
    /// each worker's stream (default), or one unary call each.
    pub admit_stream: bool,
    /// OTLP/gRPC collector for traces: Envoy's (and, with
    /// `--otlp-endpoint` in `ratelimit_args`, ratelimit-service's).
    pub otlp: Option<std::net::SocketAddr>,
    /// A directory holding another build of `llm_gateway.wasm` (benchmarks
    /// compare two builds side by side), relative to the caller's working
    /// directory or absolute; `None`: `make wasm`'s output.
    pub module_dir: Option<PathBuf>,
    /// Another build of ratelimit-service to run (benchmarks compare two
    /// builds side by side); `None`: this checkout's.
    pub ratelimit_binary: Option<PathBuf>,
}

impl TestbedConfig {
    pub fn new(registry_toml: impl Into<String>) -> Self {
        Self {
            registry_toml: registry_toml.into(),
            cache_secret: "testbed-cache-secret-0123456789abcdef".to_owned(),
            filters: FilterSet::ALL,
            pools: vec![PoolSpec::new("latency", 2), PoolSpec::new("throughput", 2)],
            ratelimit: true,
            ratelimit_args: Vec::new(),
            admin_token: "testbed-admin-token".to_owned(),
            mtls: None,
            gateway_port: 0,
            envoy_concurrency: 2,
            run_dir: None,
            native_ratelimit_domain: None,
            request_timeout: Duration::from_secs(120),
            probe_filters: Vec::new(),
            probe_config: None,
            one_call_max_body_bytes: None,
            admit_stream: true,
            otlp: None,
            module_dir: None,
            ratelimit_binary: None,
        }
    }
}

/// One replica of a pool.
#[derive(Debug)]
pub struct Replica {
    pub pool: String,
    pub name: String,
    pub addr: SocketAddr,
    /// The mock the testbed started; `None` for an external server.
    pub process: Option<ManagedProcess>,
}

/// Everything the testbed started. Dropping it stops all of it.
#[derive(Debug)]
pub struct Testbed {
    // Field order is drop order: Envoy first, so nothing talks to stopped backends.
    pub envoy: envoy::RunningEnvoy,
    pub ratelimit: Option<ManagedProcess>,
    pub replicas: Vec<Replica>,
    pub config: TestbedConfig,
    paths: Paths,
    layout: envoy::EnvoyLayout,
    stopped_ratelimit: Option<std::collections::HashMap<String, SocketAddr>>,
    /// How long each step of `start` took.
    pub startup: Startup,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// How long each step of [`Testbed::start`] took, in order: what a registry
/// of real size costs where (the registry-scale bench reports it).
/// ratelimit-service and the renderer run side by side, so their two steps
/// overlap: the steps add up to more than the start took.
#[derive(Debug, Clone)]
pub struct Startup {
    pub steps: Vec<(StartupStep, Duration)>,
    /// When the step under way began.
    lap: std::time::Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupStep {
    /// The testbed's own work: the registry checked, the mock pools
    /// started, their addresses written into the registry.
    Harness,
    /// ratelimit-service started on the registry, until it listens.
    Ratelimit,
    /// `envoy/render-ecds.py` wrote the filters' configs.
    Render,
    /// Envoy started, until every VM on every worker is configured.
    Envoy,
}

impl Startup {
    fn begin() -> Self {
        Self {
            steps: Vec::new(),
            lap: std::time::Instant::now(),
        }
    }

    /// Ends `step`: it took the time since the previous step ended.
    fn done(&mut self, step: StartupStep) {
        let now = std::time::Instant::now();
        self.steps.push((step, now - self.lap));
        self.lap = now;
    }

    /// Ends steps that ran at the same time, each with its own duration;
    /// the next step's time counts from now.
    fn side_by_side(&mut self, steps: &[(StartupStep, Duration)]) {
        self.steps.extend_from_slice(steps);
        self.lap = std::time::Instant::now();
    }

    pub fn took(&self, step: StartupStep) -> Duration {
        self.steps
            .iter()
            .filter(|(s, _)| *s == step)
            .map(|(_, d)| *d)
            .sum()
    }
}

impl Testbed {
    pub fn start(config: TestbedConfig) -> Result<Self, TestbedError> {
        let mut startup = Startup::begin();
        let paths = Paths::locate()?;
        let (dir, temp) = match &config.run_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| TestbedError::io(dir, e))?;
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("gateway-testbed-")
                    .tempdir()
                    .map_err(|e| TestbedError::io(Path::new("/tmp"), e))?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let registry = Registry::from_toml(&config.registry_toml)?;
        let replicas = start_pools(&paths, &config, registry.config(), &dir)?;
        let registry_toml = with_replicas(&config.registry_toml, &replicas)?;
        let registry_path = dir.join("registry.toml");
        write_registry(&registry_path, &registry_toml)?;
        startup.done(StartupStep::Harness);
        let ecds_dir = dir.join("ecds");
        std::fs::create_dir_all(&ecds_dir).map_err(|e| TestbedError::io(&ecds_dir, e))?;
        // ratelimit-service and the renderer both read only the registry
        // file: they run side by side, as a deployment starts them.
        let (ratelimit, rendered) = std::thread::scope(|scope| {
            let render = scope.spawn(|| timed(|| render_filters(&paths, &config, &dir, &ecds_dir)));
            let ratelimit = timed(|| {
                config
                    .ratelimit
                    .then(|| start_ratelimit(&paths, &config, &registry_path, &dir))
                    .transpose()
            });
            let rendered = render.join().unwrap_or_else(|_| {
                (
                    Err(TestbedError::Other("the renderer's thread panicked".into())),
                    Duration::ZERO,
                )
            });
            (ratelimit, rendered)
        });
        let (ratelimit, ratelimit_took) = ratelimit;
        let (filters, render_took) = rendered;
        let ratelimit = ratelimit?;
        let filters = filters?;
        startup.side_by_side(&[
            (StartupStep::Ratelimit, ratelimit_took),
            (StartupStep::Render, render_took),
        ]);
        let ratelimit_grpc = ratelimit.as_ref().map(|p| p.addr("grpc")).transpose()?;
        let shipped = envoy::shipped_bootstrap(&paths.root)?;
        let layout = envoy::EnvoyLayout {
            filters,
            routes_by_policy: config.filters.llm_policy,
            pools: config
                .pools
                .iter()
                .map(|p| envoy::PoolCluster {
                    name: p.name.clone(),
                    replicas: replicas
                        .iter()
                        .filter(|r| r.pool == p.name)
                        .map(|r| r.addr)
                        .collect(),
                })
                .collect(),
            default_pool: default_pool(&config),
            ratelimit: ratelimit_grpc,
            mtls: config.mtls.clone(),
            native_ratelimit_domain: config.native_ratelimit_domain.clone(),
            gateway_port: config.gateway_port,
            concurrency: config.envoy_concurrency,
            buffer_limit_bytes: registry.config().gateway.max_body_bytes + 64 * 1024,
            request_timeout: config.request_timeout,
            otlp: config.otlp,
        };
        let envoy = envoy::start(&paths.envoy, &shipped, &layout, &dir, &ecds_dir)?;
        startup.done(StartupStep::Envoy);
        Ok(Self {
            envoy,
            startup,
            ratelimit,
            replicas,
            config,
            paths,
            layout,
            stopped_ratelimit: None,
            dir,
            _temp: temp,
        })
    }

    /// Where this testbed keeps its configs, logs and data.
    pub fn run_dir(&self) -> &Path {
        &self.dir
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.envoy.gateway)
    }

    pub fn gateway_mtls_url(&self) -> Option<String> {
        self.envoy
            .gateway_mtls
            .map(|a| format!("https://localhost:{}", a.port()))
    }

    pub fn envoy_admin_url(&self) -> String {
        format!("http://{}", self.envoy.admin)
    }

    /// ratelimit-service's `--data-dir` (the spend ledger's files).
    pub fn ratelimit_data_dir(&self) -> PathBuf {
        self.dir.join("ratelimit-data")
    }

    /// A native binary of the workspace, as the testbed found its own.
    pub fn binary(&self, name: &str) -> Result<PathBuf, TestbedError> {
        self.paths.binary(name)
    }

    pub fn ratelimit_admin_url(&self) -> Option<String> {
        let p = self.ratelimit.as_ref()?;
        p.addr("admin").ok().map(|a| format!("http://{a}"))
    }

    /// CPU time each of the testbed's parts has used so far: Envoy,
    /// ratelimit-service (when running) and the mock replicas together
    /// (external servers are not counted). A part that has exited reads zero.
    pub fn cpu_times(&self) -> Vec<(&'static str, Duration)> {
        let of = |p: &ManagedProcess| p.cpu_time().unwrap_or_default();
        let mut parts = vec![("envoy", of(&self.envoy.process))];
        if let Some(ratelimit) = &self.ratelimit {
            parts.push(("ratelimit-service", of(ratelimit)));
        }
        let mocks = self.replicas.iter().filter_map(|r| r.process.as_ref());
        parts.push(("mock vLLM", mocks.map(of).sum()));
        parts
    }

    pub fn replica_urls(&self, pool: &str) -> Vec<String> {
        self.replicas
            .iter()
            .filter(|r| r.pool == pool)
            .map(|r| format!("http://{}", r.addr))
            .collect()
    }

    /// Requests the mock replicas received (their `/debug/requests`), each
    /// tagged with `"pool"`, oldest first per replica. External servers
    /// keep no such log.
    pub fn upstream_requests(&self) -> Vec<Value> {
        let client = http_client();
        let mut all = Vec::new();
        for r in self.replicas.iter().filter(|r| r.process.is_some()) {
            let got: Value = client
                .get(format!("http://{}/debug/requests", r.addr))
                .send()
                .and_then(|resp| resp.json())
                .unwrap_or(Value::Null);
            for mut item in got.as_array().cloned().unwrap_or_default() {
                item["pool"] = json!(r.pool);
                all.push(item);
            }
        }
        all
    }

    /// Clears the mocks' request logs and prefix caches.
    pub fn reset_upstreams(&self) {
        let client = http_client();
        for r in self.replicas.iter().filter(|r| r.process.is_some()) {
            let _ = client.post(format!("http://{}/debug/reset", r.addr)).send();
        }
    }

    /// Stops ratelimit-service: SIGKILL when `hard` (a crash), else SIGTERM.
    pub fn stop_ratelimit(&mut self, hard: bool) {
        if let Some(mut p) = self.ratelimit.take() {
            if hard {
                p.kill_hard();
            } else {
                p.stop();
            }
            self.stopped_ratelimit = Some(p.addrs.clone());
        }
    }

    /// Starts ratelimit-service again on the ports and data directory it had.
    pub fn restart_ratelimit(&mut self) -> Result<(), TestbedError> {
        let addrs = match (self.ratelimit.take(), self.stopped_ratelimit.take()) {
            (Some(mut running), _) => {
                running.stop();
                running.addrs.clone()
            }
            (None, Some(addrs)) => addrs,
            (None, None) => {
                return Err(TestbedError::Other(
                    "ratelimit-service was never started".into(),
                ));
            }
        };
        let (Some(grpc), Some(admin)) = (addrs.get("grpc"), addrs.get("admin")) else {
            return Err(TestbedError::Other(
                "unknown ratelimit-service ports".into(),
            ));
        };
        let mut config = self.config.clone();
        config.ratelimit_args.extend([
            "--grpc-listen".to_owned(),
            grpc.to_string(),
            "--admin-listen".to_owned(),
            admin.to_string(),
        ]);
        self.ratelimit = Some(start_ratelimit(
            &self.paths,
            &config,
            &self.dir.join("registry.toml"),
            &self.dir,
        )?);
        Ok(())
    }

    /// Replaces the registry on the running testbed: rewrites the filters'
    /// ECDS files (Envoy reloads those whose content changed: a filter that
    /// reads no tenant keeps its config when only tenants change) and
    /// signals ratelimit-service. Returns once Envoy has applied every
    /// changed config.
    pub fn update_registry(&mut self, registry_toml: &str) -> Result<(), TestbedError> {
        // Refused here, with the field named, rather than by every reader.
        Registry::from_toml(registry_toml)?;
        self.config.registry_toml = registry_toml.to_owned();
        write_registry(
            &self.dir.join("registry.toml"),
            &with_replicas(registry_toml, &self.replicas)?,
        )?;
        if let Some(rl) = &self.ratelimit {
            rl.signal(nix::sys::signal::Signal::SIGHUP);
        }
        let before = envoy::counter(self.envoy.admin, "config_reload");
        let ecds = self.dir.join("ecds");
        let config_of = |name: &str| std::fs::read(ecds.join(format!("{name}.json"))).ok();
        let old: Vec<Option<Vec<u8>>> = self.layout.filters.iter().map(|f| config_of(f)).collect();
        self.layout.filters = render_filters(&self.paths, &self.config, &self.dir, &ecds)?;
        let changed = self
            .layout
            .filters
            .iter()
            .zip(old)
            .filter(|(name, old)| config_of(name) != *old)
            .count();
        let want = before + changed as u64;
        // Generous: a registry of real size takes a while to apply.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while envoy::counter(self.envoy.admin, "config_reload") < want {
            if std::time::Instant::now() > deadline {
                return Err(TestbedError::Other(
                    "Envoy did not reload the filter configs".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

fn default_pool(config: &TestbedConfig) -> String {
    config
        .pools
        .iter()
        .find(|p| p.name == "throughput")
        .or(config.pools.first())
        .map(|p| p.name.clone())
        .unwrap_or_else(|| "throughput".to_owned())
}

fn start_pools(
    paths: &Paths,
    config: &TestbedConfig,
    registry: &RegistryConfig,
    dir: &Path,
) -> Result<Vec<Replica>, TestbedError> {
    let mut model_args = Vec::new();
    for (name, model) in &registry.models {
        let flag = match model.kind {
            ModelKind::Embedding => "--embedding-model",
            ModelKind::Chat => "--model",
        };
        model_args.extend([flag.to_owned(), name.to_string()]);
    }
    let mut replicas = Vec::new();
    for pool in &config.pools {
        for i in 0..pool.replicas {
            let name = format!("{}-{i}", pool.name);
            let mut command = Command::new(paths.binary("mock-vllm")?);
            // As the deploy manifests start vLLM: usage reports cached
            // tokens. A pool's `--no-enable-prompt-tokens-details` undoes it.
            command
                .args(["--listen", "127.0.0.1:0", "--replica-name", &name])
                .arg("--enable-prompt-tokens-details")
                .args(&model_args)
                .args(&pool.mock_args);
            let process =
                ManagedProcess::spawn_listening(&name, command, dir, Duration::from_secs(30))?;
            replicas.push(Replica {
                pool: pool.name.clone(),
                name,
                addr: process.addr("http")?,
                process: Some(process),
            });
        }
        for (i, addr) in pool.external.iter().enumerate() {
            replicas.push(Replica {
                pool: pool.name.clone(),
                name: format!("{}-external-{i}", pool.name),
                addr: *addr,
                process: None,
            });
        }
    }
    Ok(replicas)
}

/// The registry text with each pool's replica addresses filled in, so
/// ratelimit-service scrapes the replicas that actually run. Edited in
/// place (toml_edit) rather than re-serialized: serializing a registry of
/// 100,000 tenants with `toml::to_string` takes about two minutes, editing
/// it well under a second.
fn with_replicas(registry_toml: &str, replicas: &[Replica]) -> Result<String, TestbedError> {
    let mut doc: toml_edit::DocumentMut = registry_toml
        .parse()
        .map_err(|e| TestbedError::Other(format!("registry TOML: {e}")))?;
    if let Some(pools) = doc.get_mut("pools").and_then(|p| p.as_table_like_mut()) {
        for (name, pool) in pools.iter_mut() {
            let addrs: toml_edit::Array = replicas
                .iter()
                .filter(|r| r.pool == name.get())
                .map(|r| r.addr.to_string())
                .collect();
            if let (false, Some(pool)) = (addrs.is_empty(), pool.as_table_like_mut()) {
                pool.insert("replicas", toml_edit::value(addrs));
            }
        }
    }
    Ok(doc.to_string())
}

/// `work`'s result and how long it took.
fn timed<T>(work: impl FnOnce() -> T) -> (T, Duration) {
    let started = std::time::Instant::now();
    let result = work();
    (result, started.elapsed())
}

fn write_registry(path: &Path, registry_toml: &str) -> Result<(), TestbedError> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, registry_toml).map_err(|e| TestbedError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TestbedError::io(path, e))
}

fn start_ratelimit(
    paths: &Paths,
    config: &TestbedConfig,
    registry_path: &Path,
    dir: &Path,
) -> Result<ManagedProcess, TestbedError> {
    let data = dir.join("ratelimit-data");
    let binary = match &config.ratelimit_binary {
        Some(binary) => paths::existing(binary.clone())?,
        None => paths.binary("ratelimit-service")?,
    };
    let mut command = Command::new(binary);
    command
        .arg("--registry")
        .arg(registry_path)
        .args(["--admin-token", &config.admin_token])
        .arg("--data-dir")
        .arg(&data)
        .args(&config.ratelimit_args);
    for flag in ["--grpc-listen", "--admin-listen"] {
        if !config.ratelimit_args.iter().any(|a| a == flag) {
            command.args([flag, "127.0.0.1:0"]);
        }
    }
    ManagedProcess::spawn_listening("ratelimit-service", command, dir, Duration::from_secs(30))
}

/// Renders the filters' ECDS files into `ecds_dir` with the shipped
/// renderer, `envoy/render-ecds.py`, from the registry file ratelimit-service
/// reads too; returns the filters it wrote, in chain order.
fn render_filters(
    paths: &Paths,
    config: &TestbedConfig,
    dir: &Path,
    ecds_dir: &Path,
) -> Result<Vec<String>, TestbedError> {
    let mut chain = Vec::new();
    for (runs, phase) in [
        (config.filters.tenant_auth, "tenant-auth"),
        (config.filters.llm_policy, "llm-policy"),
        (config.filters.admission, "admission"),
    ] {
        if runs {
            chain.push(phase);
        }
    }
    // Envoy reads the path the renderer writes, from its own working
    // directory: a relative `module_dir` would not resolve there.
    let module_dir = match &config.module_dir {
        Some(dir) => std::path::absolute(dir).map_err(|e| TestbedError::io(dir, e))?,
        None => paths.wasm_dir(),
    };
    if !chain.is_empty() {
        paths::existing(module_dir.join("llm_gateway.wasm"))?;
    }
    let secret = dir.join("cache_secret");
    std::fs::write(&secret, &config.cache_secret).map_err(|e| TestbedError::io(&secret, e))?;
    let script = paths.root.join("envoy/render-ecds.py");
    let mut command = Command::new(&paths.python);
    command
        .arg(&script)
        .arg("--registry")
        .arg(dir.join("registry.toml"))
        .arg("--out")
        .arg(ecds_dir)
        .arg("--cache-secret-file")
        .arg(&secret)
        .arg("--wasm-dir")
        .arg(&module_dir)
        .args(["--chain", &chain.join(",")])
        // A failed VM is replaced quickly: tests crash VMs on purpose.
        .args(["--reload-backoff", "0.2s:5s"]);
    if !config.ratelimit {
        command.args(["--ratelimit-cluster", ""]);
    }
    if let Some(bytes) = config.one_call_max_body_bytes {
        command.arg(format!("--one-call-max-body-bytes={bytes}"));
    }
    if !config.admit_stream {
        command.arg("--no-admit-stream");
    }
    for probe in &config.probe_filters {
        let name = probe.replace('_', "-");
        let mut arg = std::ffi::OsString::from(format!("{name}="));
        arg.push(paths.wasm(probe)?);
        command.arg("--probe-filter").arg(arg);
        if let Some(probe_config) = &config.probe_config {
            command.arg(format!("--probe-config={name}={probe_config}"));
        }
    }
    let out = command
        .output()
        .map_err(|e| TestbedError::io(&paths.python, e))?;
    if !out.status.success() {
        return Err(TestbedError::Other(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // One "wrote <dir>/<name>.json" line per filter, in chain order.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("wrote "))
        .filter_map(|path| Path::new(path).file_stem()?.to_str().map(str::to_owned))
        .collect())
}
