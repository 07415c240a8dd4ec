//! The deployment forms against their one source (`envoy/gateway.yaml` and
//! `envoy/render-ecds.py`; the testbed every other test starts runs both):
//! the committed generated files are what the renderer makes of their
//! registries, and the Istio gateway's chain, built as istiod builds it
//! with the built modules, is the gateway's order and loads in Envoy.

use std::process::Command;

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
