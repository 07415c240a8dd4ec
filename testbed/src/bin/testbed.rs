//! `make run`: the whole gateway on this machine, in the foreground.
//!
//! Mints one demo API key per tenant of the registry, starts mock vLLM pools,
//! ratelimit-service (memory mode) and Envoy with the filters, writes what it
//! set up to `<dir>/env` and waits for Ctrl-C, then stops everything.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc;

use rand::RngCore;
use tenant_registry::{ModelKind, Registry};
use testbed::tls::TestCa;
use testbed::vllm::{VllmOptions, VllmServer};
use testbed::{Paths, PoolSpec, Testbed, TestbedConfig};

/// The pools of the demo registry.
const POOLS: [&str; 2] = ["latency", "throughput"];

struct Args {
    registry: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Start one real vLLM (CPU) and use it as every pool's replica.
    vllm_cpu: bool,
    /// `POOL=HOST:PORT[,HOST:PORT]`: running servers to use as a pool's
    /// replicas instead of mocks.
    external: Vec<(String, Vec<SocketAddr>)>,
}

fn parse_external(value: &str) -> Result<(String, Vec<SocketAddr>), String> {
    let (pool, list) = value.split_once('=').ok_or(format!(
        "--external {value}: expected POOL=HOST:PORT[,HOST:PORT]"
    ))?;
    let mut addrs = Vec::new();
    for item in list.split(',').filter(|s| !s.is_empty()) {
        let item = item.trim_start_matches("http://").trim_end_matches('/');
        let resolved = item
            .to_socket_addrs()
            .map_err(|e| format!("--external {pool}: {item}: {e}"))?
            .next()
            .ok_or(format!("--external {pool}: {item} resolves to nothing"))?;
        addrs.push(resolved);
    }
    if addrs.is_empty() {
        return Err(format!("--external {pool}: no replica given"));
    }
    Ok((pool.to_owned(), addrs))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        registry: PathBuf::from("testbed/demo-registry.toml"),
        dir: PathBuf::from(".testbed"),
        port: 8080,
        vllm_cpu: false,
        external: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--registry" => args.registry = value()?.into(),
            "--dir" => args.dir = value()?.into(),
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--vllm-cpu" => args.vllm_cpu = true,
            "--external" => args.external.push(parse_external(&value()?)?),
            "-h" | "--help" => {
                println!(
                    "usage: testbed [--registry FILE] [--dir DIR] [--port PORT (0 = any)]\n\
                     \x20              [--vllm-cpu] [--external POOL=HOST:PORT[,HOST:PORT]]...\n\n\
                     --vllm-cpu   one real vLLM on CPU (tools/vllm) serving the registry's chat\n\
                     \x20            models under their names, as every pool's replica\n\
                     --external   running vLLM servers as a pool's replicas instead of mocks"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// `prefix` + 64 hex characters (32 random bytes).
fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Adds a freshly minted demo key to every tenant; returns (tenant, key).
/// The text is edited in place (toml_edit): re-serializing a large registry
/// with `toml` takes minutes (bench/README.md, registry-scale).
fn mint_demo_keys(registry: &str) -> Result<(String, Vec<(String, String)>), String> {
    use toml_edit::{Array, DocumentMut, InlineTable, Item, TableLike, Value};
    let mut doc: DocumentMut = registry.parse().map_err(|e| format!("registry: {e}"))?;
    let mut keys = Vec::new();
    let mut add_key = |tenant: &mut dyn TableLike| {
        let Some(id) = tenant.get("id").and_then(Item::as_str).map(str::to_owned) else {
            return;
        };
        let key = random_token("sk-demo-");
        let digest = tenant_registry::api_key_digest_hex(&key);
        let mut entry = InlineTable::new();
        entry.insert("id", "testbed-demo".into());
        entry.insert("sha256", digest.into());
        if tenant.get("api_keys").is_none() {
            tenant.insert("api_keys", toml_edit::value(Array::new()));
        }
        // The key list keeps its form: an inline array or `[[tenants.api_keys]]`.
        match tenant.get_mut("api_keys") {
            Some(Item::ArrayOfTables(list)) => list.push(entry.into_table()),
            Some(Item::Value(Value::Array(list))) => list.push(entry),
            _ => return,
        }
        keys.push((id, key));
    };
    match doc.get_mut("tenants") {
        Some(Item::ArrayOfTables(tenants)) => {
            for tenant in tenants.iter_mut() {
                add_key(tenant);
            }
        }
        Some(Item::Value(Value::Array(tenants))) => {
            for tenant in tenants.iter_mut() {
                if let Value::InlineTable(tenant) = tenant {
                    add_key(tenant);
                }
            }
        }
        _ => {}
    }
    Ok((doc.to_string(), keys))
}

fn env_name(tenant: &str) -> String {
    tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let text = std::fs::read_to_string(&args.registry)
        .map_err(|e| format!("{}: {e}", args.registry.display()))?;
    let (registry, keys) = mint_demo_keys(&text)?;
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let dir = args.dir.canonicalize().map_err(|e| e.to_string())?;
    let ca = TestCa::create(&dir.join("tls"), "testbed client CA").map_err(|e| e.to_string())?;
    let acme_cert = ca
        .client("acme-client", "spiffe://testbed.local/ns/acme/sa/app")
        .map_err(|e| e.to_string())?;
    let vllm = if args.vllm_cpu {
        eprintln!("starting vLLM on CPU (first run installs it; see tools/vllm/README.md) ...");
        Some(start_vllm(&registry, &dir)?)
    } else {
        None
    };
    let mut config = TestbedConfig::new(registry);
    if let Some(server) = &vllm {
        config.pools = POOLS
            .iter()
            .map(|pool| PoolSpec::external(pool, vec![server.addr]))
            .collect();
    }
    for (pool, addrs) in &args.external {
        config.pools.retain(|p| &p.name != pool);
        config.pools.push(PoolSpec::external(pool, addrs.clone()));
    }
    config.run_dir = Some(dir.clone());
    config.gateway_port = args.port;
    config.admin_token = random_token("adm-");
    config.cache_secret = random_token("");
    config.mtls = Some(ca.listener_files().map_err(|e| e.to_string())?);
    eprintln!("starting mock pools, ratelimit-service and Envoy ...");
    let testbed = Testbed::start(config).map_err(|e| e.to_string())?;

    let mut env = vec![
        ("GATEWAY_URL".to_owned(), testbed.gateway_url()),
        ("ENVOY_ADMIN_URL".to_owned(), testbed.envoy_admin_url()),
        (
            "RATELIMIT_ADMIN_TOKEN".to_owned(),
            testbed.config.admin_token.clone(),
        ),
        ("TLS_CA".to_owned(), ca.ca_path().display().to_string()),
        (
            "TENANT_ACME_CERT".to_owned(),
            acme_cert.cert.display().to_string(),
        ),
        (
            "TENANT_ACME_CERT_KEY".to_owned(),
            acme_cert.key.display().to_string(),
        ),
    ];
    if let Some(url) = testbed.gateway_mtls_url() {
        env.push(("GATEWAY_MTLS_URL".to_owned(), url));
    }
    if let Some(url) = testbed.ratelimit_admin_url() {
        env.push(("RATELIMIT_ADMIN_URL".to_owned(), url));
    }
    for pool in ["latency", "throughput"] {
        env.push((
            format!("POOL_{}_URLS", env_name(pool)),
            testbed.replica_urls(pool).join(","),
        ));
    }
    for (tenant, key) in &keys {
        env.push((format!("TENANT_{}_KEY", env_name(tenant)), key.clone()));
    }
    let env_path = dir.join("env");
    let mut file = std::fs::File::create(&env_path).map_err(|e| e.to_string())?;
    for (k, v) in &env {
        writeln!(file, "{k}={v}").map_err(|e| e.to_string())?;
    }

    let gw = testbed.gateway_url();
    let first_key = keys.first().map(|(_, k)| k.as_str()).unwrap_or("sk-...");
    println!(
        "\nLLM gateway testbed is up. Endpoints and demo keys: {}\n",
        env_path.display()
    );
    for (k, v) in &env {
        println!("  {k}={v}");
    }
    println!(
        r#"
Try it:
  source {env}
  curl -s $GATEWAY_URL/v1/models -H "Authorization: Bearer $TENANT_ACME_KEY"
  curl -s $GATEWAY_URL/v1/chat/completions -H "Authorization: Bearer {first_key}" \
       -H 'content-type: application/json' \
       -d '{{"model":"llama-3.1-8b-instruct","messages":[{{"role":"user","content":"Hello!"}}],"max_tokens":16}}'
  curl -sN $GATEWAY_URL/v1/chat/completions -H "Authorization: Bearer $TENANT_GLOBEX_KEY" \
       -H 'content-type: application/json' \
       -d '{{"model":"llama-3.1-8b-instruct","stream":true,"messages":[{{"role":"user","content":"Stream please"}}]}}'
  curl -s --cacert $TLS_CA --cert $TENANT_ACME_CERT --key $TENANT_ACME_CERT_KEY $GATEWAY_MTLS_URL/v1/models
  curl -s $RATELIMIT_ADMIN_URL/metrics -H "Authorization: Bearer $RATELIMIT_ADMIN_TOKEN"

Gateway: {gw}   Logs: {dir}/*.log   Ctrl-C stops everything.
"#,
        env = env_path.display(),
        dir = dir.display(),
    );

    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| e.to_string())?;
    let _ = rx.recv();
    eprintln!("stopping ...");
    drop(testbed);
    drop(vllm);
    let _ = std::fs::remove_file(&env_path);
    Ok(())
}

/// One vLLM serving every chat model of the registry under its name (the
/// same tiny weights behind each: the gateway's behaviour, not the answers,
/// is what the testbed shows).
fn start_vllm(registry: &str, dir: &std::path::Path) -> Result<VllmServer, String> {
    let parsed = Registry::from_toml(registry).map_err(|e| e.to_string())?;
    let names: Vec<String> = parsed
        .config()
        .models
        .iter()
        .filter(|(_, m)| m.kind == ModelKind::Chat && m.base.is_none())
        .map(|(name, _)| name.to_string())
        .collect();
    let options = VllmOptions {
        served_model_names: names,
        ..VllmOptions::default()
    };
    let paths = Paths::locate().map_err(|e| e.to_string())?;
    VllmServer::start(&paths, "vllm-cpu", options, dir).map_err(|e| e.to_string())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("testbed: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tenant gets one demo key, whatever form its key list has, and
    /// the result is a registry whose keys authenticate.
    #[test]
    fn mints_one_working_key_per_tenant() {
        let registry = r#"
[tiers.t]
pools = ["p"]

[pools.p]
class = "latency"

[[tenants]]
id = "a"
tier = "t"

[[tenants]]
id = "b"
tier = "t"
api_keys = [{ id = "old", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }]

[[tenants]]
id = "c"
tier = "t"
[[tenants.api_keys]]
id = "old"
sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
"#;
        let (text, keys) = mint_demo_keys(registry).unwrap();
        let minted: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(minted, ["a", "b", "c"]);
        let parsed = Registry::from_toml(&text).unwrap();
        for (tenant, key) in &keys {
            let found = parsed
                .config()
                .tenants
                .iter()
                .find(|t| &t.id == tenant)
                .unwrap();
            let digest = tenant_registry::api_key_digest_hex(key);
            assert!(
                found.api_keys.iter().any(|k| k.sha256 == digest),
                "{tenant}"
            );
        }
        let counts: Vec<usize> = parsed
            .config()
            .tenants
            .iter()
            .map(|t| t.api_keys.len())
            .collect();
        assert_eq!(counts, [1, 2, 2]);
    }
}
