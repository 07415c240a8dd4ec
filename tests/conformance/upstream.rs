//! The two upstreams the suite runs against, each behind its own gateway,
//! started on first use and stopped by [`Suite::shutdown`] (or its drop).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use gateway_e2e::with_digests;
use testbed::vllm::{VllmOptions, VllmServer};
use testbed::{FilterSet, Paths, PoolSpec, Testbed, TestbedConfig};

/// The model both upstreams serve under this name.
pub const MODEL: &str = "tiny-llama";
/// The embedding model: mock-vllm serves it beside `MODEL`; for real vLLM it
/// is the same weights under the pooling runner, the throughput pool's
/// replica (where the gateway sends embeddings).
pub const EMBED_MODEL: &str = "tiny-embed";
/// The pools' real window; the registry claims 131,072.
pub const MAX_MODEL_LEN: u32 = 2048;
pub const POOLS: [&str; 2] = ["latency", "throughput"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    Mock,
    Vllm,
}

impl Upstream {
    pub const ALL: [Upstream; 2] = [Upstream::Mock, Upstream::Vllm];

    pub fn name(self) -> &'static str {
        match self {
            Upstream::Mock => "mock",
            Upstream::Vllm => "vllm",
        }
    }
}

/// A gateway in front of one upstream.
pub struct Gateway {
    // Field order is drop order: the gateway goes before its upstream.
    pub tb: Testbed,
    /// The real servers; none for the mocks, which the testbed owns.
    _vllm: Vec<VllmServer>,
}

impl Gateway {
    fn start(upstream: Upstream) -> Result<Self, String> {
        let registry = with_digests(include_str!("registry.toml"));
        let mut config = TestbedConfig::new(registry);
        config.filters = FilterSet::ALL;
        config.ratelimit = true;
        let vllm = match upstream {
            Upstream::Mock => {
                let mock_args = [
                    "--max-model-len",
                    &MAX_MODEL_LEN.to_string(),
                    "--decode-base-us",
                    "200",
                ]
                .map(str::to_owned)
                .to_vec();
                config.pools = POOLS
                    .iter()
                    .map(|pool| PoolSpec {
                        mock_args: mock_args.clone(),
                        ..PoolSpec::new(pool, 1)
                    })
                    .collect();
                Vec::new()
            }
            Upstream::Vllm => {
                let paths = Paths::locate().map_err(|e| e.to_string())?;
                // Beside the build, where CI keeps it for a failed run.
                let log_dir = paths.target.join("conformance");
                std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
                let started = std::time::Instant::now();
                let spawn = |name: &str, model: &str, extra: &[&str]| {
                    let options = VllmOptions {
                        served_model_names: vec![model.to_owned()],
                        max_model_len: MAX_MODEL_LEN,
                        extra_args: extra.iter().map(|a| a.to_string()).collect(),
                    };
                    VllmServer::spawn(&paths, name, options, &log_dir)
                        .map_err(|e| format!("vLLM {name} did not start: {e}"))
                };
                // Side by side: a start is mostly imports on two cores.
                let mut chat = spawn("conformance-vllm", MODEL, &[])?;
                let mut embed = spawn(
                    "conformance-vllm-embed",
                    EMBED_MODEL,
                    &["--runner", "pooling", "--convert", "embed"],
                )?;
                for server in [&mut chat, &mut embed] {
                    server
                        .wait_healthy()
                        .map_err(|e| format!("vLLM did not start: {e}"))?;
                }
                eprintln!(
                    "conformance: vLLM chat at {} and embeddings at {} healthy after {:.1} s",
                    chat.url(),
                    embed.url(),
                    started.elapsed().as_secs_f64()
                );
                config.pools = vec![
                    PoolSpec::external("latency", vec![chat.addr]),
                    PoolSpec::external("throughput", vec![embed.addr]),
                ];
                vec![chat, embed]
            }
        };
        let tb = Testbed::start(config).map_err(|e| format!("testbed did not start: {e}"))?;
        Ok(Self { tb, _vllm: vllm })
    }

    /// Base URLs of the replicas behind the gateway.
    pub fn replica_urls(&self) -> Vec<String> {
        POOLS.iter().flat_map(|p| self.tb.replica_urls(p)).collect()
    }
}

/// The upstreams started so far, or why one could not start.
#[derive(Default)]
pub struct Suite {
    started: Mutex<HashMap<Upstream, Result<Arc<Gateway>, String>>>,
}

impl Suite {
    /// The gateway in front of `upstream`, started on first use. A failed
    /// start fails every case of that upstream with the same reason.
    pub fn gateway(&self, upstream: Upstream) -> Result<Arc<Gateway>, libtest_mimic::Failed> {
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = started
            .entry(upstream)
            .or_insert_with(|| Gateway::start(upstream).map(Arc::new));
        entry.clone().map_err(libtest_mimic::Failed::from)
    }

    /// Stops every upstream (a case still holding one keeps it until it ends).
    pub fn shutdown(&self) {
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        self.shutdown();
    }
}
