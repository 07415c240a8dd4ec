//! Command line. Every flag has a safe default except the registry, and the
//! admin token, which is required unless the operator opts out explicitly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::ledger::FsyncMode;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ratelimit-service",
    version,
    about = "Admission, rate limits, budgets and the spend ledger for the LLM gateway"
)]
pub struct Cli {
    /// Tenant registry (TOML); reloaded on SIGHUP and when the file changes.
    #[arg(long)]
    pub registry: PathBuf,

    /// gRPC: Admission API and Envoy's RateLimitService.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub grpc_listen: SocketAddr,

    /// Admin HTTP: health, metrics, usage, throttle, reload.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin_listen: SocketAddr,

    /// Bearer token for the admin API.
    #[arg(
        long,
        env = "ADMIN_TOKEN",
        hide_env_values = true,
        required_unless_present = "admin_insecure"
    )]
    pub admin_token: Option<String>,

    /// Serve the admin API without authentication (local experiments only).
    #[arg(long)]
    pub admin_insecure: bool,

    /// Directory of the spend ledger.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,

    /// Directory of the audit trail (one sub-directory per tenant); default
    /// `<data-dir>/audit`.
    #[arg(long, env = "AUDIT_DIR")]
    pub audit_dir: Option<PathBuf>,

    /// File holding the audit master key, 64 hex digits (`openssl rand -hex
    /// 32`). Tenants whose `audit.encrypt` is on are sealed with AES-256-GCM
    /// under a key derived from it; without it the service refuses to start
    /// while such a tenant exists.
    #[arg(long, env = "AUDIT_KEY_FILE")]
    pub audit_key_file: Option<PathBuf>,

    /// OTLP/gRPC endpoint for traces (`http://collector:4317`); none: no
    /// spans are recorded.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// CloudEvents `source` of usage exports; default
    /// `//ratelimit-service/<$HOSTNAME>` (the pod name on Kubernetes), so
    /// each replica's ledger is its own event source.
    #[arg(long, env = "LEDGER_EVENT_SOURCE")]
    pub event_source: Option<String>,

    /// Per-tenant circuit breaker (see src/breaker.rs): open a tenant's
    /// breaker when this many of its requests fail within the window (0:
    /// off). Failures: refusals by its own limits, hang-ups, pool 4xx.
    #[arg(long, env = "BREAKER_MIN_FAILURES", default_value_t = 0)]
    pub breaker_min_failures: u32,

    /// ... and failures are at least this share of its outcomes (0, 1].
    #[arg(long, default_value_t = 0.9)]
    pub breaker_failure_ratio: f64,

    /// The breaker's sliding window, in seconds (1 to 300).
    #[arg(long, default_value_t = 10)]
    pub breaker_window_s: u64,

    /// How long an open breaker refuses the tenant (429 circuit_open with
    /// retry-after), in seconds.
    #[arg(long, default_value_t = 30)]
    pub breaker_cooldown_s: u64,

    /// How long a lease lives without Renew or Complete.
    #[arg(long, default_value_t = 10_000)]
    pub lease_ttl_ms: u64,

    /// Keep counters, leases and spend totals in Redis (redis://host:port/db)
    /// so several replicas enforce one limit.
    #[arg(long)]
    pub redis: Option<String>,

    /// Ledger durability: `batch` (group commit, one fdatasync per ~10 ms of
    /// records; Complete waits for it) or `always` (one fdatasync per record;
    /// Completes queue behind each other's sync).
    #[arg(long, value_enum, default_value_t = FsyncMode::Batch)]
    pub fsync: FsyncMode,

    /// Descriptor limits for Envoy's RateLimitService (TOML, envoyproxy/ratelimit shape).
    #[arg(long)]
    pub rls_config: Option<PathBuf>,

    /// Order of admission when a pool is full: token-weighted fair queuing
    /// (`fair`, VTC) or arrival order (`fifo`, the benchmark baseline).
    #[arg(long, value_enum, default_value_t = QueueModeArg::Fair)]
    pub queue_mode: QueueModeArg,

    /// Strict priority bands (tier `priority`) above fair sharing.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub priority_bands: bool,

    /// Fair-queuing cost of one generated token relative to one prompt token.
    #[arg(long, default_value_t = 2.0)]
    pub output_token_weight: f64,
}

/// `--queue-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueModeArg {
    Fair,
    Fifo,
}

impl Cli {
    pub fn audit_dir(&self) -> PathBuf {
        self.audit_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit"))
    }

    pub fn event_source(&self) -> String {
        self.event_source.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
            format!("//ratelimit-service/{host}")
        })
    }

    /// The scheduling policy of every pool queue.
    pub fn scheduling_policy(&self) -> crate::pool::fair_queue::SchedulingPolicy {
        crate::pool::fair_queue::SchedulingPolicy {
            mode: match self.queue_mode {
                QueueModeArg::Fair => crate::pool::fair_queue::QueueMode::Fair,
                QueueModeArg::Fifo => crate::pool::fair_queue::QueueMode::Fifo,
            },
            input_weight: 1.0,
            output_weight: self.output_token_weight.max(0.0),
            priority_bands: self.priority_bands,
        }
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms.max(100))
    }

    pub fn breaker(&self) -> Result<crate::breaker::BreakerConfig, ConfigError> {
        let ratio = self.breaker_failure_ratio;
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(ConfigError::Breaker(format!(
                "--breaker-failure-ratio must be in (0, 1], got {ratio}"
            )));
        }
        if !(1..=crate::breaker::MAX_WINDOW_S).contains(&self.breaker_window_s) {
            return Err(ConfigError::Breaker(format!(
                "--breaker-window-s must be in 1..={}, got {}",
                crate::breaker::MAX_WINDOW_S,
                self.breaker_window_s
            )));
        }
        if self.breaker_min_failures > 0 && self.breaker_cooldown_s == 0 {
            return Err(ConfigError::Breaker(
                "--breaker-cooldown-s must be at least 1 when the breaker is on".into(),
            ));
        }
        Ok(crate::breaker::BreakerConfig {
            window: Duration::from_secs(self.breaker_window_s),
            min_failures: self.breaker_min_failures,
            failure_ratio: ratio,
            cooldown: Duration::from_secs(self.breaker_cooldown_s),
        })
    }

    /// The admin token in force, `None` only with `--admin-insecure`.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        match (&self.admin_token, self.admin_insecure) {
            (Some(t), _) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
            (_, true) => Ok(None),
            _ => Err(ConfigError::NoAdminToken),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--admin-token (or ADMIN_TOKEN) must be set and non-empty, or pass --admin-insecure")]
    NoAdminToken,
    #[error("{0}")]
    Breaker(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_is_required_unless_insecure() {
        assert!(
            Cli::try_parse_from(["rls", "--registry", "r.toml"]).is_err()
                || std::env::var_os("ADMIN_TOKEN").is_some()
        );
        let cli = Cli::try_parse_from(["rls", "--registry", "r.toml", "--admin-insecure"]).unwrap();
        assert_eq!(cli.admin_token().unwrap(), None);
        assert_eq!(cli.fsync, FsyncMode::Batch);
        assert_eq!(cli.lease_ttl(), Duration::from_secs(10));
        let cli = Cli::try_parse_from([
            "rls",
            "--registry",
            "r.toml",
            "--admin-token",
            "t",
            "--fsync",
            "always",
        ])
        .unwrap();
        assert_eq!(cli.admin_token().unwrap().as_deref(), Some("t"));
        assert_eq!(cli.fsync, FsyncMode::Always);
        let cli =
            Cli::try_parse_from(["rls", "--registry", "r.toml", "--admin-token", " "]).unwrap();
        assert!(cli.admin_token().is_err());
    }
}
