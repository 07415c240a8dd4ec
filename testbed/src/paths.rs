//! Where the testbed finds what `make build` produced.

use std::path::{Path, PathBuf};

use crate::TestbedError;

/// Locations of the Envoy binary, the filter `.wasm` files and the Rust binaries.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub envoy: PathBuf,
    /// Python 3.11+ for the shipped `envoy/render-ecds.py`: `$PYTHON`, else
    /// the project's `.venv` (where Envoy comes from), else `python3`.
    pub python: PathBuf,
    pub target: PathBuf,
    /// Cargo profile directory of the native binaries (`debug` or `release`).
    pub profile: String,
}

impl Paths {
    /// Reads `GATEWAY_ROOT`, `ENVOY_BIN`, `CARGO_TARGET_DIR` and
    /// `TESTBED_PROFILE`, defaulting to this checkout's layout.
    pub fn locate() -> Result<Self, TestbedError> {
        let root = std::env::var_os("GATEWAY_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        let root = root
            .canonicalize()
            .map_err(|e| TestbedError::io(&root, e))?;
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let envoy = std::env::var_os("ENVOY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/envoy"));
        let profile = std::env::var("TESTBED_PROFILE").unwrap_or_else(|_| "debug".to_owned());
        if !envoy.exists() {
            return Err(TestbedError::MissingArtifact(envoy));
        }
        let venv_python = root.join(".venv/bin/python");
        let python = std::env::var_os("PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                if venv_python.exists() {
                    venv_python
                } else {
                    PathBuf::from("python3")
                }
            });
        Ok(Self {
            root,
            envoy,
            python,
            target,
            profile,
        })
    }

    /// A native binary of the workspace.
    pub fn binary(&self, name: &str) -> Result<PathBuf, TestbedError> {
        existing(self.target.join(&self.profile).join(name))
    }

    /// Where `make wasm` puts the filter modules (`--profile wasm`).
    pub fn wasm_dir(&self) -> PathBuf {
        self.target.join("wasm32-wasip1/wasm")
    }

    /// A filter module built with `--profile wasm`.
    pub fn wasm(&self, crate_name: &str) -> Result<PathBuf, TestbedError> {
        existing(self.wasm_dir().join(format!("{crate_name}.wasm")))
    }
}

/// `path`, or the error naming it when it is not there.
pub(crate) fn existing(path: PathBuf) -> Result<PathBuf, TestbedError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(TestbedError::MissingArtifact(path))
    }
}
