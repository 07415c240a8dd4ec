//! Typed configuration of one mock replica, shared by the CLI and in-process tests.
//!
//! # Default preset: one H100 (80 GB) serving an 8B model (Llama-3.1-8B, bf16)
//!
//! | knob                   | default | why                                                            |
//! |------------------------|---------|----------------------------------------------------------------|
//! | `max_num_seqs`         | 8       | a small running batch so queueing shows up with few clients    |
//! | `max_model_len`        | 32768   | a common serving limit for Llama-3.1-8B                        |
//! | `block_size`           | 16      | vLLM's default KV block size                                   |
//! | `num_gpu_blocks`       | 4096    | 65,536 tokens of KV (8 GiB at 128 KiB/token for an 8B GQA      |
//! |                        |         | model): a deliberately small slice of the card so KV pressure  |
//! |                        |         | is reachable in tests                                          |
//! | `prefill_us_per_token` | 50      | ~20k prompt tokens/s, H100 prefill of an 8B model              |
//! | `decode_base_us`       | 8000    | one decode step (weights read once per step, ~8 ms)            |
//! | `decode_us_per_seq`    | 300     | added per running sequence (attention over its KV)             |
//!
//! A request without `max_tokens` gets what vLLM gives it: the rest of the context
//! (`max_model_len` − prompt) for chat and the Responses API, 16 for completions. The mock
//! never samples an end-of-sequence token, so such a chat really decodes that many tokens, one
//! decode step each (tens of thousands of steps at the default `max_model_len`): tests that
//! omit `max_tokens` should start the replica with a small `--max-model-len`.
//!
//! With the full batch of 8 a decode step takes 8 ms + 8 × 0.3 ms = 10.4 ms, i.e. ~96 tokens/s
//! per sequence, in the range of a real H100 serving an 8B model at that batch size.

use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const DEFAULT_REPLICA_NAME: &str = "mock-0";
pub const DEFAULT_MODEL: &str = "llama-3.1-8b-instruct";
pub const DEFAULT_MAX_NUM_SEQS: usize = 8;
pub const DEFAULT_MAX_MODEL_LEN: usize = 32768;
pub const DEFAULT_BLOCK_SIZE: usize = 16;
pub const DEFAULT_NUM_GPU_BLOCKS: usize = 4096;
pub const DEFAULT_PREFILL_US_PER_TOKEN: u64 = 50;
pub const DEFAULT_DECODE_BASE_US: u64 = 8000;
pub const DEFAULT_DECODE_US_PER_SEQ: u64 = 300;
/// The vLLM release whose HTTP behaviour the mock reproduces (`GET /version`).
pub const VLLM_VERSION: &str = "0.32.0";

/// Everything that shapes one replica's behaviour. Flags on the command line, fields in code.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", default, deny_unknown_fields)]
pub struct MockConfig {
    /// Name reported in the `x-mock-replica` response header and in `/debug/requests`.
    #[arg(long, default_value = DEFAULT_REPLICA_NAME)]
    pub replica_name: String,

    /// Served generative model name (repeatable). The first one labels the metrics, like
    /// vLLM's first `--served-model-name`.
    #[arg(long = "model", value_name = "NAME", default_values_t = [DEFAULT_MODEL.to_string()])]
    pub models: Vec<String>,

    /// Served embedding model name (repeatable); only these answer `/v1/embeddings`.
    #[arg(long = "embedding-model", value_name = "NAME")]
    pub embedding_models: Vec<String>,

    /// Largest running batch (vLLM's `--max-num-seqs`).
    #[arg(long, default_value_t = DEFAULT_MAX_NUM_SEQS)]
    pub max_num_seqs: usize,

    /// Largest prompt + completion length in tokens (vLLM's `--max-model-len`): longer
    /// prompts are refused, larger `max_tokens` clamped to what is left of it, and
    /// `/v1/models` reports it for every served name.
    #[arg(long, default_value_t = DEFAULT_MAX_MODEL_LEN)]
    pub max_model_len: usize,

    /// Tokens per KV block; also the granularity of the prefix cache.
    #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE)]
    pub block_size: usize,

    /// KV cache capacity in blocks.
    #[arg(long, default_value_t = DEFAULT_NUM_GPU_BLOCKS)]
    pub num_gpu_blocks: usize,

    /// Prefill cost per uncached prompt token, in microseconds.
    #[arg(long, default_value_t = DEFAULT_PREFILL_US_PER_TOKEN)]
    pub prefill_us_per_token: u64,

    /// Fixed cost of one decode step, in microseconds.
    #[arg(long, default_value_t = DEFAULT_DECODE_BASE_US)]
    pub decode_base_us: u64,

    /// Cost of one decode step per running sequence, in microseconds.
    #[arg(long, default_value_t = DEFAULT_DECODE_US_PER_SEQ)]
    pub decode_us_per_seq: u64,

    /// The model's own default output length (`max_tokens` from its generation config), used
    /// when a chat or Responses request names none; unset, such a request gets the rest of the
    /// context, as with vLLM.
    #[arg(long, value_name = "TOKENS")]
    pub default_max_tokens: Option<u32>,

    /// Report cached prompt tokens in `usage.prompt_tokens_details` (vLLM's
    /// `--enable-prompt-tokens-details`; off by default, as in vLLM, where
    /// every prompt token then looks uncached). The testbed turns it on,
    /// as the deploy manifests do.
    #[arg(long, overrides_with = "no_enable_prompt_tokens_details")]
    pub enable_prompt_tokens_details: bool,

    /// Undoes `--enable-prompt-tokens-details` given earlier (vLLM's
    /// `--no-enable-prompt-tokens-details`).
    #[arg(long, overrides_with = "enable_prompt_tokens_details")]
    #[serde(skip)]
    pub no_enable_prompt_tokens_details: bool,

    /// Echo `X-Request-Id` (or a fresh one) on every response (vLLM's
    /// `--enable-request-id-headers`, off by default).
    #[arg(long)]
    pub enable_request_id_headers: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            replica_name: DEFAULT_REPLICA_NAME.to_string(),
            models: vec![DEFAULT_MODEL.to_string()],
            embedding_models: Vec::new(),
            max_num_seqs: DEFAULT_MAX_NUM_SEQS,
            max_model_len: DEFAULT_MAX_MODEL_LEN,
            block_size: DEFAULT_BLOCK_SIZE,
            num_gpu_blocks: DEFAULT_NUM_GPU_BLOCKS,
            prefill_us_per_token: DEFAULT_PREFILL_US_PER_TOKEN,
            decode_base_us: DEFAULT_DECODE_BASE_US,
            decode_us_per_seq: DEFAULT_DECODE_US_PER_SEQ,
            default_max_tokens: None,
            enable_prompt_tokens_details: false,
            no_enable_prompt_tokens_details: false,
            enable_request_id_headers: false,
        }
    }
}

/// A configuration that cannot describe a working replica.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("at least one --model is required")]
    NoModel,
    #[error("model `{0}` is listed both as a generative and as an embedding model")]
    AmbiguousModel(String),
    #[error("{field} must be at least 1")]
    Zero { field: &'static str },
}

impl MockConfig {
    /// Refuses a config up front so a bad flag fails at start, not on the first request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.models.is_empty() {
            return Err(ConfigError::NoModel);
        }
        if let Some(both) = self
            .models
            .iter()
            .find(|m| self.embedding_models.contains(m))
        {
            return Err(ConfigError::AmbiguousModel(both.clone()));
        }
        let positive = [
            ("max_num_seqs", self.max_num_seqs),
            ("max_model_len", self.max_model_len),
            ("block_size", self.block_size),
            ("num_gpu_blocks", self.num_gpu_blocks),
            (
                "default_max_tokens",
                self.default_max_tokens.map_or(1, |n| n as usize),
            ),
        ];
        match positive.into_iter().find(|(_, value)| *value == 0) {
            Some((field, _)) => Err(ConfigError::Zero { field }),
            None => Ok(()),
        }
    }

    /// The model name that labels exported metrics.
    pub fn metrics_model_name(&self) -> &str {
        self.models
            .first()
            .or(self.embedding_models.first())
            .map_or(DEFAULT_MODEL, String::as_str)
    }

    pub fn decode_step_time(&self, running: usize) -> Duration {
        Duration::from_micros(
            self.decode_base_us
                .saturating_add(self.decode_us_per_seq.saturating_mul(running as u64)),
        )
    }

    pub fn prefill_time(&self, uncached_tokens: usize) -> Duration {
        Duration::from_micros(
            self.prefill_us_per_token
                .saturating_mul(uncached_tokens as u64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_preset() {
        let config = MockConfig::default();
        assert_eq!(config.validate(), Ok(()));
        // Full batch: 8 ms + 8 x 0.3 ms.
        assert_eq!(config.decode_step_time(8), Duration::from_micros(10_400));
        assert_eq!(config.prefill_time(1000), Duration::from_millis(50));
    }

    #[test]
    fn zero_sized_knobs_are_refused() {
        let config = MockConfig {
            max_num_seqs: 0,
            ..MockConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::Zero {
                field: "max_num_seqs"
            })
        );
    }

    #[test]
    fn a_model_cannot_be_both_kinds() {
        let config = MockConfig {
            embedding_models: vec![DEFAULT_MODEL.to_string()],
            ..MockConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::AmbiguousModel(_))
        ));
    }
}
