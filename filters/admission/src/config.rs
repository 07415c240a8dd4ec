//! Filter configuration, compiled once in `on_configure`.

use std::time::Duration;

use hashbrown::HashMap;
use serde::Deserialize;
use tenant_registry::{FailMode, RegistryConfig};
use thiserror::Error;

/// Admission alone with its own registry, in JSON: how tests build a
/// [`CompiledConfig`] (the gateway module compiles one from its
/// `admission` section and the shared registry).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// The tenant registry: tiers give the failure mode, pools the queue wait.
    pub registry: RegistryConfig,
    #[serde(flatten)]
    pub settings: AdmissionSettings,
}

/// Admission's own settings: the `admission` section of the gateway
/// module's configuration (the module runs both phases itself).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSettings {
    /// Envoy cluster of ratelimit-service (HTTP/2).
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// How often held leases are renewed.
    #[serde(default = "default_renew_ms")]
    pub renew_interval_ms: u64,
    /// Allowance on top of the pool's queue wait before Admit counts as failed.
    #[serde(default = "default_slack_ms")]
    pub admit_slack_ms: u64,
    /// Timeout of Complete and Renew calls.
    #[serde(default = "default_report_ms")]
    pub report_timeout_ms: u64,
    /// How long usage reports gather before one call sends them together.
    /// Each report frees its request's concurrency slot and pool room, so
    /// this is also the most that freeing is delayed.
    #[serde(default = "default_flush_ms")]
    pub report_flush_ms: u64,
    /// Name of this Envoy in leases, for the service's logs.
    #[serde(default = "default_holder")]
    pub holder: String,
    /// Largest body, as announced by `content-length`, whose request is
    /// admitted in one call once the body is in, instead of on its headers
    /// and again after the policy (a small body comes with its headers:
    /// refusing it unread saves nothing, and each call costs a round trip).
    /// 0: every request is admitted on its headers.
    #[serde(default = "default_one_call_body_bytes")]
    pub one_call_max_body_bytes: u64,
    /// Most requests of one tenant, per worker, that wait for their body
    /// without an admission; past it a request is admitted on its headers,
    /// where the tenant's concurrency limit holds (a client announcing a
    /// small body and sending none cannot hold streams without end).
    #[serde(default = "default_one_call_waiting")]
    pub one_call_max_waiting_per_tenant: u32,
    /// Admissions ride one long-lived `AdmitStream` per worker as messages
    /// (a message costs Envoy and the service far less than a call). With
    /// `false` each is a unary Admit call, which Envoy balances (and can
    /// hash) per call across the service's replicas.
    #[serde(default = "default_admit_stream")]
    pub admit_stream: bool,
}

fn default_admit_stream() -> bool {
    true
}

/// Which part of admission an Admit lease does. The gateway module takes two
/// per request: `open` on the headers (the request count and concurrency
/// slot, so a tenant over either is refused before its body is buffered)
/// and `reserve` after the policy (tokens, budgets, the pool queue). `full`
/// does everything in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterPhase {
    Full,
    Open,
    Reserve,
}

/// Admit timeout of the OPEN phase: it never queues.
const OPEN_ADMIT_TIMEOUT: Duration = Duration::from_secs(2);

fn default_cluster() -> String {
    "ratelimit".to_owned()
}
fn default_renew_ms() -> u64 {
    2_000
}
fn default_slack_ms() -> u64 {
    1_000
}
fn default_report_ms() -> u64 {
    2_000
}
fn default_flush_ms() -> u64 {
    5
}
fn default_holder() -> String {
    "envoy".to_owned()
}
fn default_one_call_body_bytes() -> u64 {
    16 * 1024
}
fn default_one_call_waiting() -> u32 {
    16
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("admission configuration is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("admission configuration: {field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

/// What the filter needs at request time.
#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub cluster: String,
    pub renew_interval: Duration,
    pub report_timeout: Duration,
    pub report_flush: Duration,
    pub holder: String,
    /// See [`AdmissionSettings::one_call_max_body_bytes`].
    pub one_call_max_body_bytes: u64,
    pub one_call_max_waiting_per_tenant: u32,
    /// See [`AdmissionSettings::admit_stream`].
    pub admit_stream: bool,
    fail_modes: HashMap<String, FailMode>,
    admit_timeouts: HashMap<String, Duration>,
    default_admit_timeout: Duration,
}

impl CompiledConfig {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_reader(bytes)
    }

    /// Parses and compiles the configuration as it streams from `reader`.
    pub fn from_reader(reader: impl std::io::Read) -> Result<Self, ConfigError> {
        let config: AdmissionConfig = serde_json::from_reader(reader)?;
        Self::compile(&config.registry, config.settings)
    }

    /// Compiles the settings against `registry` (only its tiers and pools
    /// are read).
    pub fn compile(
        registry: &RegistryConfig,
        config: AdmissionSettings,
    ) -> Result<Self, ConfigError> {
        if config.cluster.is_empty() {
            return Err(ConfigError::Invalid {
                field: "cluster",
                reason: "must name the ratelimit-service cluster",
            });
        }
        if config.renew_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                field: "renew_interval_ms",
                reason: "must be > 0",
            });
        }
        if config.report_flush_ms == 0 || config.report_flush_ms > config.renew_interval_ms {
            return Err(ConfigError::Invalid {
                field: "report_flush_ms",
                reason: "must be > 0 and at most renew_interval_ms (renewals ride on the flush tick)",
            });
        }
        let slack = Duration::from_millis(config.admit_slack_ms);
        let admit_timeouts = registry
            .pools
            .iter()
            .map(|(name, pool)| {
                (
                    name.to_string(),
                    Duration::from_millis(pool.max_queue_wait_ms) + slack,
                )
            })
            .collect();
        let fail_modes = registry
            .tiers
            .iter()
            .map(|(name, tier)| (name.to_string(), tier.fail_mode))
            .collect();
        Ok(Self {
            cluster: config.cluster,
            renew_interval: Duration::from_millis(config.renew_interval_ms),
            report_timeout: Duration::from_millis(config.report_timeout_ms),
            report_flush: Duration::from_millis(config.report_flush_ms),
            holder: config.holder,
            one_call_max_body_bytes: config.one_call_max_body_bytes,
            one_call_max_waiting_per_tenant: config.one_call_max_waiting_per_tenant,
            admit_stream: config.admit_stream,
            fail_modes,
            admit_timeouts,
            default_admit_timeout: Duration::from_millis(30_000) + slack,
        })
    }

    /// What to do for `tier` when the service cannot answer (closed if unknown).
    pub fn fail_mode(&self, tier: &str) -> FailMode {
        self.fail_modes
            .get(tier)
            .copied()
            .unwrap_or(FailMode::Closed)
    }

    /// Admit may wait in the pool's queue: its timeout covers that wait
    /// (an OPEN never queues).
    pub fn admit_timeout(&self, phase: FilterPhase, pool: &str) -> Duration {
        if phase == FilterPhase::Open {
            return OPEN_ADMIT_TIMEOUT;
        }
        self.admit_timeouts
            .get(pool)
            .copied()
            .unwrap_or(self.default_admit_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &str = r#"
[tiers.free]
pools = ["latency"]
fail_mode = "open"

[pools.latency]
class = "latency"
max_queue_wait_ms = 3000
"#;

    fn json(extra: &str) -> String {
        let registry = tenant_registry::Registry::from_toml(REGISTRY).expect("registry");
        let registry = serde_json::to_string(registry.config()).expect("json");
        format!(r#"{{"registry":{registry}{extra}}}"#)
    }

    #[test]
    fn defaults_and_per_pool_admit_timeouts() {
        let c = CompiledConfig::from_json(json("").as_bytes()).unwrap();
        assert_eq!(c.cluster, "ratelimit");
        assert_eq!(c.renew_interval, Duration::from_secs(2));
        assert_eq!(c.report_flush, Duration::from_millis(5));
        assert_eq!(c.one_call_max_body_bytes, 16 * 1024);
        assert_eq!(c.one_call_max_waiting_per_tenant, 16);
        assert_eq!(
            c.admit_timeout(FilterPhase::Full, "latency"),
            Duration::from_millis(4_000)
        );
        assert_eq!(
            c.admit_timeout(FilterPhase::Full, "unknown"),
            Duration::from_millis(31_000)
        );
        assert_eq!(c.fail_mode("free"), FailMode::Open);
        assert_eq!(c.fail_mode("unknown"), FailMode::Closed);
    }

    #[test]
    fn bad_values_name_the_field() {
        for (extra, field) in [
            (r#","report_flush_ms":0"#, "report_flush_ms"),
            (r#","report_flush_ms":2001"#, "report_flush_ms"),
            (r#","renew_interval_ms":0"#, "renew_interval_ms"),
            (r#","cluster":"""#, "cluster"),
            (r#","report_flush":5"#, "report_flush"),
        ] {
            let err = CompiledConfig::from_json(json(extra).as_bytes())
                .expect_err(extra)
                .to_string();
            assert!(err.contains(field), "{extra}: {err}");
        }
        let ok = CompiledConfig::from_json(json(r#","report_flush_ms":2000"#).as_bytes()).unwrap();
        assert_eq!(ok.report_flush, ok.renew_interval);
    }
}
