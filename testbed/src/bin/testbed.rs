//! `make run`: the whole gateway on this machine, in the foreground.
//!
//! Mints one demo API key per tenant of the registry, starts mock vLLM pools,
//! ratelimit-service (memory mode) and Envoy with the filters, writes what it
//! set up to `<dir>/env` and waits for Ctrl-C, then stops everything.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;

use rand::RngCore;
use testbed::tls::TestCa;
use testbed::{Testbed, TestbedConfig};

struct Args {
    registry: PathBuf,
    dir: PathBuf,
    port: u16,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        registry: PathBuf::from("testbed/demo-registry.toml"),
        dir: PathBuf::from(".testbed"),
        port: 8080,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--registry" => args.registry = value()?.into(),
            "--dir" => args.dir = value()?.into(),
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "-h" | "--help" => {
                println!("usage: testbed [--registry FILE] [--dir DIR] [--port PORT (0 = any)]");
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
fn mint_demo_keys(registry: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut doc: toml::Table = registry.parse().map_err(|e| format!("registry: {e}"))?;
    let mut keys = Vec::new();
    if let Some(tenants) = doc.get_mut("tenants").and_then(|t| t.as_array_mut()) {
        for tenant in tenants.iter_mut().filter_map(|t| t.as_table_mut()) {
            let Some(id) = tenant.get("id").and_then(|v| v.as_str()).map(str::to_owned) else {
                continue;
            };
            let key = random_token("sk-demo-");
            let mut entry = toml::Table::new();
            entry.insert("id".into(), "testbed-demo".into());
            entry.insert(
                "sha256".into(),
                tenant_registry::api_key_digest_hex(&key).into(),
            );
            let list = tenant
                .entry("api_keys")
                .or_insert_with(|| toml::Value::Array(Vec::new()));
            if let Some(list) = list.as_array_mut() {
                list.push(toml::Value::Table(entry));
            }
            keys.push((id, key));
        }
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
    let mut config = TestbedConfig::new(registry);
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
    let _ = std::fs::remove_file(&env_path);
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("testbed: {e}");
        std::process::exit(1);
    }
}
