//! Everything that can stop a benchmark run, with the hint a user needs to fix it.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BenchError {
    #[error(
        "a wasm module is not built ({path} is missing).\n\
         Build it with: make wasm"
    )]
    ModuleNotBuilt { path: PathBuf },
    #[error(
        "{binary} is not built ({path} is missing).\n\
         Build it with: cargo build --release -p {binary} and run with TESTBED_PROFILE=release"
    )]
    BinaryNotBuilt { binary: &'static str, path: PathBuf },
    #[error("invalid argument: {0}")]
    InvalidArgs(String),
    #[error("cannot locate the build outputs: {0}")]
    Locate(#[source] testbed::TestbedError),
    #[error("testbed `{label}` did not start: {source}")]
    Testbed {
        label: String,
        source: testbed::TestbedError,
    },
    #[error(
        "testbed `{label}` answered the probe request with {status}, not 2xx: {body}\n\
         (run with --keep-logs DIR to keep its Envoy and mock logs)"
    )]
    Probe {
        label: String,
        status: String,
        body: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("invalid request recipe: {0}")]
    Recipe(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
}
