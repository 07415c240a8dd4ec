//! Engine statistics and their Prometheus text exposition under vLLM's metric names.
//!
//! Written by hand rather than with a metrics crate: the names carry colons (`vllm:...`), the
//! set is small and fixed, and gateway tests scrape exactly these lines.

use std::fmt::Write;
use std::time::Duration;

/// vLLM's `time_to_first_token_seconds` buckets.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

/// vLLM's request latency buckets (`e2e_request_latency_seconds`).
const LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative count per bound; the `+Inf` bucket is `count`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(slot) = self.bounds.iter().position(|&bound| seconds <= bound) {
            self.counts[slot] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Why a request left the engine, vLLM's `finished_reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    Abort,
}

impl FinishReason {
    const ALL: [FinishReason; 3] = [Self::Stop, Self::Length, Self::Abort];

    fn label(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}

/// Cumulative counters and histograms, updated by the scheduler under its lock.
#[derive(Debug, Clone)]
pub struct EngineStats {
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    finished: [u64; 3],
    pub time_to_first_token: Histogram,
    pub e2e_request_latency: Histogram,
}

impl Default for EngineStats {
    fn default() -> Self {
        Self {
            prompt_tokens: 0,
            generation_tokens: 0,
            prefix_cache_queries: 0,
            prefix_cache_hits: 0,
            finished: [0; 3],
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            e2e_request_latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl EngineStats {
    pub fn record_finished(&mut self, reason: FinishReason) {
        self.finished[reason as usize] += 1;
    }

    pub fn finished(&self, reason: FinishReason) -> u64 {
        self.finished[reason as usize]
    }
}

/// Point-in-time scheduler state behind the gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerGauges {
    pub running: usize,
    pub waiting: usize,
    pub kv_cache_usage: f64,
}

/// Static facts exported as `vllm:cache_config_info`.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfigInfo {
    pub block_size: usize,
    pub num_gpu_blocks: usize,
}

/// Renders the exposition text for one engine (`engine="0"`).
pub fn render(
    model_name: &str,
    cache: CacheConfigInfo,
    gauges: SchedulerGauges,
    stats: &EngineStats,
) -> String {
    let labels = format!(
        "engine=\"0\",model_name=\"{}\"",
        escape_label_value(model_name)
    );
    let mut out = String::with_capacity(8 * 1024);
    let info_labels = format!(
        "block_size=\"{}\",engine=\"0\",num_gpu_blocks=\"{}\"",
        cache.block_size, cache.num_gpu_blocks
    );
    gauge(
        &mut out,
        "vllm:cache_config_info",
        "Information of the LLMEngine CacheConfig",
        &info_labels,
        1.0,
    );
    gauge(
        &mut out,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        &labels,
        gauges.running as f64,
    );
    gauge(
        &mut out,
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        &labels,
        gauges.waiting as f64,
    );
    gauge(
        &mut out,
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        &labels,
        gauges.kv_cache_usage,
    );
    counter(
        &mut out,
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        &labels,
        stats.prefix_cache_queries,
    );
    counter(
        &mut out,
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        &labels,
        stats.prefix_cache_hits,
    );
    counter(
        &mut out,
        "vllm:prompt_tokens",
        "Number of prefill tokens processed.",
        &labels,
        stats.prompt_tokens,
    );
    counter(
        &mut out,
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        &labels,
        stats.generation_tokens,
    );

    header(
        &mut out,
        "vllm:request_success",
        "Count of successfully processed requests.",
        "counter",
    );
    for reason in FinishReason::ALL {
        let _ = writeln!(
            out,
            "vllm:request_success_total{{{labels},finished_reason=\"{}\"}} {}",
            reason.label(),
            stats.finished(reason)
        );
    }
    histogram(
        &mut out,
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &labels,
        &stats.time_to_first_token,
    );
    histogram(
        &mut out,
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &labels,
        &stats.e2e_request_latency,
    );
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, labels: &str, value: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

/// Counter families are named without `_total`; the sample carries it, as prometheus_client
/// (which vLLM uses) writes them.
fn counter(out: &mut String, name: &str, help: &str, labels: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name}_total{{{labels}}} {value}");
}

fn histogram(out: &mut String, name: &str, help: &str, labels: &str, hist: &Histogram) {
    header(out, name, help, "histogram");
    let mut cumulative = 0;
    for (bound, count) in hist.bounds.iter().zip(&hist.counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{bound:?}\"}} {cumulative}"
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", hist.count);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", hist.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", hist.sum);
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        let mut stats = EngineStats {
            prompt_tokens: 120,
            ..EngineStats::default()
        };
        stats.record_finished(FinishReason::Length);
        stats.time_to_first_token.observe(Duration::from_millis(30));
        stats.time_to_first_token.observe(Duration::from_secs(3000));
        render(
            "llama \"8b\"",
            CacheConfigInfo {
                block_size: 16,
                num_gpu_blocks: 64,
            },
            SchedulerGauges {
                running: 3,
                waiting: 2,
                kv_cache_usage: 0.25,
            },
            &stats,
        )
    }

    #[test]
    fn renders_vllm_names_and_labels() {
        let text = sample();
        let labels = r#"engine="0",model_name="llama \"8b\"""#;
        for line in [
            format!("vllm:num_requests_running{{{labels}}} 3"),
            format!("vllm:num_requests_waiting{{{labels}}} 2"),
            format!("vllm:kv_cache_usage_perc{{{labels}}} 0.25"),
            format!("vllm:prompt_tokens_total{{{labels}}} 120"),
            format!("vllm:request_success_total{{{labels},finished_reason=\"length\"}} 1"),
            "# TYPE vllm:time_to_first_token_seconds histogram".to_string(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let text = sample();
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("vllm:time_to_first_token_seconds_bucket")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_string)
        };
        assert_eq!(bucket("0.02").as_deref(), Some("0"));
        assert_eq!(bucket("0.04").as_deref(), Some("1"));
        assert_eq!(bucket("2560.0").as_deref(), Some("1"));
        assert_eq!(bucket("+Inf").as_deref(), Some("2"));
    }
}
