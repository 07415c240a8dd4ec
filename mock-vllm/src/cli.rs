//! Command line of the `mock-vllm` binary.

use crate::config::MockConfig;
use clap::Parser;
use std::net::SocketAddr;

/// A mock vLLM OpenAI-compatible server with continuous batching and a prefix cache.
#[derive(Debug, Parser)]
#[command(name = "mock-vllm", version)]
pub struct Cli {
    /// Address to listen on; port 0 asks the OS for a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub config: MockConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults_and_models_repeat() {
        let cli = Cli::try_parse_from([
            "mock-vllm",
            "--listen",
            "127.0.0.1:9000",
            "--model",
            "a",
            "--model",
            "b",
            "--embedding-model",
            "e",
            "--max-num-seqs",
            "2",
            "--decode-base-us",
            "100",
            "--max-model-len",
            "4096",
            "--default-max-tokens",
            "256",
            "--enable-request-id-headers",
            "--enable-prompt-tokens-details",
            "--no-enable-prompt-tokens-details",
        ])
        .expect("valid flags");
        assert_eq!(cli.config.max_model_len, 4096);
        assert_eq!(cli.config.default_max_tokens, Some(256));
        assert!(cli.config.enable_request_id_headers);
        // The later of the pair wins, as with vLLM's flags.
        assert!(!cli.config.enable_prompt_tokens_details);
        let on =
            Cli::try_parse_from(["mock-vllm", "--enable-prompt-tokens-details"]).expect("switch");
        assert!(on.config.enable_prompt_tokens_details);
        assert_eq!(cli.listen.port(), 9000);
        assert_eq!(cli.config.models, ["a", "b"]);
        assert_eq!(cli.config.embedding_models, ["e"]);
        assert_eq!(cli.config.max_num_seqs, 2);
        assert_eq!(cli.config.decode_base_us, 100);
    }

    #[test]
    fn no_flags_give_the_default_config() {
        let cli = Cli::try_parse_from(["mock-vllm"]).expect("no flags");
        assert_eq!(cli.config, MockConfig::default());
        assert_eq!(cli.listen.to_string(), "127.0.0.1:0");
    }
}
