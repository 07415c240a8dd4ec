//! The Envoy of the testbed: bootstrap, filter configs delivered by ECDS from
//! files (so a registry change reaches a running Envoy by rewriting them),
//! start-up, and discovery of the ports Envoy bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::TestbedError;
use crate::process::ManagedProcess;

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// One proxy-wasm filter of the chain.
#[derive(Debug, Clone)]
pub struct WasmFilter {
    /// Filter name; also the ECDS resource name and the wasm root id.
    pub name: String,
    pub wasm: PathBuf,
    /// The JSON handed to the filter's `on_configure`.
    pub config: Value,
    /// The filter pauses in request headers and wants the body callbacks
    /// while paused (llm-policy). A filter that pauses only to wait for a
    /// call and has no body callback (admission) must not set it, or the
    /// body would let the request through before the call answers.
    pub reads_body_while_paused: bool,
}

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
    pub filters: Vec<WasmFilter>,
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

/// Envoy's span for the request as a W3C traceparent, in a gateway-owned
/// header (set after tenant-auth strips client copies; admission passes it
/// to ratelimit-service).
fn trace_context_filter() -> Value {
    json!({
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": { "request_mutations": [{ "append": {
                "header": { "key": "x-gateway-traceparent", "value": "00-%TRACE_ID%-%SPAN_ID%-01" },
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
            }}]}
        }
    })
}

/// The connection manager's tracing: OpenTelemetry to the collector, every
/// request sampled, the tenant's attributes on the span (read from the
/// request headers the filters set, when the span ends).
fn tracing_config() -> Value {
    let tag = |tag: &str, header: &str| json!({ "tag": tag, "request_header": { "name": header, "default_value": "" } });
    json!({
        "random_sampling": { "value": 100 },
        "provider": { "name": "envoy.tracers.opentelemetry", "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
            "grpc_service": { "envoy_grpc": { "cluster_name": "otel-collector" }, "timeout": "1s" },
            "service_name": "llm-gateway"
        }},
        "custom_tags": [
            tag("tenant_id", "x-tenant-id"),
            tag("tier", "x-tenant-tier"),
            tag("pool", "x-llm-pool"),
            tag("model", "x-llm-model"),
            tag("request_id", "x-request-id")
        ]
    })
}

/// Envoy's own refusals as OpenAI errors: (response flags or a status, the
/// status to answer, the OpenAI type and code, the message). Replies the
/// filters send are JSON already and match none of these, except 413 and
/// 431, which only describe the same refusal in fewer words.
const LOCAL_REPLIES: &[(LocalReplyMatch, u32, &str, &str, &str)] = &[
    (
        LocalReplyMatch::Status(431),
        431,
        "invalid_request_error",
        "request_headers_too_large",
        "The request headers are too large or too many.",
    ),
    (
        LocalReplyMatch::Status(413),
        413,
        "invalid_request_error",
        "request_too_large",
        "The request body is larger than the gateway accepts.",
    ),
    (
        LocalReplyMatch::Status(408),
        408,
        "invalid_request_error",
        "request_timeout",
        "The request was not received in time.",
    ),
    (
        LocalReplyMatch::Flags(&["DPE"]),
        400,
        "invalid_request_error",
        "invalid_request",
        "The request is not valid HTTP.",
    ),
    (
        LocalReplyMatch::Flags(&["UT"]),
        504,
        "server_error",
        "upstream_timeout",
        "The model pool did not answer in time.",
    ),
    (
        LocalReplyMatch::Flags(&["RL"]),
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        "Rate limit exceeded.",
    ),
    (
        LocalReplyMatch::Flags(&[
            "UH", "UF", "UO", "NC", "URX", "UC", "UR", "LR", "UPE", "OM", "NR",
        ]),
        503,
        "server_error",
        "upstream_unavailable",
        "The model pool is unavailable; retry later.",
    ),
];

/// What a local-reply mapper matches on.
#[derive(Debug, Clone, Copy)]
enum LocalReplyMatch {
    Status(u32),
    Flags(&'static [&'static str]),
}

/// HCM `local_reply_config`: every reply Envoy itself makes (codec errors,
/// limits, timeouts, no upstream) in OpenAI's error shape.
pub fn local_reply_config() -> Value {
    let mappers: Vec<Value> = LOCAL_REPLIES
        .iter()
        .map(|(matcher, status, kind, code, message)| {
            let filter = match matcher {
                LocalReplyMatch::Status(code) => json!({ "status_code_filter": { "comparison": {
                    "op": "EQ", "value": { "default_value": code, "runtime_key": "gateway.local_reply.status" } } } }),
                LocalReplyMatch::Flags(flags) => json!({ "response_flag_filter": { "flags": flags } }),
            };
            json!({
                "filter": filter,
                "status_code": status,
                "body_format_override": { "json_format": { "error": {
                    "message": message, "type": kind, "param": null, "code": code
                } } }
            })
        })
        .collect();
    json!({ "mappers": mappers })
}

/// The plugin's failure policy: a VM that fails (a panic, a trap) is
/// replaced by a fresh one for the next request, after a backoff, instead of
/// answering 503 for every later request on that worker.
pub fn failure_policy() -> Value {
    json!({
        "failure_policy": "FAIL_RELOAD",
        "reload_config": { "backoff": { "base_interval": "0.2s", "max_interval": "5s" } }
    })
}

pub fn cluster_name(pool: &str) -> String {
    format!("pool-{pool}")
}

fn socket(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

fn pool_cluster(pool: &PoolCluster) -> Value {
    let endpoints: Vec<Value> = pool
        .replicas
        .iter()
        .map(|&a| json!({ "endpoint": { "address": socket(a) } }))
        .collect();
    json!({
        "name": cluster_name(&pool.name),
        "type": "STATIC",
        "connect_timeout": "1s",
        // Same prefix key, same replica: that replica holds the prefix in its KV cache.
        "lb_policy": "RING_HASH",
        "load_assignment": { "cluster_name": cluster_name(&pool.name), "endpoints": [{ "lb_endpoints": endpoints }] },
        "circuit_breakers": { "thresholds": [{ "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000 }] }
    })
}

fn routes(layout: &EnvoyLayout) -> Value {
    let hash_policy = json!([{ "header": { "header_name": "x-prefix-key" } }]);
    // Descriptor for Envoy's native ratelimit filter: the authenticated tenant.
    let rate_limits = json!([{ "actions": [{ "request_headers": { "header_name": "x-tenant-id", "descriptor_key": "tenant" } }] }]);
    let mut routes: Vec<Value> = layout
        .pools
        .iter()
        .map(|p| {
            json!({
                "match": { "prefix": "/", "headers": [{ "name": "x-llm-pool", "string_match": { "exact": p.name } }] },
                "route": { "cluster": cluster_name(&p.name), "timeout": "0s", "hash_policy": hash_policy, "rate_limits": rate_limits }
            })
        })
        .collect();
    routes.push(json!({
        "match": { "prefix": "/" },
        "route": { "cluster": cluster_name(&layout.default_pool), "timeout": "0s", "hash_policy": hash_policy, "rate_limits": rate_limits }
    }));
    json!(routes)
}

fn http_filters(layout: &EnvoyLayout, ecds_dir: &Path) -> Value {
    let mut filters: Vec<Value> = Vec::new();
    let has_auth = layout.filters.iter().any(|f| f.name == "tenant-auth");
    if layout.otlp.is_some() && !has_auth {
        filters.push(trace_context_filter());
    }
    for f in &layout.filters {
        filters.push(json!({
                "name": f.name,
                "config_discovery": {
                    "config_source": { "path_config_source": {
                        "path": ecds_path(ecds_dir, &f.name),
                        "watched_directory": { "path": ecds_dir }
                    }},
                    "type_urls": [WASM_TYPE]
                }
        }));
        if f.name == "tenant-auth" && layout.otlp.is_some() {
            filters.push(trace_context_filter());
        }
    }
    if let Some(domain) = &layout.native_ratelimit_domain {
        filters.push(json!({
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
        }));
    }
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    }));
    json!(filters)
}

fn connection_manager(layout: &EnvoyLayout, ecds_dir: &Path, stat_prefix: &str) -> Value {
    let mut manager = json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            // tenant-auth keeps a sane client x-request-id and mints one
            // otherwise; the client gets it back to correlate.
            "preserve_external_request_id": true,
            "always_set_request_id_in_response": true,
            // The id is the client's correlation key: Envoy must never
            // rewrite it to carry a trace decision, and a traced request
            // need not have a UUID for an id (sampling is random).
            "request_id_extension": { "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                "pack_trace_reason": false,
                "use_request_id_for_trace_sampling": false
            }},
            "common_http_protocol_options": {
                // "x_tenant_id" must not pass tenant-auth's stripping and be
                // read as x-tenant-id by a lenient upstream.
                "headers_with_underscores_action": "DROP_HEADER",
                "max_headers_count": 100
            },
            "max_request_headers_kb": 60,
            "request_headers_timeout": "10s",
            "request_timeout": format!("{}s", layout.request_timeout.as_secs_f64()),
            "stream_idle_timeout": "300s",
            "local_reply_config": local_reply_config(),
            "route_config": { "name": "gateway", "virtual_hosts": [{ "name": "gateway", "domains": ["*"], "routes": routes(layout) }] },
            "http_filters": http_filters(layout, ecds_dir),
            "access_log": [{ "name": "envoy.access_loggers.stdout", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": { "text_format_source": { "inline_string":
                    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)%\" %RESPONSE_CODE% %RESPONSE_FLAGS% tenant=%REQ(X-TENANT-ID)% pool=%REQ(X-LLM-POOL)% upstream=%UPSTREAM_HOST% %DURATION%ms rid=%REQ(X-REQUEST-ID)%\n" } }
            }}]
        }
    });
    if layout.otlp.is_some() {
        manager["typed_config"]["tracing"] = tracing_config();
    }
    manager
}

/// The bootstrap for `layout`, with filter configs read from `ecds_dir`.
pub fn bootstrap(layout: &EnvoyLayout, ecds_dir: &Path) -> Value {
    let mut listeners = vec![json!({
        "name": "gateway",
        "address": socket(SocketAddr::from(([127, 0, 0, 1], layout.gateway_port))),
        "per_connection_buffer_limit_bytes": layout.buffer_limit_bytes,
        "filter_chains": [{ "filters": [connection_manager(layout, ecds_dir, "gateway")] }]
    })];
    if let Some(tls) = &layout.mtls {
        listeners.push(json!({
            "name": "gateway_mtls",
            "address": socket(SocketAddr::from(([127, 0, 0, 1], 0))),
            "per_connection_buffer_limit_bytes": layout.buffer_limit_bytes,
            "filter_chains": [{
                "transport_socket": { "name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": true,
                    "common_tls_context": {
                        "tls_certificates": [{ "certificate_chain": { "filename": tls.server_cert }, "private_key": { "filename": tls.server_key } }],
                        "validation_context": { "trusted_ca": { "filename": tls.client_ca } }
                    }
                }},
                "filters": [connection_manager(layout, ecds_dir, "gateway_mtls")]
            }]
        }));
    }
    let mut clusters: Vec<Value> = layout.pools.iter().map(pool_cluster).collect();
    if let Some(addr) = layout.ratelimit {
        clusters.push(json!({
            "name": "ratelimit",
            "type": "STATIC",
            "connect_timeout": "1s",
            // Admit calls wait in the fair queue: far more than Envoy's default
            // 1024 may be open at once on this one HTTP/2 connection.
            "circuit_breakers": { "thresholds": [{ "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000 }] },
            "typed_extension_protocol_options": { "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} }
            }},
            "load_assignment": { "cluster_name": "ratelimit", "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket(addr) } }] }] }
        }));
    }
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
    json!({
        "node": { "id": "testbed", "cluster": "llm-gateway" },
        "admin": { "address": socket(SocketAddr::from(([127, 0, 0, 1], 0))) },
        "static_resources": { "listeners": listeners, "clusters": clusters }
    })
}

fn ecds_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Writes a filter's ECDS file atomically (write + rename): Envoy's watch
/// fires on the rename and never reads a half-written file.
pub fn write_ecds(dir: &Path, filter: &WasmFilter) -> Result<(), TestbedError> {
    let mut plugin = json!({
        "name": filter.name,
        "root_id": filter.name,
        "allow_on_headers_stop_iteration": filter.reads_body_while_paused,
        "configuration": { "@type": "type.googleapis.com/google.protobuf.StringValue", "value": filter.config.to_string() },
        "vm_config": {
            "vm_id": filter.name,
            "runtime": "envoy.wasm.runtime.v8",
            "code": { "local": { "filename": filter.wasm } }
        }
    });
    if let (Some(plugin), Value::Object(policy)) = (plugin.as_object_mut(), failure_policy()) {
        plugin.extend(policy);
    }
    let resource = json!({ "resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": filter.name,
        "typed_config": {
            "@type": WASM_TYPE,
            "config": plugin
        }
    }]});
    let tmp = dir.join(format!(".{}.tmp", filter.name));
    std::fs::write(&tmp, resource.to_string()).map_err(|e| TestbedError::io(&tmp, e))?;
    let path = ecds_path(dir, &filter.name);
    std::fs::rename(&tmp, &path).map_err(|e| TestbedError::io(&path, e))
}

/// A started Envoy and what it bound.
#[derive(Debug)]
pub struct RunningEnvoy {
    pub process: ManagedProcess,
    pub admin: SocketAddr,
    pub gateway: SocketAddr,
    pub gateway_mtls: Option<SocketAddr>,
}

pub fn start(
    envoy_bin: &Path,
    layout: &EnvoyLayout,
    dir: &Path,
) -> Result<RunningEnvoy, TestbedError> {
    let ecds_dir = dir.join("ecds");
    std::fs::create_dir_all(&ecds_dir).map_err(|e| TestbedError::io(&ecds_dir, e))?;
    for filter in &layout.filters {
        write_ecds(&ecds_dir, filter)?;
    }
    let config_path = dir.join("envoy.json");
    let config = serde_json::to_string_pretty(&bootstrap(layout, &ecds_dir)).unwrap_or_default();
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
    let deadline = Instant::now() + Duration::from_secs(60);
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
    Err(process.failed("not ready in 60s (wasm failed to load?)".into()))
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
