//! The written result of one benchmark: JSON for machines, markdown for the
//! README, both carrying the command that reproduces them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::BenchError;
use crate::harness::{Comparison, ContenderResult};
use crate::load::PhaseSummary;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Subcommand, also the file name (`auth` → `auth.md`, `auth.json`).
    pub benchmark: String,
    pub title: String,
    /// The question the benchmark answers.
    pub question: String,
    /// Shell command that reproduces this report.
    pub command: String,
    pub generated_at: String,
    pub host: Host,
    pub comparisons: Vec<Comparison>,
}

/// Where the numbers were taken; ratios travel between machines, absolute numbers do not.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub cpus: usize,
    pub os: &'static str,
    pub arch: &'static str,
    /// Cargo profile of the mock-vllm / ratelimit-service binaries.
    pub testbed_profile: String,
    pub envoy_concurrency: u32,
    /// `git describe`-like commit of the checkout, `-dirty` with local changes.
    pub commit: Option<String>,
}

impl Host {
    pub fn current(root: &Path, envoy_concurrency: u32) -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            testbed_profile: std::env::var("TESTBED_PROFILE")
                .unwrap_or_else(|_| "debug".to_owned()),
            envoy_concurrency,
            commit: commit(root),
        }
    }
}

fn commit(root: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// The command line of this process, as a user would type it again.
pub fn reproduce_command() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(program) = args.first_mut()
        && let Some(name) = Path::new(program.as_str()).file_name()
        && program.contains("release")
    {
        *program = format!("./target/release/{}", name.to_string_lossy());
    }
    let profile = std::env::var("TESTBED_PROFILE")
        .map(|p| format!("TESTBED_PROFILE={p} "))
        .unwrap_or_default();
    format!("{profile}{}", args.join(" "))
}

/// Writes a benchmark's `<dir>/<name>.md` (`markdown`) and `<dir>/<name>.json`
/// (`report`); returns their paths.
pub fn write_results(
    dir: &Path,
    name: &str,
    markdown: String,
    report: &impl Serialize,
) -> Result<[PathBuf; 2], BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let md = dir.join(format!("{name}.md"));
    let json = dir.join(format!("{name}.json"));
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    for (path, text) in [(&md, markdown), (&json, text)] {
        std::fs::write(path, text).map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok([md, json])
}

impl Report {
    /// Writes `<dir>/<benchmark>.md` and `.json`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<[PathBuf; 2], BenchError> {
        write_results(dir, &self.benchmark, self.markdown(), self)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {}\n", self.title);
        let _ = writeln!(out, "{}\n", self.question);
        let _ = writeln!(out, "```sh\n{}\n```\n", self.command);
        let host = &self.host;
        let _ = writeln!(
            out,
            "Generated {} on {} CPUs ({}/{}), commit {}, testbed binaries `{}`, Envoy concurrency {}.\n",
            self.generated_at,
            host.cpus,
            host.os,
            host.arch,
            host.commit.as_deref().unwrap_or("unknown"),
            host.testbed_profile,
            host.envoy_concurrency,
        );
        for comparison in &self.comparisons {
            comparison_markdown(&mut out, comparison);
        }
        out
    }
}

fn comparison_markdown(out: &mut String, c: &Comparison) {
    let (v, b) = (&c.variant, &c.baseline);
    let plan = &c.plan;
    let _ = writeln!(
        out,
        "## {} ({} B body)\n",
        c.recipe.label, c.recipe.body_bytes
    );
    let _ = writeln!(
        out,
        "`{}` ({}) against `{}` ({}): {} round(s), each side {} s per phase, sides alternating; \
         open loop at fixed rates (latency from the intended send time), then closed loop \
         with {} connections for maximum throughput.\n",
        v.label, v.filters, b.label, b.filters, plan.rounds, plan.duration_s, plan.connections
    );
    let _ = writeln!(
        out,
        "| side | load | ok | errors | p50 ms | p90 ms | p99 ms | max ms | throughput rps |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (k, rate) in plan.rates.iter().enumerate() {
        for side in [v, b] {
            if let Some(phase) = side.fixed_rate.get(k) {
                phase_row(out, side, &format!("{rate} rps"), &phase.phase.merged);
            }
        }
    }
    for side in [v, b] {
        phase_row(
            out,
            side,
            &format!("saturation, {} conn", plan.connections),
            &side.saturation.merged,
        );
    }
    let r = &c.ratios;
    let _ = writeln!(
        out,
        "\n| ratio {} / {} | value | per round |",
        v.label, b.label
    );
    let _ = writeln!(out, "|---|---:|---|");
    for rate in &r.fixed_rate {
        let _ = writeln!(
            out,
            "| p50 at {} rps | {} ({:+.3} ms) | {} |",
            rate.rate,
            ratio(rate.p50),
            rate.p50_added_ms,
            ratios(&rate.p50_by_round)
        );
        let _ = writeln!(
            out,
            "| p99 at {} rps | {} ({:+.3} ms) | {} |",
            rate.rate,
            ratio(rate.p99),
            rate.p99_added_ms,
            ratios(&rate.p99_by_round)
        );
    }
    let _ = writeln!(
        out,
        "| max throughput | {} | {} |",
        ratio(r.max_throughput),
        ratios(&r.max_throughput_by_round)
    );
    let _ = writeln!(out, "| p50 at saturation | {} | |", ratio(r.saturation_p50));
    let _ = writeln!(
        out,
        "| p99 at saturation | {} | |\n",
        ratio(r.saturation_p99)
    );
    cpu_markdown(out, v, b);
    let errors: u64 = [v, b]
        .iter()
        .flat_map(|s| {
            s.fixed_rate
                .iter()
                .map(|p| &p.phase.merged)
                .chain([&s.saturation.merged])
        })
        .map(PhaseSummary::error_count)
        .sum();
    if errors > 0 {
        let _ = writeln!(
            out,
            "**{errors} requests failed; see the errors column and the JSON.**\n"
        );
    }
}

/// CPU per request at saturation, by process, both sides and the difference:
/// which process pays for what the variant adds.
fn cpu_markdown(out: &mut String, v: &ContenderResult, b: &ContenderResult) {
    if v.saturation_cpu.is_empty() && b.saturation_cpu.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "CPU per request at saturation (µs, user + system, all rounds):\n"
    );
    let _ = writeln!(
        out,
        "| process | {} | {} | {} − {} |",
        v.label, b.label, v.label, b.label
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let us = |side: &ContenderResult, process: &str| {
        side.saturation_cpu
            .iter()
            .find(|s| s.process == process)
            .map_or(0.0, |s| s.per_request_us)
    };
    let mut processes: Vec<&str> = Vec::new();
    for share in v.saturation_cpu.iter().chain(&b.saturation_cpu) {
        if !processes.contains(&share.process.as_str()) {
            processes.push(&share.process);
        }
    }
    let (mut total_v, mut total_b) = (0.0, 0.0);
    for process in processes {
        let (pv, pb) = (us(v, process), us(b, process));
        total_v += pv;
        total_b += pb;
        let _ = writeln!(out, "| {process} | {pv:.0} | {pb:.0} | {:+.0} |", pv - pb);
    }
    let _ = writeln!(
        out,
        "| **all** | **{total_v:.0}** | **{total_b:.0}** | **{:+.0}** |\n",
        total_v - total_b
    );
}

fn phase_row(out: &mut String, side: &ContenderResult, load: &str, s: &PhaseSummary) {
    let l = &s.latency_ms;
    let errors = if s.errors.is_empty() {
        "0".to_owned()
    } else {
        s.errors
            .iter()
            .map(|(k, n)| format!("{n}×{k}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        out,
        "| {} | {load} | {} | {errors} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} |",
        side.label, s.ok, l.p50, l.p90, l.p99, l.max, s.throughput_rps
    );
}

fn ratio(value: f64) -> String {
    format!("{value:.3}")
}

fn ratios(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| ratio(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Now as RFC 3339 UTC, without pulling a date crate in for one timestamp.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_unix_time_as_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_763_677_845), "2025-11-20T22:30:45Z");
    }
}
