//! The Envoy of the testbed: the shipped bootstrap, `envoy/gateway.yaml`,
//! bound to loopback, with the filters' ECDS files written by the shipped
//! renderer, `envoy/render-ecds.py`. What the tests and benchmarks run is
//! what a deployment runs; [`bootstrap`] changes only what a testbed on one
//! host must (addresses, files, the chain a test asks for) and adds only the
//! optional parts the shipped file carries as comments (traces, Envoy's
//! native rate limit filter). `bootstrap_keeps_the_shipped_settings` fails
//! if that list grows unnoticed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::TestbedError;
use crate::process::ManagedProcess;

/// Certificates of the mTLS listener.
#[derive(Debug, Clone)]
pub struct MtlsFiles {
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// CA that client certificates must chain to.
    pub client_ca: PathBuf,
}

/// A GPU pool as Envoy sees it: one cluster, hash-balanced on `x-prefix-key`.
#[derive(Debug, Clone)]
pub struct PoolCluster {
    pub name: String,
    pub replicas: Vec<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct EnvoyLayout {
    /// The wasm filters rendered into the ECDS directory, in chain order
    /// (names as `render-ecds.py` printed them). Shipped filters keep their
    /// place in the shipped chain; any other (a test's probe) goes first.
    pub filters: Vec<String>,
    /// Whether the policy (filter or phase) runs: it names every request's
    /// pool, and a request without one is refused as shipped.
    pub routes_by_policy: bool,
    pub pools: Vec<PoolCluster>,
    /// Pool used when a request carries no `x-llm-pool` (only without llm-policy).
    pub default_pool: String,
    /// ratelimit-service gRPC address (cluster `ratelimit`).
    pub ratelimit: Option<SocketAddr>,
    pub mtls: Option<MtlsFiles>,
    /// Envoy's native ratelimit filter against the `ratelimit` cluster.
    pub native_ratelimit_domain: Option<String>,
    pub gateway_port: u16,
    pub concurrency: u32,
    /// Listener buffer limit: must exceed the registry's `max_body_bytes`, or
    /// Envoy answers its own 413 before llm-policy sees the body.
    pub buffer_limit_bytes: u64,
    /// Time to receive a whole request (headers, body, admission wait):
    /// a body trickled slower than this is refused with 408.
    pub request_timeout: Duration,
    /// OTLP/gRPC collector: Envoy traces every request there (cluster
    /// `otel-collector`) and hands its span to the filters.
    pub otlp: Option<SocketAddr>,
}

impl EnvoyLayout {
    fn runs(&self, filter: &str) -> bool {
        self.filters.iter().any(|f| f == filter)
    }
}

/// The shipped bootstrap (the file the Envoy image bakes in).
pub fn shipped_bootstrap(root: &Path) -> Result<String, TestbedError> {
    let path = root.join("envoy/gateway.yaml");
    std::fs::read_to_string(&path).map_err(|e| TestbedError::io(&path, e))
}

fn shipped_error(what: impl std::fmt::Display) -> TestbedError {
    TestbedError::Other(format!("envoy/gateway.yaml: {what}"))
}

/// The value at `pointer`, which the shipped file must have.
fn at<'a>(value: &'a mut Value, pointer: &str) -> Result<&'a mut Value, TestbedError> {
    value
        .pointer_mut(pointer)
        .ok_or_else(|| shipped_error(format!("no {pointer}")))
}

fn list<'a>(value: &'a mut Value, pointer: &str) -> Result<&'a mut Vec<Value>, TestbedError> {
    at(value, pointer)?
        .as_array_mut()
        .ok_or_else(|| shipped_error(format!("{pointer} is not a list")))
}

fn name_of(value: &Value) -> &str {
    value["name"].as_str().unwrap_or_default()
}

/// The connection manager's tracing: the block envoy/gateway.yaml carries
/// commented out (`# tracing:` up to the first line that is not a comment:
/// OpenTelemetry to the collector, the tenant's attributes on the span),
/// sampling every request instead of a tenth.
fn shipped_tracing(shipped: &str) -> Result<Value, TestbedError> {
    let block: String = shipped
        .lines()
        .skip_while(|line| line.trim() != "# tracing:")
        .take_while(|line| line.trim_start().starts_with('#'))
        .map(|line| {
            let text = line.trim_start().trim_start_matches('#');
            format!("{}\n", text.strip_prefix(' ').unwrap_or(text))
        })
        .collect();
    let commented: Value = serde_norway::from_str(&block)
        .map_err(|e| shipped_error(format!("the commented tracing block: {e}")))?;
    let mut tracing = commented
        .get("tracing")
        .cloned()
        .ok_or_else(|| shipped_error("no commented `# tracing:` block"))?;
    *at(&mut tracing, "/random_sampling/value")? = json!(100);
    Ok(tracing)
}

pub fn cluster_name(pool: &str) -> String {
    format!("pool-{pool}")
}

fn socket(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

fn loopback(port: u16) -> Value {
    socket(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Points a shipped cluster at loopback addresses instead of DNS names.
fn point_at(cluster: &mut Value, addrs: &[SocketAddr]) -> Result<(), TestbedError> {
    let name = name_of(cluster).to_owned();
    let object = cluster
        .as_object_mut()
        .ok_or_else(|| shipped_error(format!("cluster {name} is not a map")))?;
    object.insert("type".into(), json!("STATIC"));
    object.remove("dns_lookup_family");
    let endpoints: Vec<Value> = addrs
        .iter()
        .map(|&a| json!({ "endpoint": { "address": socket(a) } }))
        .collect();
    object.insert(
        "load_assignment".into(),
        json!({ "cluster_name": name, "endpoints": [{ "lb_endpoints": endpoints }] }),
    );
    Ok(())
}

/// The shipped routes for the layout's pools: the shipped pool route for
/// each, then the shipped refusal of a request no filter gave a pool, or,
/// in a chain without the policy (nothing names a pool there), the
/// default pool.
fn routes(shipped: &[Value], layout: &EnvoyLayout) -> Result<Vec<Value>, TestbedError> {
    let by_pool = shipped
        .iter()
        .find(|r| r.pointer("/match/headers/0/name") == Some(&json!("x-llm-pool")))
        .ok_or_else(|| shipped_error("no route on x-llm-pool"))?;
    let refusal = shipped
        .iter()
        .find(|r| r.get("direct_response").is_some() && r.pointer("/match/headers").is_none())
        .ok_or_else(|| shipped_error("no refusal route"))?;
    let mut routes = Vec::new();
    for pool in &layout.pools {
        let mut route = by_pool.clone();
        *at(&mut route, "/match/headers/0/string_match")? = json!({ "exact": pool.name });
        *at(&mut route, "/route/cluster")? = json!(cluster_name(&pool.name));
        routes.push(route);
    }
    if layout.routes_by_policy {
        routes.push(refusal.clone());
    } else {
        let mut route = by_pool.clone();
        route["match"] = json!({ "prefix": "/" });
        *at(&mut route, "/route/cluster")? = json!(cluster_name(&layout.default_pool));
        routes.push(route);
    }
    if layout.native_ratelimit_domain.is_some() {
        // Descriptor for Envoy's native ratelimit filter: the authenticated tenant.
        let rate_limits = json!([{ "actions": [{ "request_headers": { "header_name": "x-tenant-id", "descriptor_key": "tenant" } }] }]);
        for route in routes.iter_mut().filter(|r| r.get("route").is_some()) {
            route["route"]["rate_limits"] = rate_limits.clone();
        }
    }
    Ok(routes)
}

/// The shipped chain's module (`render-ecds.py`).
const GATEWAY_MODULE: &str = "llm-gateway";

/// The shipped HTTP filters with the wasm filters the layout renders: the
/// module at its shipped place (left out when no phase runs); a filter the
/// gateway does not know (a test's probe) first; Envoy's native rate limit
/// filter (commented out in the shipped file) before the router.
fn http_filters(
    shipped: &[Value],
    layout: &EnvoyLayout,
    ecds_dir: &Path,
) -> Result<Vec<Value>, TestbedError> {
    let ecds = |name: &str| {
        json!({
            "name": name,
            "config_discovery": {
                "config_source": { "path_config_source": {
                    "path": ecds_dir.join(format!("{name}.json")),
                    "watched_directory": { "path": ecds_dir }
                }},
                "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
            }
        })
    };
    let mut filters: Vec<Value> = layout
        .filters
        .iter()
        .filter(|name| name.as_str() != GATEWAY_MODULE)
        .map(|name| ecds(name))
        .collect();
    for filter in shipped {
        match name_of(filter) {
            GATEWAY_MODULE => {
                if layout.runs(GATEWAY_MODULE) {
                    filters.push(ecds(GATEWAY_MODULE));
                }
            }
            _ => filters.push(filter.clone()),
        }
    }
    if let Some(domain) = &layout.native_ratelimit_domain {
        let router = filters
            .iter()
            .position(|f| name_of(f) == "envoy.filters.http.router")
            .ok_or_else(|| shipped_error("no router"))?;
        filters.insert(
            router,
            json!({
                "name": "envoy.filters.http.ratelimit",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                    "domain": domain,
                    "failure_mode_deny": false,
                    // ratelimit-service returns x-ratelimit-* itself; Envoy's own
                    // DRAFT_VERSION_03 headers would duplicate every one of them.
                    "rate_limit_service": {
                        "grpc_service": { "envoy_grpc": { "cluster_name": "ratelimit" }, "timeout": "0.5s" },
                        "transport_api_version": "V3"
                    }
                }
            }),
        );
    }
    Ok(filters)
}

/// A gateway listener's connection manager, for the layout; `tracing`
/// when the layout traces.
fn connection_manager(
    manager: &mut Value,
    layout: &EnvoyLayout,
    ecds_dir: &Path,
    tracing: Option<&Value>,
) -> Result<(), TestbedError> {
    manager["request_timeout"] = json!(format!("{}s", layout.request_timeout.as_secs_f64()));
    if let Some(tracing) = tracing {
        manager["tracing"] = tracing.clone();
    }
    let shipped_routes = list(manager, "/route_config/virtual_hosts/0/routes")?.clone();
    *list(manager, "/route_config/virtual_hosts/0/routes")? = routes(&shipped_routes, layout)?;
    let shipped_filters = list(manager, "/http_filters")?.clone();
    *list(manager, "/http_filters")? = http_filters(&shipped_filters, layout, ecds_dir)?;
    Ok(())
}

fn listeners(
    listeners: &mut Vec<Value>,
    layout: &EnvoyLayout,
    ecds_dir: &Path,
    tracing: Option<&Value>,
) -> Result<(), TestbedError> {
    if layout.mtls.is_none() {
        listeners.retain(|l| name_of(l) != "gateway_mtls");
    }
    for listener in listeners.iter_mut() {
        let name = name_of(listener).to_owned();
        let port = if name == "gateway" {
            layout.gateway_port
        } else {
            0
        };
        listener["address"] = loopback(port);
        if name == "ops" {
            continue;
        }
        listener["per_connection_buffer_limit_bytes"] = json!(layout.buffer_limit_bytes);
        let chain = at(listener, "/filter_chains/0")?;
        if let Some(tls) = &layout.mtls
            && chain.get("transport_socket").is_some()
        {
            let context = at(chain, "/transport_socket/typed_config/common_tls_context")?;
            context["tls_certificates"] = json!([{
                "certificate_chain": { "filename": tls.server_cert },
                "private_key": { "filename": tls.server_key }
            }]);
            context["validation_context"]["trusted_ca"] = json!({ "filename": tls.client_ca });
        }
        connection_manager(
            at(chain, "/filters/0/typed_config")?,
            layout,
            ecds_dir,
            tracing,
        )?;
    }
    Ok(())
}

fn clusters(
    clusters: &mut Vec<Value>,
    layout: &EnvoyLayout,
    admin: SocketAddr,
) -> Result<(), TestbedError> {
    let pool = clusters
        .iter()
        .find(|c| name_of(c).starts_with("pool-"))
        .cloned()
        .ok_or_else(|| shipped_error("no pool cluster"))?;
    clusters.retain(|c| !name_of(c).starts_with("pool-"));
    for (i, spec) in layout.pools.iter().enumerate() {
        let mut cluster = pool.clone();
        cluster["name"] = json!(cluster_name(&spec.name));
        point_at(&mut cluster, &spec.replicas)?;
        clusters.insert(i, cluster);
    }
    match layout.ratelimit {
        Some(addr) => {
            let ratelimit = clusters
                .iter_mut()
                .find(|c| name_of(c) == "ratelimit")
                .ok_or_else(|| shipped_error("no ratelimit cluster"))?;
            point_at(ratelimit, &[addr])?;
        }
        None => clusters.retain(|c| name_of(c) != "ratelimit"),
    }
    let admin_cluster = clusters
        .iter_mut()
        .find(|c| name_of(c) == "envoy_admin")
        .ok_or_else(|| shipped_error("no envoy_admin cluster"))?;
    point_at(admin_cluster, &[admin])?;
    if let Some(addr) = layout.otlp {
        clusters.push(json!({
            "name": "otel-collector",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": { "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} }
            }},
            "load_assignment": { "cluster_name": "otel-collector", "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket(addr) } }] }] }
        }));
    }
    Ok(())
}

/// The shipped bootstrap (`shipped`, the text of envoy/gateway.yaml) for
/// `layout`, with filter configs read from `ecds_dir` and the admin API on
/// `admin`.
pub fn bootstrap(
    shipped: &str,
    layout: &EnvoyLayout,
    ecds_dir: &Path,
    admin: SocketAddr,
) -> Result<Value, TestbedError> {
    let mut config: Value = serde_norway::from_str(shipped).map_err(shipped_error)?;
    *at(&mut config, "/node/id")? = json!("testbed");
    *at(&mut config, "/admin/address")? = socket(admin);
    // Derived once from the shipped file, for every gateway listener.
    let tracing = layout.otlp.map(|_| shipped_tracing(shipped)).transpose()?;
    listeners(
        list(&mut config, "/static_resources/listeners")?,
        layout,
        ecds_dir,
        tracing.as_ref(),
    )?;
    clusters(
        list(&mut config, "/static_resources/clusters")?,
        layout,
        admin,
    )?;
    Ok(config)
}

/// A started Envoy and what it bound.
#[derive(Debug)]
pub struct RunningEnvoy {
    pub process: ManagedProcess,
    pub admin: SocketAddr,
    pub gateway: SocketAddr,
    pub gateway_mtls: Option<SocketAddr>,
}

/// Starts Envoy on the shipped bootstrap for `layout`; the filters' ECDS
/// files must already be in `ecds_dir` (the listener serves only once
/// every filter has its config).
pub fn start(
    envoy_bin: &Path,
    shipped: &str,
    layout: &EnvoyLayout,
    dir: &Path,
    ecds_dir: &Path,
) -> Result<RunningEnvoy, TestbedError> {
    // The ops listener reaches the admin API through a cluster: the admin
    // port must be known before Envoy starts.
    let admin_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| TestbedError::io(Path::new("127.0.0.1:0"), e))?;
    let config_path = dir.join("envoy.json");
    let config = serde_json::to_string_pretty(&bootstrap(shipped, layout, ecds_dir, admin_addr)?)
        .map_err(|e| TestbedError::Other(format!("envoy.json: {e}")))?;
    std::fs::write(&config_path, config).map_err(|e| TestbedError::io(&config_path, e))?;
    let admin_path = dir.join("envoy-admin.addr");
    let _ = std::fs::remove_file(&admin_path);
    let mut command = Command::new(envoy_bin);
    command
        .arg("-c")
        .arg(&config_path)
        .arg("--admin-address-path")
        .arg(&admin_path)
        .args(["--concurrency", &layout.concurrency.to_string()])
        .args(["--log-level", "warn", "--component-log-level", "wasm:info"])
        // Several testbeds may run at once (parallel tests): no shared-memory hot restart.
        .arg("--disable-hot-restart");
    let mut process = ManagedProcess::spawn("envoy", command, dir)?;
    let admin = wait_admin(&mut process, &admin_path)?;
    wait_ready(&mut process, admin)?;
    let (gateway, gateway_mtls) = listener_ports(&process, admin)?;
    Ok(RunningEnvoy {
        process,
        admin,
        gateway,
        gateway_mtls,
    })
}

fn wait_admin(process: &mut ManagedProcess, path: &Path) -> Result<SocketAddr, TestbedError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(addr) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Ok(addr);
        }
        if !process.is_running() {
            return Err(process.failed("exited during start-up".into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(process.failed("admin address never written".into()))
}

fn wait_ready(process: &mut ManagedProcess, admin: SocketAddr) -> Result<(), TestbedError> {
    let client = crate::http_client();
    // Every VM of every worker configures its filter first: with a registry
    // of real size that is minutes (bench/README.md, registry-scale).
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let ready = client
            .get(format!("http://{admin}/ready"))
            .send()
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if !process.is_running() {
            return Err(process.failed("exited before ready".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(process.failed("not ready in 600 s (wasm failed to load?)".into()))
}

fn listener_ports(
    process: &ManagedProcess,
    admin: SocketAddr,
) -> Result<(SocketAddr, Option<SocketAddr>), TestbedError> {
    let listeners: Value = crate::http_client()
        .get(format!("http://{admin}/listeners?format=json"))
        .send()
        .and_then(|r| r.json())
        .map_err(|e| process.failed(format!("admin /listeners: {e}")))?;
    let find = |name: &str| -> Option<SocketAddr> {
        listeners["listener_statuses"]
            .as_array()?
            .iter()
            .find_map(|l| {
                if l["name"] != name {
                    return None;
                }
                let s = &l["local_address"]["socket_address"];
                format!("{}:{}", s["address"].as_str()?, s["port_value"].as_u64()?)
                    .parse()
                    .ok()
            })
    };
    let gateway = find("gateway").ok_or_else(|| process.failed("no gateway listener".into()))?;
    Ok((gateway, find("gateway_mtls")))
}

/// Sum of an Envoy counter over all stats whose name contains `needle`.
pub fn counter(admin: SocketAddr, needle: &str) -> u64 {
    let Ok(text) = crate::http_client()
        .get(format!("http://{admin}/stats?filter={needle}"))
        .send()
        .and_then(|r| r.text())
    else {
        return 0;
    };
    text.lines()
        .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        shipped_bootstrap(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap()
    }

    /// The layout of a full gateway with the shipped pools and limits.
    fn full_layout() -> EnvoyLayout {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        EnvoyLayout {
            filters: vec![GATEWAY_MODULE.to_owned()],
            routes_by_policy: true,
            pools: ["latency", "throughput"]
                .iter()
                .zip(1..)
                .map(|(name, port)| PoolCluster {
                    name: (*name).into(),
                    replicas: vec![addr(port), addr(port + 10)],
                })
                .collect(),
            default_pool: "throughput".into(),
            ratelimit: Some(addr(20)),
            mtls: Some(MtlsFiles {
                server_cert: "/t/cert".into(),
                server_key: "/t/key".into(),
                client_ca: "/t/ca".into(),
            }),
            native_ratelimit_domain: None,
            gateway_port: 0,
            concurrency: 2,
            buffer_limit_bytes: 5_242_880,
            request_timeout: Duration::from_secs(120),
            otlp: None,
        }
    }

    fn render(layout: &EnvoyLayout) -> Value {
        bootstrap(
            &shipped(),
            layout,
            Path::new("/t/ecds"),
            SocketAddr::from(([127, 0, 0, 1], 9)),
        )
        .unwrap()
    }

    /// Blanks what a testbed on one host must change: addresses, files,
    /// how a cluster finds its endpoints, the node's name.
    fn blank_local(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    match key.as_str() {
                        "address" | "filename" | "path_config_source" | "load_assignment" => {
                            *item = Value::Null
                        }
                        _ => blank_local(item),
                    }
                }
                map.remove("dns_lookup_family");
            }
            Value::Array(items) => items.iter_mut().for_each(blank_local),
            _ => {}
        }
    }

    fn blanked(mut config: Value) -> Value {
        config["node"]["id"] = Value::Null;
        for cluster in config["static_resources"]["clusters"]
            .as_array_mut()
            .unwrap()
        {
            cluster["type"] = Value::Null;
        }
        blank_local(&mut config);
        config
    }

    /// The drift check: with the whole chain and the shipped pools, the
    /// testbed runs envoy/gateway.yaml itself; only addresses and files
    /// differ. A setting added to the testbed alone, or shipped without
    /// reaching the tests, fails here.
    #[test]
    fn bootstrap_keeps_the_shipped_settings() {
        let shipped: Value = serde_norway::from_str(&shipped()).unwrap();
        assert_eq!(blanked(render(&full_layout())), blanked(shipped));
    }

    /// The tracing the testbed turns on is the block envoy/gateway.yaml
    /// carries commented out, sampling every request instead of a tenth.
    #[test]
    fn tracing_is_the_shipped_commented_block() {
        let shipped = shipped();
        let tracing = shipped_tracing(&shipped).unwrap();
        assert_eq!(tracing["random_sampling"]["value"], json!(100));
        assert!(shipped.contains("#   random_sampling: { value: 10 }"));
        assert_eq!(
            tracing["provider"]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"],
            json!("otel-collector")
        );
        let tags: Vec<&str> = tracing["custom_tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tag"].as_str().unwrap())
            .collect();
        assert_eq!(tags, ["tenant_id", "tier", "pool", "model", "request_id"]);
        // Without the block, the testbed says so instead of tracing nothing.
        assert!(shipped_tracing("admin: {}\n").is_err());
    }

    fn filter_names(config: &Value) -> Vec<String> {
        config
            .pointer(
                "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
            )
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .map(|f| name_of(f).to_owned())
            .collect()
    }

    #[test]
    fn bootstrap_binds_loopback_and_reads_the_testbed_files() {
        let config = render(&full_layout());
        let gateway = &config["static_resources"]["listeners"][0];
        assert_eq!(gateway["address"], loopback(0));
        let filters = &gateway["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
        assert_eq!(
            filters[1]["config_discovery"]["config_source"]["path_config_source"]["path"],
            json!("/t/ecds/llm-gateway.json")
        );
        let clusters = &config["static_resources"]["clusters"];
        assert_eq!(clusters[0]["name"], json!("pool-latency"));
        assert_eq!(clusters[0]["type"], json!("STATIC"));
        assert_eq!(
            clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][1]["endpoint"]["address"],
            loopback(11)
        );
        // The shipped pool's health checks and ring hash come along.
        assert_eq!(clusters[0]["lb_policy"], json!("RING_HASH"));
        assert!(clusters[0]["health_checks"].is_array());
    }

    /// A partial chain (the benchmarks' and some tests'): a probe goes
    /// first, and without the policy the default pool takes what no filter
    /// routed.
    #[test]
    fn bootstrap_of_a_partial_chain() {
        let layout = EnvoyLayout {
            filters: vec!["crash-probe".into(), GATEWAY_MODULE.into()],
            routes_by_policy: false,
            mtls: None,
            native_ratelimit_domain: Some("d".into()),
            otlp: Some(SocketAddr::from(([127, 0, 0, 1], 30))),
            ..full_layout()
        };
        let config = render(&layout);
        assert_eq!(
            filter_names(&config),
            [
                "crash-probe",
                "envoy.filters.http.header_mutation",
                GATEWAY_MODULE,
                "envoy.filters.http.ratelimit",
                "envoy.filters.http.router"
            ]
        );
        let listeners: Vec<&str> = config["static_resources"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(name_of)
            .collect();
        assert_eq!(listeners, ["gateway", "ops"]);
        let manager = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let routes = manager["route_config"]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap();
        let last = routes.last().unwrap();
        assert_eq!(last["match"], json!({ "prefix": "/" }));
        assert_eq!(last["route"]["cluster"], json!("pool-throughput"));
        assert!(last["route"]["rate_limits"].is_array());
        assert_eq!(
            manager["tracing"]["provider"]["name"],
            json!("envoy.tracers.opentelemetry")
        );
        let clusters: Vec<&str> = config["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(name_of)
            .collect();
        assert!(clusters.contains(&"otel-collector"), "{clusters:?}");
    }

    /// With the policy, a request no filter routed is refused as shipped.
    #[test]
    fn bootstrap_with_policy_keeps_the_no_pool_refusal() {
        let config = render(&full_layout());
        let routes = config
            .pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes")
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(
            routes.last().unwrap()["direct_response"]["status"],
            json!(503)
        );
        let wasm: Vec<String> = filter_names(&config)
            .into_iter()
            .filter(|name| !name.starts_with("envoy."))
            .collect();
        assert_eq!(wasm, [GATEWAY_MODULE]);
    }
}
