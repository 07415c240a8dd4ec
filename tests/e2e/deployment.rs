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
/// `make setup`).
fn run_checks(args: &[&str]) -> Output {
    let paths = Paths::locate().expect("make build first");
    Command::new(&paths.python)
        .arg(paths.root.join("deploy/checks.py"))
        .args(args)
        .output()
        .expect("python runs")
}

/// [`run_checks`] that must pass; its `FAIL:` lines are the assertion message.
fn checks(args: &[&str]) -> String {
    let out = run_checks(args);
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

/// Renders the example registry with `extra` (TOML) appended into `dir`.
fn render_example_with(paths: &Paths, dir: &Path, extra: &str) -> Output {
    let example = std::fs::read_to_string(paths.root.join("envoy/registry.example.toml"))
        .expect("example registry");
    let registry_path = dir.join("registry.toml");
    std::fs::write(&registry_path, format!("{example}\n{extra}")).expect("write registry");
    render_ecds(
        paths,
        [
            OsStr::new("--registry"),
            registry_path.as_os_str(),
            OsStr::new("--cache-secret-placeholder"),
            OsStr::new("--out"),
            dir.as_os_str(),
        ],
    )
}

/// Runs `checks.py COMMAND` on `manifests` (YAML), which it must refuse;
/// its `FAIL:` lines.
fn refused_manifests(command: &str, manifests: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("mistakes.yaml");
    std::fs::write(&file, manifests).expect("write manifests");
    let out = run_checks(&[command, file.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "mistakes passed:\n{stdout}");
    stdout
        .lines()
        .filter(|l| l.starts_with("FAIL:"))
        .map(str::to_owned)
        .collect()
}

/// Each of `expected` is part of one of the `reported` lines.
fn assert_each_reported<S: AsRef<str>>(reported: &[S], expected: &[&str]) {
    let lines: Vec<&str> = reported.iter().map(AsRef::as_ref).collect();
    for named in expected {
        assert!(
            lines.iter().any(|l| l.contains(named)),
            "not reported: {named}\n{}",
            lines.join("\n")
        );
    }
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

/// Every Istio object shipped, checked against Istio's own schemas (the
/// typed models generated from Istio 1.31's CRDs, run by
/// `tools/istio-models`): fields, types and enums, as an API server with
/// strict field validation would.
#[test]
fn the_istio_objects_fit_istios_own_schemas() {
    let out = checks(&["istio-kinds"]);
    for kinds in ["2 DestinationRule", "3 EnvoyFilter", "1 PeerAuthentication"] {
        assert!(out.contains(kinds), "{kinds} not checked:\n{out}");
    }
    assert!(out.contains("fits Istio 1.31's schemas"), "{out}");
}

/// The schema check can fail, and says where: one mistake per object, each
/// named by its object and path; the one valid object (a WasmPlugin with
/// FAIL_RELOAD, which Istio only has from 1.27) passes.
#[test]
fn a_mistyped_istio_object_is_refused_naming_the_field() {
    let mistakes = "\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: enum, namespace: llm-gateway}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: GATEWAY}
    patch: {operation: INSERT_BEFOR, value: {name: x, free: form}}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: field, namespace: llm-gateway}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: GATEWAY, listenr: {portNumber: 8080}}
    patch: {operation: ADD, value: {name: x}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: type, namespace: llm-gateway}
spec:
  host: ratelimit
  trafficPolicy: {connectionPool: {http: {http2MaxRequests: many}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mode, namespace: llm-gateway}
spec: {mtls: {mode: STRICTT}}
---
apiVersion: networking.istio.io/v1
kind: Gatway
metadata: {name: kind, namespace: llm-gateway}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: valid, namespace: llm-gateway}
spec: {url: oci://registry.example.com/llm-gateway:1, failStrategy: FAIL_RELOAD, phase: AUTHN}
";
    let failed = refused_manifests("istio-kinds", mistakes);
    assert_each_reported(
        &failed,
        &[
            "EnvoyFilter/enum: spec.configPatches[0].patch.operation: Input should be",
            "EnvoyFilter/field: spec.configPatches[0].match.listenr: no such field in the schema",
            "DestinationRule/type: spec.trafficPolicy.connectionPool.http.http2MaxRequests: Input should be a valid integer",
            "PeerAuthentication/mode: spec.mtls.mode: Input should be",
            "Gatway/kind: no Gatway in networking.istio.io/v1",
        ],
    );
    assert_eq!(
        failed.len(),
        5,
        "one line per mistake:\n{}",
        failed.join("\n")
    );
    assert!(
        !failed.iter().any(|l| l.contains("WasmPlugin/valid")),
        "{}",
        failed.join("\n")
    );
}

/// Every Kueue and Gateway API object shipped, checked against its kind's
/// own type (generated from Kueue's v1beta2 and Gateway API's v1 CRDs, run by
/// `tools/crd-check`): fields, types and enums.
#[test]
fn the_kueue_and_gateway_api_objects_fit_their_crds() {
    let out = checks(&["crd-kinds"]);
    for kinds in [
        "1 ClusterQueue",
        "1 Gateway",
        "1 HTTPRoute",
        "1 LocalQueue",
        "1 ResourceFlavor",
    ] {
        assert!(out.contains(kinds), "{kinds} not checked:\n{out}");
    }
}

/// The CRD check can fail, and says where: a version the cluster does not
/// serve (Kueue's deprecated v1beta1), a wrong enum, a field v1beta2 renamed,
/// a misspelt field deep in a quota or a route, a wrong type, and a kind the
/// group lacks are each named; the valid objects pass.
#[test]
fn a_mistyped_kueue_or_gateway_api_object_is_refused_naming_the_field() {
    let mistakes = "\
apiVersion: kueue.x-k8s.io/v1beta1
kind: LocalQueue
metadata: {name: old, namespace: llm-gateway}
spec: {clusterQueue: llm-serving}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: {name: enum}
spec: {queueingStrategy: BestEffortFIFOO}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: {name: renamed}
spec: {cohort: gpus}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueue
metadata: {name: deep}
spec:
  resourceGroups:
  - coveredResources: [cpu]
    flavors:
    - name: gpu-inference
      resources: [{name: cpu, nominalQuota: 40, borrowingLimt: 8}]
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: ClusterQueu
metadata: {name: kind}
---
apiVersion: kueue.x-k8s.io/v1beta2
kind: LocalQueue
metadata: {name: valid, namespace: llm-gateway}
spec: {clusterQueue: llm-serving}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: type, namespace: llm-gateway}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: eighty, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: field, namespace: llm-gateway}
spec:
  parentRefs: [{name: llm-gateway}]
  rules: [{backendRefs: [{name: vllm-latency-lb, prot: 8000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: llm-gateway}
spec:
  parentRefs: [{name: llm-gateway}]
  rules: [{backendRefs: [{name: vllm-latency-lb, port: 8000}]}]
";
    let failed = refused_manifests("crd-kinds", mistakes);
    assert_each_reported(
        &failed,
        &[
            "LocalQueue/old: kueue.x-k8s.io/v1beta1: the version served is kueue.x-k8s.io/v1beta2",
            "ClusterQueue/enum: spec.queueingStrategy: unknown variant `BestEffortFIFOO`",
            "ClusterQueue/renamed: spec.cohort: no such field in the schema",
            "ClusterQueue/deep: spec.resourceGroups[0].flavors[0].resources[0].borrowingLimt: no such field",
            "ClusterQueu/kind: no ClusterQueu in kueue.x-k8s.io/v1beta2",
            "Gateway/type: spec.listeners[0].port: invalid type",
            "HTTPRoute/field: spec.rules[0].backendRefs[0].prot: no such field",
        ],
    );
    assert_eq!(
        failed.len(),
        7,
        "one line per mistake:\n{}",
        failed.join("\n")
    );
}

/// An unquoted TOML datetime loads in Python but the Rust registry refuses
/// it: the renderer refuses it too, naming where it is, and writes nothing.
#[test]
fn the_renderer_names_an_unquoted_datetime() {
    let paths = Paths::locate().expect("make build first");
    let dir = tempfile::tempdir().expect("temp dir");
    let example = std::fs::read_to_string(paths.root.join("envoy/registry.example.toml"))
        .expect("example registry");
    let tenants = example.matches("[[tenants]]").count();
    let extra = format!(
        "[[tenants]]\nid = \"dated\"\ntier = \"standard\"\nmodels = [\"*\"]\n\
         api_keys = [{{ id = \"d1\", sha256 = \"{}\", created_at = 2026-01-01T00:00:00Z }}]\n",
        "cd".repeat(32)
    );
    let out = render_example_with(&paths, dir.path(), &extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rendered: {stderr}");
    assert!(
        stderr.contains(&format!(
            "tenants[{tenants}].api_keys[0].created_at: quote the instant"
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("llm-gateway.json").exists());
}

/// The module's config carries the registry once, without what no phase
/// reads: a tenant's limits and weight are ratelimit-service's, and with a
/// registry of real size they were bytes every VM of every worker parsed.
#[test]
fn the_module_gets_only_what_its_phases_read() {
    let paths = Paths::locate().expect("make build first");
    let dir = tempfile::tempdir().expect("temp dir");
    let extra = format!(
        "[[tenants]]\nid = \"metered\"\ntier = \"standard\"\nmodels = [\"*\"]\n\
         weight = 2.0\nlimits = {{ rpm = 10 }}\n\
         model_limits = {{ \"llama-3.1-8b-instruct\" = {{ tpm = 1000 }} }}\n\
         api_keys = [{{ id = \"m1\", sha256 = \"{}\", created_at = \"2026-01-01T00:00:00Z\" }}]\n",
        "ab".repeat(32)
    );
    let out = render_example_with(&paths, dir.path(), &extra);
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
