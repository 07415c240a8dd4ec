//! A real vLLM server on CPU (`tools/vllm/`): installed into its cached
//! virtualenv on first use, serving the tiny seeded model the project
//! generates, on a free loopback port. The testbed uses it as an external
//! replica of its pools (`make run VLLM=cpu`, the conformance suite).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::{ManagedProcess, Paths, TestbedError};

/// How long a cold start may take (a first start compiles nothing, but
/// imports torch and profiles the model on 2 cores: 50-120 s seen, more
/// when two servers and a build share the cores).
const START_TIMEOUT: Duration = Duration::from_secs(600);

/// What the server serves.
#[derive(Debug, Clone)]
pub struct VllmOptions {
    /// Names the model answers to; the first is the one it reports.
    pub served_model_names: Vec<String>,
    pub max_model_len: u32,
    /// Extra `vllm serve` flags, after the project's defaults.
    pub extra_args: Vec<String>,
}

impl Default for VllmOptions {
    fn default() -> Self {
        Self {
            served_model_names: vec!["tiny-llama".to_owned()],
            max_model_len: 2048,
            extra_args: Vec::new(),
        }
    }
}

/// A running vLLM server; stopped (with its engine core) when dropped.
#[derive(Debug)]
pub struct VllmServer {
    pub addr: SocketAddr,
    pub options: VllmOptions,
    pub process: ManagedProcess,
}

impl VllmServer {
    /// Installs vLLM if needed, generates the model if needed, starts the
    /// server and waits for its `/health`. Logs go to `<log_dir>/<name>.log`.
    pub fn start(
        paths: &Paths,
        name: &str,
        options: VllmOptions,
        log_dir: &Path,
    ) -> Result<Self, TestbedError> {
        let mut server = Self::spawn(paths, name, options, log_dir)?;
        server.wait_healthy()?;
        Ok(server)
    }

    /// [`VllmServer::start`] without the wait: several servers can then
    /// start side by side (most of a start is Python imports).
    pub fn spawn(
        paths: &Paths,
        name: &str,
        options: VllmOptions,
        log_dir: &Path,
    ) -> Result<Self, TestbedError> {
        let tools = paths.root.join("tools/vllm");
        let venv = install(&tools)?;
        let model = tiny_model(paths, &tools, &venv)?;
        let addr = free_port()?;
        let mut command = Command::new(tools.join("serve.sh"));
        // Flags after serve.sh's defaults replace them.
        command
            .arg(&model)
            .arg(addr.port().to_string())
            .env("VLLM_VENV", &venv)
            .arg("--max-model-len")
            .arg(options.max_model_len.to_string())
            .arg("--served-model-name")
            .args(&options.served_model_names)
            .args(&options.extra_args);
        let process = ManagedProcess::spawn_group(name, command, log_dir)?;
        Ok(Self {
            addr,
            options,
            process,
        })
    }

    /// Waits until the server answers `/health`.
    pub fn wait_healthy(&mut self) -> Result<(), TestbedError> {
        wait_healthy(&mut self.process, self.addr)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// `tools/vllm/install.sh`: a no-op once the cached virtualenv is complete.
fn install(tools: &Path) -> Result<PathBuf, TestbedError> {
    let script = tools.join("install.sh");
    let status = Command::new(&script)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| TestbedError::io(&script, e))?;
    if !status.success() {
        return Err(TestbedError::Other(format!(
            "{} failed ({status})",
            script.display()
        )));
    }
    let out = Command::new(&script)
        .arg("--print-venv")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| TestbedError::io(&script, e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let venv = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match venv {
        Some(venv) if out.status.success() => Ok(PathBuf::from(venv.trim())),
        _ => Err(TestbedError::Other(format!(
            "{} failed ({}): {stdout}",
            script.display(),
            out.status
        ))),
    }
}

/// The generated model, under `target/`, keyed by the generator and its
/// tokenizer corpus (`corpus/`) so a change to either makes a new one.
fn tiny_model(paths: &Paths, tools: &Path, venv: &Path) -> Result<PathBuf, TestbedError> {
    let mut hasher = Sha256::new();
    let corpus = tools.join("corpus");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .map_err(|e| TestbedError::io(&corpus, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    inputs.sort();
    inputs.insert(0, tools.join("make_tiny_model.py"));
    for input in &inputs {
        hasher.update(
            input
                .file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hasher.update(std::fs::read(input).map_err(|e| TestbedError::io(input, e))?);
    }
    let digest = hex::encode(hasher.finalize());
    let dir = paths
        .target
        .join(format!("tiny-llama-{}", &digest[..12.min(digest.len())]));
    if dir.join("config.json").exists() {
        return Ok(dir);
    }
    // Generated beside, then renamed: a half-written model is never used.
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let python = venv.join("bin/python");
    let status = Command::new(&python)
        .arg(tools.join("make_tiny_model.py"))
        .arg(&partial)
        .env("HF_HUB_OFFLINE", "1")
        .status()
        .map_err(|e| TestbedError::io(&python, e))?;
    if !status.success() {
        return Err(TestbedError::Other(format!(
            "make_tiny_model.py failed ({status})"
        )));
    }
    std::fs::rename(&partial, &dir).map_err(|e| TestbedError::io(&dir, e))?;
    Ok(dir)
}

fn free_port() -> Result<SocketAddr, TestbedError> {
    let probe = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| TestbedError::io(Path::new("127.0.0.1:0"), e))?;
    Ok(probe)
}

fn wait_healthy(process: &mut ManagedProcess, addr: SocketAddr) -> Result<(), TestbedError> {
    let client = crate::http_client();
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if !process.is_running() {
            return Err(process.failed("exited before it was healthy".into()));
        }
        let healthy = client
            .get(format!("http://{addr}/health"))
            .send()
            .is_ok_and(|r| r.status().is_success());
        if healthy {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(process.failed(format!("not healthy after {START_TIMEOUT:?}")))
}
