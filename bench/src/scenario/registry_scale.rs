//! `registry-scale`: the whole gateway on a registry of real size. A
//! registry of `--tenants` tenants (one API key each, plus the bench
//! tenant) is generated; the full chain (Envoy with the gateway module,
//! ratelimit-service, mock pools) starts on it. It reports how long it
//! takes to start (and each step of that) and to apply a registry change,
//! what Envoy, the module's VMs and ratelimit-service hold in memory, how
//! many bytes the module's config is, and the p50 of authenticated requests
//! with random tenants' keys (`GET /v1/models`: authentication, then the
//! policy answers it).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tenant_registry::api_key_digest_hex;
use testbed::{FilterSet, StartupStep, Testbed};

use super::{Settings, registry, require_built};
use crate::error::BenchError;
use crate::report::{Host, now_utc, reproduce_command, write_results};

#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Tenants in the generated registry, one API key each.
    #[arg(long, default_value_t = 100_000)]
    pub tenants: usize,
    /// Authenticated requests timed per side, each with a random tenant's key.
    #[arg(long, default_value_t = 400)]
    pub requests: usize,
}

/// What the run measured.
#[derive(Debug, Default, Serialize)]
struct Side {
    label: &'static str,
    /// `Testbed::start` until Envoy is ready: registry written, filter configs
    /// rendered, every service started, every VM on every worker configured.
    start_s: f64,
    /// Of `start_s`: the testbed's own work (registry checked, mock pools
    /// started), ratelimit-service until it listens beside `render-ecds.py`,
    /// and Envoy until every VM is configured.
    harness_s: f64,
    ratelimit_s: f64,
    render_s: f64,
    envoy_s: f64,
    /// A registry change (one tenant added) until Envoy applied every filter's
    /// new config.
    reload_s: f64,
    envoy_resident_bytes: u64,
    /// The filters' wasm VMs on one worker, as each logged its memory once
    /// configured (the high-water mark of its linear memory), summed.
    filter_vm_mib_per_worker: f64,
    ratelimit_resident_bytes: u64,
    /// The filters' ECDS files, together.
    ecds_bytes: u64,
    auth_p50_ms: f64,
    auth_p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct ScaleReport {
    tenants: usize,
    requests: usize,
    envoy_concurrency: u32,
    generated_at: String,
    command: String,
    host: Host,
    module: Side,
}

/// The key of generated tenant `i`: local and throwaway, as the bench key.
fn key_of(i: usize) -> String {
    format!("sk-scale-{i:07}")
}

/// The bench registry plus `tenants` generated tenants.
fn generated_registry(tenants: usize, extra: usize) -> String {
    let mut text = registry();
    for i in 0..tenants + extra {
        let _ = write!(
            text,
            "\n[[tenants]]\nid = \"t{i:07}\"\ntier = \"bench\"\nmodels = [\"*\"]\n\
             api_keys = [{{ id = \"k\", sha256 = \"{}\" }}]\n",
            api_key_digest_hex(&key_of(i))
        );
    }
    text
}

fn testbed_error(label: &str, source: testbed::TestbedError) -> BenchError {
    BenchError::Testbed {
        label: format!("registry-scale {label}"),
        source,
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .filter(|meta| meta.is_file())
        .map(|meta| meta.len())
        .sum()
}

/// p50 and p99 (ms) of `count` `GET /v1/models`, each with a random
/// generated tenant's key; every answer must be 200.
fn auth_latency(tb: &Testbed, tenants: usize, count: usize) -> Result<(f64, f64), BenchError> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(BenchError::Client)?;
    let url = format!("{}/v1/models", tb.gateway_url());
    let mut pick = rand::rng();
    let mut millis = Vec::with_capacity(count);
    for _ in 0..count {
        let key = key_of(rand::Rng::random_range(&mut pick, 0..tenants.max(1)));
        let started = Instant::now();
        let response =
            client
                .get(&url)
                .bearer_auth(&key)
                .send()
                .map_err(|e| BenchError::Probe {
                    label: "registry-scale".into(),
                    status: "no answer".into(),
                    body: e.to_string(),
                })?;
        let status = response.status();
        let body = response.text().unwrap_or_default();
        millis.push(started.elapsed().as_secs_f64() * 1e3);
        if !status.is_success() {
            return Err(BenchError::Probe {
                label: "registry-scale".into(),
                status: status.to_string(),
                body,
            });
        }
    }
    millis.sort_by(f64::total_cmp);
    let at = |q: f64| millis[((millis.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

/// The filters' memory on one Envoy worker (MiB), from Envoy's log: each
/// filter VM logs `<filter>: configured: …; VM memory N MiB` once
/// configured. Per thread, the last such line of each VM is summed (the
/// main thread configures a VM twice, once to validate); the largest sum
/// is the answer. `None` when no VM logged it.
fn filter_memory_per_worker(log: &str) -> Option<f64> {
    let mut last: std::collections::BTreeMap<(&str, &str), f64> = Default::default();
    for line in log.lines() {
        let Some((_, memory)) = line.split_once("; VM memory ") else {
            continue;
        };
        let Some(mib) = memory
            .strip_suffix(" MiB")
            .and_then(|n| n.trim().parse::<f64>().ok())
        else {
            continue;
        };
        // [time][thread][level][logger] … wasm log <vm id> <root id>: …
        let thread = line.split(['[', ']']).nth(3).unwrap_or("");
        let vm = line
            .split_once("wasm log ")
            .and_then(|(_, rest)| rest.split(' ').next())
            .unwrap_or("");
        last.insert((thread, vm), mib);
    }
    let mut per_thread: std::collections::BTreeMap<&str, f64> = Default::default();
    for ((thread, _), mib) in last {
        *per_thread.entry(thread).or_default() += mib;
    }
    per_thread.into_values().reduce(f64::max)
}

/// The registry a side starts on, and the change it then applies.
struct Registries {
    start: String,
    changed: String,
}

fn measure(
    registries: &Registries,
    args: &ScaleArgs,
    settings: &Settings,
) -> Result<Side, BenchError> {
    let (label, side) = ("one module", "module");
    let mut config = settings.testbed(side, FilterSet::ALL);
    config.registry_toml = registries.start.clone();
    eprintln!(
        "registry-scale: starting `{label}` on {} tenants",
        args.tenants
    );
    let started = Instant::now();
    let mut tb = Testbed::start(config).map_err(|e| testbed_error(side, e))?;
    let start_s = started.elapsed().as_secs_f64();
    let took = |step| tb.startup.took(step).as_secs_f64();
    let (harness_s, ratelimit_s, render_s, envoy_s) = (
        took(StartupStep::Harness),
        took(StartupStep::Ratelimit),
        took(StartupStep::Render),
        took(StartupStep::Envoy),
    );
    let (auth_p50_ms, auth_p99_ms) = auth_latency(&tb, args.tenants, args.requests)?;
    let envoy_resident_bytes = tb.envoy.process.resident_bytes().unwrap_or(0);
    let envoy_log = std::fs::read_to_string(tb.run_dir().join("envoy.log")).unwrap_or_default();
    let filter_vm_mib_per_worker = filter_memory_per_worker(&envoy_log).unwrap_or(f64::NAN);
    let ratelimit_resident_bytes = tb
        .ratelimit
        .as_ref()
        .and_then(|p| p.resident_bytes())
        .unwrap_or(0);
    let ecds_bytes = dir_bytes(&tb.run_dir().join("ecds"));
    let started = Instant::now();
    tb.update_registry(&registries.changed)
        .map_err(|e| testbed_error(side, e))?;
    let reload_s = started.elapsed().as_secs_f64();
    eprintln!("registry-scale: `{label}` started in {start_s:.1} s, reloaded in {reload_s:.1} s");
    Ok(Side {
        label,
        start_s,
        harness_s,
        ratelimit_s,
        render_s,
        envoy_s,
        reload_s,
        envoy_resident_bytes,
        filter_vm_mib_per_worker,
        ratelimit_resident_bytes,
        ecds_bytes,
        auth_p50_ms,
        auth_p99_ms,
    })
}

impl Side {
    /// What a deployment waits for: ratelimit-service and the renderer side
    /// by side, then Envoy. The testbed's own work (generating a registry,
    /// starting mock pools) is not part of a gateway's start.
    fn gateway_start_s(&self) -> f64 {
        self.ratelimit_s.max(self.render_s) + self.envoy_s
    }
}

impl ScaleReport {
    fn markdown(&self) -> String {
        let mut out = format!(
            "# registry-scale: {} tenants\n\n\
             The full chain (the gateway module) on a registry of {} tenants \
             (one API key each), Envoy with {} workers. Goals at 100,000 \
             tenants: start and reload at most 10 s, the module's VMs at most \
             64 MiB per worker.\n\n\
             Reproduce: `{}`\n\nHost: {} CPUs, {} {}, testbed binaries `{}`, commit {}\n\n",
            self.tenants,
            self.tenants,
            self.envoy_concurrency,
            self.command,
            self.host.cpus,
            self.host.os,
            self.host.arch,
            self.host.testbed_profile,
            self.host.commit.as_deref().unwrap_or("unknown")
        );
        fn mib(bytes: u64) -> f64 {
            bytes as f64 / (1024.0 * 1024.0)
        }
        type Row = (&'static str, fn(&Side) -> f64);
        let rows: [Row; 13] = [
            ("start (s)", |s| s.start_s),
            (
                "… the gateway's start, the testbed's own work left out (s)",
                |s| s.gateway_start_s(),
            ),
            ("… testbed's own work (s)", |s| s.harness_s),
            ("… ratelimit-service (s), beside the renderer", |s| {
                s.ratelimit_s
            }),
            ("… render-ecds.py (s), beside ratelimit-service", |s| {
                s.render_s
            }),
            ("… Envoy until configured (s)", |s| s.envoy_s),
            ("registry reload (s)", |s| s.reload_s),
            ("Envoy resident (MiB)", |s| mib(s.envoy_resident_bytes)),
            ("filter VMs per worker (MiB)", |s| {
                s.filter_vm_mib_per_worker
            }),
            ("ratelimit-service resident (MiB)", |s| {
                mib(s.ratelimit_resident_bytes)
            }),
            ("filter configs, ECDS (MiB)", |s| mib(s.ecds_bytes)),
            ("auth p50 (ms)", |s| s.auth_p50_ms),
            ("auth p99 (ms)", |s| s.auth_p99_ms),
        ];
        let _ = writeln!(out, "| | {} |\n|---|---:|", self.module.label);
        for (what, value) in rows {
            let _ = writeln!(out, "| {what} | {:.2} |", value(&self.module));
        }
        out
    }
}

pub fn run(args: &ScaleArgs, settings: &Settings, out_dir: &Path) -> Result<(), BenchError> {
    require_built(FilterSet::ALL)?;
    if args.requests == 0 {
        return Err(BenchError::InvalidArgs(
            "--requests must be at least 1".into(),
        ));
    }
    // Generated once (100,000 key digests).
    let registries = Registries {
        start: generated_registry(args.tenants, 0),
        changed: generated_registry(args.tenants, 1),
    };
    let module = measure(&registries, args, settings)?;
    let root = testbed::Paths::locate().map(|p| p.root).unwrap_or_default();
    let report = ScaleReport {
        tenants: args.tenants,
        requests: args.requests,
        envoy_concurrency: settings.envoy_concurrency,
        generated_at: now_utc(),
        command: reproduce_command(),
        host: Host::current(&root, settings.envoy_concurrency),
        module,
    };
    let markdown = report.markdown();
    print!("{markdown}");
    let [md, json] = write_results(out_dir, "registry-scale", markdown, &report)?;
    eprintln!("wrote {} and {}", md.display(), json.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_memory_sums_each_vm_of_a_worker_once() {
        let line = |thread: &str, vm: &str, mib: u32| {
            format!(
                "[2026-11-29 13:50:40.426][{thread}][info][wasm] [context.cc:1151] wasm log \
                 {vm} {vm}: {vm}: configured: 3 tenants; VM memory {mib} MiB"
            )
        };
        let log = [
            line("1", "tenant-auth", 50),
            line("1", "tenant-auth", 10),
            line("1", "llm-policy", 7),
            line("2", "tenant-auth", 12),
            line("2", "llm-policy", 8),
            "[2026-11-29][2][info][wasm] wasm log llm-policy llm-policy: pool limits".into(),
        ]
        .join("\n");
        assert_eq!(filter_memory_per_worker(&log), Some(20.0));
        assert_eq!(filter_memory_per_worker("no such line"), None);
    }

    #[test]
    fn the_gateways_start_overlaps_service_and_renderer_and_leaves_the_harness_out() {
        let side = Side {
            start_s: 10.5,
            harness_s: 3.1,
            ratelimit_s: 1.7,
            render_s: 4.7,
            envoy_s: 2.6,
            ..Side::default()
        };
        assert!((side.gateway_start_s() - 7.3).abs() < 1e-9);
        let service_slower = Side {
            ratelimit_s: 5.0,
            ..side
        };
        assert!((service_slower.gateway_start_s() - 7.6).abs() < 1e-9);
    }
}
