//! `deploy/docker-compose.yml`, for real: the images are built from the
//! repository's Dockerfile (on local base images, see
//! `deploy/docker/local-bases.sh`: this machine has no registry; with the
//! binaries `make build` made unless `COMPOSE_TEST_BUILD=source`), the stack
//! comes up in the order its health checks give, and a client drives it the
//! way a user trying the project would: authentication, chat, streaming, a
//! 429, a registry change applied without a restart, and the mTLS listener.
//! `down` then leaves no container, network or volume behind (also when an
//! assertion fails: the guard's `Drop`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gateway_e2e::{Reply, chat, eventually};
use serde_json::{Value, json};
use tenant_registry::api_key_digest_hex;
use test_support::free_port;

const MODEL: &str = "llama-3.1-8b-instruct";
const CHAT_KEY: &str = "sk-compose-test-chat-0000000000000000000000000000000";
const BURST_KEY: &str = "sk-compose-test-burst-000000000000000000000000000000";
const LATE_KEY: &str = "sk-compose-test-late-0000000000000000000000000000000";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        tail(&String::from_utf8_lossy(&output.stderr), 60)
    );
    output
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One `[[tenants]]` entry with one API key; `extra` is more TOML lines.
fn tenant(id: &str, tier: &str, model: &str, key: &str, extra: &str) -> String {
    format!(
        "\n[[tenants]]\nid = \"{id}\"\ntier = \"{tier}\"\nmodels = [\"{model}\"]\n{extra}\
         api_keys = [{{ id = \"k1\", sha256 = \"{}\" }}]\n",
        api_key_digest_hex(key)
    )
}

/// The deployment's registry plus the test's tenants, whose keys it knows.
fn registry(with_late_tenant: bool) -> String {
    let mut toml = std::fs::read_to_string(repo().join("deploy/config/registry.toml"))
        .expect("deploy/config/registry.toml");
    toml.push_str(&tenant(
        "compose-chat",
        "standard",
        "group:chat",
        CHAT_KEY,
        "",
    ));
    // Two requests a minute: the third is refused.
    toml.push_str(&tenant(
        "compose-burst",
        "standard",
        "group:chat",
        BURST_KEY,
        "limits = { rpm = 2 }\n",
    ));
    if with_late_tenant {
        toml.push_str(&tenant("compose-late", "batch", MODEL, LATE_KEY, ""));
    }
    toml
}

/// Writes through a rename, as an operator's deploy tool would: readers
/// never see half a file.
fn write_registry(dir: &Path, toml: &str) {
    let tmp = dir.join(".registry.toml.tmp");
    std::fs::write(&tmp, toml).expect("write registry");
    std::fs::rename(&tmp, dir.join("registry.toml")).expect("rename registry");
}

/// One compose project; `down -v` on drop.
struct Stack {
    project: String,
    /// Compose v2 as a docker plugin, else v1's `docker-compose`: asked
    /// once, not on every command the polls run.
    compose_v2: bool,
    env: Vec<(String, String)>,
    work: PathBuf,
    http_port: u16,
    mtls_port: u16,
    admin_port: u16,
    admin_token: String,
}

impl Stack {
    fn compose(&self) -> Command {
        let mut command = if self.compose_v2 {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        } else {
            Command::new("docker-compose")
        };
        command
            .args(["--project-name", &self.project, "--file"])
            .arg(repo().join("deploy/docker-compose.yml"))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `docker inspect --format` of a service's one container.
    fn inspect(&self, service: &str, format: &str) -> String {
        let ids = run(self.compose().args(["ps", "-q", service]));
        let id = String::from_utf8_lossy(&ids.stdout).trim().to_string();
        let out = run(Command::new("docker").args(["inspect", "--format", format, &id]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn gateway(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn leftovers(&self) -> String {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut found = String::new();
        for what in [
            &["ps", "-a", "-q", "--filter"][..],
            &["network", "ls", "-q", "--filter"][..],
            &["volume", "ls", "-q", "--filter"][..],
        ] {
            let output = run(Command::new("docker").args(what).arg(&label));
            found.push_str(&String::from_utf8_lossy(&output.stdout));
        }
        found.trim().to_string()
    }

    fn logs(&self) -> String {
        self.compose()
            .args(["logs", "--no-color", "--tail", "40"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn down(&self) {
        let _ = self
            .compose()
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .output();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("compose logs:\n{}", self.logs());
        }
        self.down();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

fn client() -> reqwest::blocking::Client {
    gateway_e2e::client()
}

fn post(stack: &Stack, key: &str, body: &Value) -> Reply {
    Reply::from(
        client()
            .post(format!("{}/v1/chat/completions", stack.gateway()))
            .bearer_auth(key)
            .json(body)
            .send()
            .expect("request to the gateway"),
    )
}

fn models(stack: &Stack, key: Option<&str>) -> Reply {
    let mut request = client().get(format!("{}/v1/models", stack.gateway()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    Reply::from(request.send().expect("request to the gateway"))
}

/// Where the test stages the host's binaries in the build context.
const PREBUILT: &str = "target/docker-prebuilt";

/// Unless `COMPOSE_TEST_BUILD=source`: copies the binaries and filter
/// modules `make build` just made (same toolchain, same Debian as the local
/// base images) to [`PREBUILT`], debug info stripped, and returns the
/// `PREBUILT_DIR` build argument. Compiling them again in the image would
/// add about ten minutes to CI; the Dockerfile's compile step still runs in
/// `COMPOSE_TEST_BUILD=source` mode and for every user.
fn stage_prebuilt(root: &Path) -> Option<String> {
    if std::env::var("COMPOSE_TEST_BUILD").as_deref() == Ok("source") {
        return None;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let stage = root.join(PREBUILT);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("bin")).expect("stage dir");
    std::fs::create_dir_all(stage.join("wasm")).expect("stage dir");
    for bin in ["ratelimit-service", "mock-vllm", "gateway-probe"] {
        let from = target.join("debug").join(bin);
        assert!(from.exists(), "{} missing: run make build", from.display());
        run(Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&from)
            .arg(stage.join("bin").join(bin)));
    }
    let module = "llm_gateway.wasm";
    let from = target.join("wasm32-wasip1/wasm").join(module);
    std::fs::copy(&from, stage.join("wasm").join(module))
        .unwrap_or_else(|e| panic!("{}: {e} (run make build)", from.display()));
    Some(PREBUILT.to_owned())
}

fn start() -> Stack {
    let root = repo();
    let work = std::env::temp_dir().join(format!("llm-gateway-compose-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let config = work.join("config");
    let secrets = work.join("secrets");
    std::fs::create_dir_all(&config).expect("config dir");

    // Local stand-ins for the public base images (cached by content hash).
    let bases = work.join("bases.env");
    run(Command::new(root.join("deploy/docker/local-bases.sh"))
        .arg("--env-file")
        .arg(&bases));
    run(Command::new(root.join("deploy/gen-dev-secrets.sh")).arg(&secrets));
    let admin_token = std::fs::read_to_string(secrets.join("ratelimit.env"))
        .expect("ratelimit.env")
        .trim()
        .strip_prefix("ADMIN_TOKEN=")
        .expect("ADMIN_TOKEN=...")
        .to_string();
    write_registry(&config, &registry(false));
    let prebuilt = stage_prebuilt(&root);

    let (http_port, mtls_port, envoy_admin, admin_port) =
        (free_port(), free_port(), free_port(), free_port());
    let mut env: Vec<(String, String)> = std::fs::read_to_string(&bases)
        .expect("bases.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend([
        ("GATEWAY_HTTP_PORT".into(), http_port.to_string()),
        ("GATEWAY_MTLS_PORT".into(), mtls_port.to_string()),
        ("ENVOY_ADMIN_PORT".into(), envoy_admin.to_string()),
        ("RATELIMIT_ADMIN_PORT".into(), admin_port.to_string()),
        ("GATEWAY_CONFIG_DIR".into(), config.display().to_string()),
        ("GATEWAY_SECRETS_DIR".into(), secrets.display().to_string()),
        // With COMPOSE_TEST_BUILD=source: what users get, a release compile
        // in the image (`dev` was slower here: 916 s cold, release about
        // 13 min, its debug info being many more bytes through the engine's
        // fuse-overlayfs; COMPOSE_TEST_CARGO_PROFILE overrides).
        (
            "CARGO_PROFILE".into(),
            std::env::var("COMPOSE_TEST_CARGO_PROFILE").unwrap_or_else(|_| "release".into()),
        ),
        ("PREBUILT_DIR".into(), prebuilt.clone().unwrap_or_default()),
    ]);
    let stack = Stack {
        project: format!("llmgwtest{}", std::process::id()),
        compose_v2: Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success()),
        env,
        work,
        http_port,
        mtls_port,
        admin_port,
        admin_token,
    };
    let started = Instant::now();
    run(stack.compose().args(["build"]));
    eprintln!(
        "compose build ({}): {:?}",
        if prebuilt.is_some() {
            "binaries from the host"
        } else {
            "compiled in the image"
        },
        started.elapsed()
    );
    if prebuilt.is_some() {
        // Out of later build contexts (a user's `compose build` included).
        let _ = std::fs::remove_dir_all(root.join(PREBUILT));
    }
    let started = Instant::now();
    // `up -d` starts the services in dependency order, Envoy only after
    // ratelimit-service and the replicas report healthy; it does not wait
    // for Envoy's own health (v2 has `--wait`, v1 not): the test does.
    run(stack.compose().args(["up", "--detach"]));
    let healthy = eventually(Duration::from_secs(120), || {
        stack.inspect("envoy", "{{.State.Health.Status}}") == "healthy"
    });
    assert!(healthy, "Envoy never became healthy:\n{}", stack.logs());
    eprintln!("compose up until Envoy is healthy: {:?}", started.elapsed());
    stack
}

#[test]
fn compose_up_serves_and_comes_down() {
    let stack = start();

    // Health ordering: once Envoy's health check passes, everything behind
    // it is up too, so the first request is served, not a 5xx.
    let ready = models(&stack, Some(CHAT_KEY));
    assert_eq!(
        ready.status, 200,
        "first request once healthy: {}",
        ready.text
    );
    assert!(
        ready.body["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|m| m["id"] == MODEL)),
        "{}",
        ready.text
    );
    // Authentication.
    models(&stack, None).assert_error(401, "missing_credentials");
    models(&stack, Some("sk-not-a-key-of-anyone")).assert_error(401, "invalid_api_key");

    // Chat, billed.
    let reply = post(&stack, CHAT_KEY, &chat(MODEL, "hello from compose", 8));
    assert_eq!(reply.status, 200, "{}", reply.text);
    let completion = reply.body["usage"]["completion_tokens"].as_u64();
    assert!(completion.is_some_and(|n| n > 0), "{}", reply.text);

    // Streaming: SSE through Envoy, ended by [DONE], usage when asked.
    let mut body = chat(MODEL, "stream please", 8);
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let mut response = client()
        .post(format!("{}/v1/chat/completions", stack.gateway()))
        .bearer_auth(CHAT_KEY)
        .json(&body)
        .send()
        .expect("stream request");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "{:?}",
        response.headers()
    );
    let mut sse = String::new();
    response.read_to_string(&mut sse).expect("stream body");
    let events: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{sse}");
    assert!(events.len() > 2, "{sse}");
    let usage_chunk: Value = serde_json::from_str(events[events.len() - 2]).expect("usage chunk");
    assert!(
        usage_chunk["usage"]["total_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{sse}"
    );

    // The spend reached the ledger (admin API, bearer token).
    let settled = eventually(Duration::from_secs(10), || {
        client()
            .get(format!("http://127.0.0.1:{}/admin/usage", stack.admin_port))
            .bearer_auth(&stack.admin_token)
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .and_then(|usage| {
                usage["tenants"]
                    .as_array()?
                    .iter()
                    .find(|t| t["tenant"] == "compose-chat")
                    .cloned()
            })
            .is_some_and(|row| row.to_string().contains("\"requests\":2"))
    });
    assert!(settled, "compose-chat's two requests not in /admin/usage");

    // A 429 in OpenAI's shape once the tenant's rpm is spent.
    for _ in 0..2 {
        let ok = post(&stack, BURST_KEY, &chat(MODEL, "burst", 4));
        assert_eq!(ok.status, 200, "{}", ok.text);
    }
    let refused = post(&stack, BURST_KEY, &chat(MODEL, "burst", 4));
    refused.assert_error(429, "rate_limit_exceeded");
    assert!(
        refused.header("retry-after").is_some(),
        "{:?}",
        refused.headers
    );

    // A registry change without a restart: a new tenant, rendered by the
    // one-shot job, is served by the same Envoy and ratelimit-service.
    let started_at = |service: &str| stack.inspect(service, "{{.State.StartedAt}}");
    let envoy_started = started_at("envoy");
    let service_started = started_at("ratelimit-service");
    models(&stack, Some(LATE_KEY)).assert_error(401, "invalid_api_key");
    write_registry(&stack.work.join("config"), &registry(true));
    run(stack.compose().args(["run", "--rm", "ecds-render"]));
    let served = eventually(Duration::from_secs(30), || {
        post(&stack, LATE_KEY, &chat(MODEL, "new here", 4)).status == 200
    });
    assert!(
        served,
        "the new tenant's key is not served: {}",
        stack.logs()
    );
    assert_eq!(started_at("envoy"), envoy_started, "Envoy restarted");
    assert_eq!(
        started_at("ratelimit-service"),
        service_started,
        "ratelimit-service restarted"
    );

    // The mTLS listener: the dev client certificate names tenant "partner".
    let secrets = stack.work.join("secrets/tls");
    let pem = |name: &str| std::fs::read(secrets.join(name)).expect("dev TLS file");
    let mut identity = pem("client.crt");
    identity.extend(pem("client.key"));
    let mtls = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem("client-ca.crt")).expect("CA"))
        .identity(reqwest::Identity::from_pem(&identity).expect("client identity"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("mTLS client");
    let reply = Reply::from(
        mtls.post(format!(
            "https://localhost:{}/v1/chat/completions",
            stack.mtls_port
        ))
        .json(&chat(MODEL, "over mTLS", 4))
        .send()
        .expect("mTLS request"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Down leaves nothing behind.
    stack.down();
    assert_eq!(stack.leftovers(), "", "left running after down");
}
