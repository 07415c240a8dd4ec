//! Test harness: a registry on disk, the service in-process, a Redis
//! server on a free port, gates with observable permits, a tiny HTTP client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use admission_proto::v1::admission_client::AdmissionClient;
use admission_proto::v1::{AdmitRequest, AdmitResponse, CompleteRequest, Decision};
use async_trait::async_trait;
use clap::Parser;
use ratelimit_service::pool::Ticket;
use ratelimit_service::pool::gate::{GateError, PermitGuard, PoolGate, PoolPermit, UnlimitedGate};
use ratelimit_service::{Cli, GateFactory, Service};
use tonic::transport::Channel;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Tenant `a`: rpm 5, tpm 1000, 2 concurrent, $1/day, $10/month.
/// Tenant `b`: tpm 100000 and rpm 1000 with a per-model cap of 3 rpm on `m`.
/// Model `m` costs $0.001 per prompt token, $0.002 per output token.
pub const REGISTRY: &str = r#"
[tiers.t]
priority = 1
weight = 2.0
limits = { rpm = 5, tpm = 1000, max_concurrency = 2, daily_budget_usd = 1.0, monthly_budget_usd = 10.0 }

[tiers.big]
limits = { rpm = 1000, tpm = 100000, max_concurrency = 100 }

[models.m]
price = { input_per_mtok = 1000.0, output_per_mtok = 2000.0, cached_input_per_mtok = 100.0 }

[models.other]
price = { input_per_mtok = 1.0, output_per_mtok = 1.0 }

[pools.p]
max_queue_wait_ms = 2000

[[tenants]]
id = "a"
tier = "t"
models = ["m", "other"]

[[tenants]]
id = "b"
tier = "big"
models = ["m", "other"]
model_limits = { m = { rpm = 3 } }

[[tenants]]
id = "off"
tier = "t"
disabled = true
"#;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub service: Service,
}

impl Harness {
    pub fn registry_path(&self) -> PathBuf {
        self.dir.path().join("registry.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn client(&self) -> AdmissionClient<Channel> {
        client(self.service.grpc_addr).await
    }
}

pub fn cli(dir: &Path, extra: &[&str]) -> Cli {
    let registry = dir.join("registry.toml");
    let data = dir.join("data");
    let mut args = vec![
        "ratelimit-service".to_owned(),
        "--registry".into(),
        registry.display().to_string(),
        "--data-dir".into(),
        data.display().to_string(),
        "--admin-token".into(),
        ADMIN_TOKEN.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Cli::parse_from(args)
}

pub async fn start(extra: &[&str], gate: GateFactory) -> Harness {
    start_with(REGISTRY, extra, gate).await
}

pub async fn start_with(registry: &str, extra: &[&str], gate: GateFactory) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("registry.toml"), registry).unwrap();
    let service = Service::start(&cli(dir.path(), extra), gate).await.unwrap();
    Harness { dir, service }
}

/// Starts a second service sharing `dir` (its registry and data dir).
pub async fn start_in(dir: &Path, extra: &[&str], gate: GateFactory) -> Service {
    Service::start(&cli(dir, extra), gate).await.unwrap()
}

pub fn unlimited() -> GateFactory {
    Box::new(|_, _, _| Arc::new(UnlimitedGate))
}

pub async fn client(addr: SocketAddr) -> AdmissionClient<Channel> {
    AdmissionClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

pub fn admit_req(tenant: &str, model: &str, prompt: u32, max_tokens: u32) -> AdmitRequest {
    AdmitRequest {
        tenant: tenant.into(),
        tier: String::new(),
        model: model.into(),
        pool: "p".into(),
        estimated_prompt_tokens: prompt,
        max_tokens,
        request_id: "req".into(),
        holder: "test".into(),
        ..AdmitRequest::default()
    }
}

pub async fn admit(
    c: &mut AdmissionClient<Channel>,
    tenant: &str,
    model: &str,
    prompt: u32,
    max_tokens: u32,
) -> AdmitResponse {
    c.admit(admit_req(tenant, model, prompt, max_tokens))
        .await
        .unwrap()
        .into_inner()
}

pub fn admitted(r: &AdmitResponse) -> bool {
    r.decision == Decision::Admitted as i32
}

pub async fn complete(
    c: &mut AdmissionClient<Channel>,
    lease: &str,
    prompt: u32,
    completion: u32,
    cached: u32,
) {
    c.complete(CompleteRequest {
        lease_id: lease.into(),
        outcome: 1,
        usage_known: true,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: cached,
        latency_ms: 10,
        ttft_ms: 5,
        cached_tokens_reported: Some(true),
        audit: None,
        traceparent: String::new(),
    })
    .await
    .unwrap();
}

/// A minimal HTTP/1.1 client (blocking, Connection: close).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, dechunk(&body, &text))
}

fn dechunk(body: &str, whole: &str) -> String {
    let head = whole
        .split_once("\r\n\r\n")
        .map_or("", |(h, _)| h)
        .to_ascii_lowercase();
    if !head.contains("transfer-encoding: chunked") {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

pub async fn http_async(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let path = path.to_owned();
    let token = token.map(str::to_owned);
    let body = body.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        http(addr, method, &path, token.as_deref(), body.as_deref())
    })
    .await
    .unwrap()
}

/// How a [`TestGate`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateMode {
    Admit,
    /// Waits until the deadline, then times out.
    Block,
    Full,
}

/// A gate whose permits can be counted: `live` is the number of permits
/// not yet dropped, `settled` the number that got real usage.
#[derive(Clone)]
pub struct TestGate {
    pub mode: GateMode,
    pub live: Arc<AtomicUsize>,
    pub waiting: Arc<AtomicUsize>,
    pub settled: Arc<AtomicUsize>,
}

impl TestGate {
    pub fn new(mode: GateMode) -> Self {
        Self {
            mode,
            live: Arc::default(),
            waiting: Arc::default(),
            settled: Arc::default(),
        }
    }

    pub fn factory(&self) -> GateFactory {
        let gate = self.clone();
        Box::new(move |_, _, _| Arc::new(gate))
    }
}

struct Counted {
    live: Arc<AtomicUsize>,
    settled: Arc<AtomicUsize>,
}

impl PermitGuard for Counted {
    fn settle(&mut self, _real_in: u64, _real_out: u64) {
        self.settled.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

struct WaitingGuard(Arc<AtomicUsize>);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl PoolGate for TestGate {
    async fn acquire(
        &self,
        pool: &str,
        _ticket: Ticket,
        deadline: Instant,
    ) -> Result<PoolPermit, GateError> {
        match self.mode {
            GateMode::Admit => {
                self.live.fetch_add(1, Ordering::SeqCst);
                Ok(PoolPermit::new(Counted {
                    live: self.live.clone(),
                    settled: self.settled.clone(),
                }))
            }
            GateMode::Full => Err(GateError::QueueFull {
                pool: pool.into(),
                retry_after: Duration::from_millis(1500),
            }),
            GateMode::Block => {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                let _w = WaitingGuard(self.waiting.clone());
                let started = Instant::now();
                tokio::time::sleep_until(deadline.into()).await;
                Err(GateError::QueueTimeout {
                    pool: pool.into(),
                    waited: started.elapsed(),
                })
            }
        }
    }
}

/// Every spend-ledger day file in `dir`, oldest first, concatenated.
pub fn ledger_text(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            (name.starts_with("spend-ledger-") && name.ends_with(".jsonl")).then_some(name)
        })
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(n)).unwrap())
        .collect()
}
