//! The deployment forms against their one source (`envoy/gateway.yaml` and
//! `envoy/render-ecds.py`; the testbed every other test starts runs both):
//! the committed generated files are what the renderer makes of their
//! registries, and the Istio gateway's chain, built as istiod builds it
//! with the built modules, is the gateway's order and loads in Envoy.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use testbed::Paths;

/// Runs `deploy/checks.py` with the project's Python (PyYAML installed by
/// `make setup`); its `FAIL:` lines are the assertion message.
fn checks(args: &[&str]) -> String {
    let paths = Paths::locate().expect("make build first");
    let out = Command::new(&paths.python)
        .arg(paths.root.join("deploy/checks.py"))
        .args(args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "checks.py {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs the shipped renderer, `envoy/render-ecds.py`, with `args`.
fn render_ecds<I, S>(paths: &Paths, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(&paths.python)
        .arg(paths.root.join("envoy/render-ecds.py"))
        .args(args)
        .output()
        .expect("python runs")
}

/// The ECDS file `file` a successful render (`out`) wrote, as JSON.
fn rendered(out: &Output, file: &Path) -> serde_json::Value {
    assert!(
        out.status.success(),
        "render-ecds.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{} rendered: {e}", file.display()));
    serde_json::from_slice(&bytes).expect("ECDS is JSON")
}

#[test]
fn generated_deployment_files_equal_a_fresh_render() {
    let out = checks(&["generated"]);
    assert!(
        out.contains("ok: deploy/k8s/overlays/istio filter resources in sync"),
        "{out}"
    );
    assert!(out.contains("ok: envoy/ecds/*.json in sync"), "{out}");
}

#[test]
fn the_istio_gateway_chain_is_the_gateway_order() {
    let paths = Paths::locate().expect("make build first");
    let wasm = paths.target.join("wasm32-wasip1/wasm");
    let out = checks(&[
        "istio-envoy",
        paths.envoy.to_str().expect("utf-8 path"),
        wasm.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.contains("llm-gateway -> envoy.filters.http.router"),
        "{out}"
    );
}

/// The module's config carries the registry once, without what no phase
/// reads: a tenant's limits and weight are ratelimit-service's, and with a
/// registry of real size they were bytes every VM of every worker parsed.
#[test]
fn the_module_gets_only_what_its_phases_read() {
    let paths = Paths::locate().expect("make build first");
    let dir = tempfile::tempdir().expect("temp dir");
    let example = std::fs::read_to_string(paths.root.join("envoy/registry.example.toml"))
        .expect("example registry");
    let registry = format!(
        "{example}\n[[tenants]]\nid = \"metered\"\ntier = \"standard\"\nmodels = [\"*\"]\n\
         weight = 2.0\nlimits = {{ rpm = 10 }}\n\
         model_limits = {{ \"llama-3.1-8b-instruct\" = {{ tpm = 1000 }} }}\n\
         api_keys = [{{ id = \"m1\", sha256 = \"{}\", created_at = \"2026-01-01T00:00:00Z\" }}]\n",
        "ab".repeat(32)
    );
    let registry_path = dir.path().join("registry.toml");
    std::fs::write(&registry_path, registry).expect("write registry");
    let out = render_ecds(
        &paths,
        [
            OsStr::new("--registry"),
            registry_path.as_os_str(),
            OsStr::new("--cache-secret-placeholder"),
            OsStr::new("--out"),
            dir.path().as_os_str(),
        ],
    );
    let ecds = rendered(&out, &dir.path().join("llm-gateway.json"));
    let config = ecds["resources"][0]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .expect("a string configuration");
    let config: serde_json::Value = serde_json::from_str(config).expect("config is JSON");
    let tenants = config["registry"]["tenants"].as_array().expect("tenants");
    let metered = tenants
        .iter()
        .find(|t| t["id"] == "metered")
        .expect("every tenant is there");
    for field in ["limits", "model_limits", "weight"] {
        assert!(
            metered.get(field).is_none(),
            "{field} reached the module: {metered}"
        );
    }
    assert_eq!(metered["tier"], "standard");
    let key = &metered["api_keys"][0];
    assert_eq!(key["sha256"], "ab".repeat(32));
    assert!(key.get("created_at").is_none(), "{key}");
    // The tiers' limits stay: the policy reads the caps beside them.
    assert!(config["registry"]["tiers"]["standard"]["limits"].is_object());
}

/// `gateway-bench builds` compares two builds of the module side by side:
/// the testbed must run the build in `module_dir`, and refuse a directory
/// without one rather than fall back to the workspace's build unnoticed.
#[test]
fn the_testbed_runs_the_module_build_it_is_given() {
    use gateway_e2e::{FilterSet, chat, post, registry, start_with};
    use testbed::{PoolSpec, TestbedConfig, TestbedError};

    let keys = test_keys::TestKeys::generate();
    let paths = Paths::locate().expect("make build first");
    let config_in = |dir: &std::path::Path| {
        let mut config = TestbedConfig::new(registry(&keys));
        config.filters = FilterSet::AUTH_ONLY;
        config.ratelimit = false;
        config.pools = vec![PoolSpec::new("latency", 1), PoolSpec::new("throughput", 1)];
        config.module_dir = Some(dir.to_owned());
        config
    };

    let empty = tempfile::tempdir().expect("temp dir");
    match testbed::Testbed::start(config_in(empty.path())) {
        Err(TestbedError::MissingArtifact(path)) => {
            assert_eq!(path, empty.path().join("llm_gateway.wasm"));
        }
        other => panic!("a directory without the module must be refused: {other:?}"),
    }

    let other_build = tempfile::tempdir().expect("temp dir");
    let copy = other_build.path().join("llm_gateway.wasm");
    std::fs::copy(paths.wasm("llm_gateway").expect("make wasm first"), &copy)
        .expect("copy the module");
    let tb = start_with(config_in(other_build.path()));
    let ecds = std::fs::read_to_string(tb.run_dir().join("ecds/llm-gateway.json"))
        .expect("the module's ECDS file");
    assert!(
        ecds.contains(&*copy.to_string_lossy()),
        "Envoy loads the copy, not the workspace's build: {ecds}"
    );
    let served = post(
        &tb,
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-acme-live")],
        &chat("llama-3.1-8b-instruct", "hello there", 4),
    );
    assert_eq!(served.status, 200, "{}", served.text);
}

/// A test probe gets the configuration it is given (what `gateway-bench
/// host-costs` asks of it) and may hold the headers for the body, as the
/// module; a configuration for a probe that is not there is refused.
#[test]
fn the_renderer_gives_a_probe_its_configuration() {
    let paths = Paths::locate().expect("make build first");
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = paths.root.join("envoy/registry.example.toml");
    let render = |probe_config: &str| {
        let probe_config = format!("--probe-config={probe_config}");
        render_ecds(
            &paths,
            [
                OsStr::new("--registry"),
                registry.as_os_str(),
                OsStr::new("--cache-secret-placeholder"),
                OsStr::new("--chain="),
                OsStr::new("--probe-filter=crash-probe=/wasm/crash_probe.wasm"),
                OsStr::new(&probe_config),
                OsStr::new("--out"),
                dir.path().as_os_str(),
            ],
        )
    };
    let out = render(r#"crash-probe={"spin_rounds":20000}"#);
    let ecds = rendered(&out, &dir.path().join("crash-probe.json"));
    let config = &ecds["resources"][0]["typed_config"]["config"];
    assert_eq!(config["configuration"]["value"], r#"{"spin_rounds":20000}"#);
    assert_eq!(config["allow_on_headers_stop_iteration"], true);
    assert!(
        !dir.path().join("llm-gateway.json").exists(),
        "an empty chain renders no module"
    );
    for refused in [
        r#"other={"spin_rounds":1}"#,
        "crash-probe=[1]",
        "crash-probe={",
    ] {
        let out = render(refused);
        assert!(!out.status.success(), "{refused} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--probe-config"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
