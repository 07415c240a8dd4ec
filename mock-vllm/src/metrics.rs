//! Engine statistics and their Prometheus text exposition under vLLM's metric names.
//!
//! Written by hand rather than with a metrics crate: the names carry colons (`vllm:...`), the
//! set is small and fixed, and gateway tests scrape exactly these lines.

use crate::api::python::go_float;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Why a request left the engine, vLLM's `finished_reason` label (`FinishReason` in
/// `vllm/v1/engine/__init__.py`). The mock never sees `error` or `repetition`, but vLLM
/// exports all five from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    Abort,
    Error,
    Repetition,
}

impl FinishReason {
    const ALL: [FinishReason; 5] = [
        Self::Stop,
        Self::Length,
        Self::Abort,
        Self::Error,
        Self::Repetition,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
            Self::Error => "error",
            Self::Repetition => "repetition",
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
    finished: [u64; 5],
    pub time_to_first_token: Histogram,
    pub e2e_request_latency: Histogram,
    /// When the series were created (Unix seconds), exported as the `_created` samples.
    pub created: f64,
}

impl Default for EngineStats {
    fn default() -> Self {
        Self {
            prompt_tokens: 0,
            generation_tokens: 0,
            prefix_cache_queries: 0,
            prefix_cache_hits: 0,
            finished: [0; 5],
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            e2e_request_latency: Histogram::new(LATENCY_BUCKETS),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
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
    pub max_model_len: usize,
}

/// Renders the exposition of one engine (`engine="0"`) as vLLM's single-process server does:
/// prometheus_client's text format, families in the order vLLM registers them, label names
/// sorted, values as `floatToGoString` prints them, and for every counter and histogram a
/// `_created` gauge family after it.
pub fn render(
    model_name: &str,
    cache: CacheConfigInfo,
    gauges: SchedulerGauges,
    stats: &EngineStats,
) -> String {
    let model = escape_label_value(model_name);
    let labels = format!("engine=\"0\",model_name=\"{model}\"");
    let mut out = Exposition {
        text: String::with_capacity(16 * 1024),
        created: stats.created,
    };
    out.gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        &[(labels.clone(), gauges.running as f64)],
    );
    out.gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        &[(labels.clone(), gauges.waiting as f64)],
    );
    // The mock defers nothing: every waiting request waits for capacity.
    out.gauge(
        "vllm:num_requests_waiting_by_reason",
        "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for \
         scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV \
         transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
        &[
            (
                format!("{labels},reason=\"capacity\""),
                gauges.waiting as f64,
            ),
            (format!("{labels},reason=\"deferred\""), 0.0),
        ],
    );
    out.gauge(
        "vllm:engine_sleep_state",
        "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is \
         awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
        &[
            (format!("{labels},sleep_state=\"awake\""), 1.0),
            (format!("{labels},sleep_state=\"weights_offloaded\""), 0.0),
            (format!("{labels},sleep_state=\"discard_all\""), 0.0),
        ],
    );
    out.gauge(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        &[(labels.clone(), gauges.kv_cache_usage)],
    );
    let counter = |name: &str, help: &str, value: u64, out: &mut Exposition| {
        out.counter(name, help, &[(labels.clone(), value as f64)]);
    };
    let by = |key: &str, values: &[(&str, u64)]| -> Vec<(String, f64)> {
        values
            .iter()
            .map(|(label, value)| (format!("{labels},{key}=\"{label}\""), *value as f64))
            .collect()
    };
    let hits = stats.prefix_cache_hits;
    counter(
        "vllm:prefix_cache_queries",
        "Prefix cache queries, in terms of number of queried tokens.",
        stats.prefix_cache_queries,
        &mut out,
    );
    counter(
        "vllm:prefix_cache_hits",
        "Prefix cache hits, in terms of number of cached tokens.",
        hits,
        &mut out,
    );
    counter(
        "vllm:external_prefix_cache_queries",
        "External prefix cache queries from KV connector cross-instance cache sharing, in \
         terms of number of queried tokens.",
        0,
        &mut out,
    );
    counter(
        "vllm:external_prefix_cache_hits",
        "External prefix cache hits from KV connector cross-instance cache sharing, in terms \
         of number of cached tokens.",
        0,
        &mut out,
    );
    counter(
        "vllm:mm_cache_queries",
        "Multi-modal cache queries, in terms of number of queried items.",
        0,
        &mut out,
    );
    counter(
        "vllm:mm_cache_hits",
        "Multi-modal cache hits, in terms of number of cached items.",
        0,
        &mut out,
    );
    counter(
        "vllm:num_preemptions",
        "Cumulative number of preemption from the engine.",
        0,
        &mut out,
    );
    counter(
        "vllm:prompt_tokens",
        "Number of prefill tokens processed.",
        stats.prompt_tokens,
        &mut out,
    );
    out.counter(
        "vllm:prompt_tokens_by_source",
        "Number of prompt tokens by source.",
        &by(
            "source",
            &[
                ("local_compute", stats.prompt_tokens.saturating_sub(hits)),
                ("local_cache_hit", hits),
                ("external_kv_transfer", 0),
            ],
        ),
    );
    counter(
        "vllm:prompt_tokens_cached",
        "Number of cached prompt tokens (local + external).",
        hits,
        &mut out,
    );
    out.counter(
        "vllm:prompt_tokens_cached_by_source",
        "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), \
         host (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or \
         external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + \
         vllm:external_prefix_cache_hits.",
        &by(
            "source",
            &[
                ("device", hits),
                ("host", 0),
                ("p2p", 0),
                ("disk", 0),
                ("external_unspecified", 0),
            ],
        ),
    );
    counter(
        "vllm:generation_tokens",
        "Number of generation tokens processed.",
        stats.generation_tokens,
        &mut out,
    );
    let success: Vec<(String, f64)> = FinishReason::ALL
        .iter()
        .map(|&reason| {
            (
                format!(
                    "engine=\"0\",finished_reason=\"{}\",model_name=\"{model}\"",
                    reason.label()
                ),
                stats.finished(reason) as f64,
            )
        })
        .collect();
    out.counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        &success,
    );
    // Frontend admission: labelled by model only.
    out.counter(
        "vllm:admission_rejections",
        "Number of admission attempts rejected by a queue limit, by reason.",
        &[
            (
                format!("model_name=\"{model}\",reason=\"max_num_queued_reqs\""),
                0.0,
            ),
            (
                format!("model_name=\"{model}\",reason=\"max_num_queued_tokens\""),
                0.0,
            ),
        ],
    );
    out.histogram(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &model,
        &stats.time_to_first_token,
    );
    out.histogram(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &model,
        &stats.e2e_request_latency,
    );
    // Logged once the engine is up, so registered last: every CacheConfig field as a label,
    // sorted, with the values a default vLLM 0.32 reports and the mock's own sizes.
    let kv_tokens = cache.block_size * cache.num_gpu_blocks;
    let concurrency = kv_tokens as f64 / cache.max_model_len.max(1) as f64;
    let block = cache.block_size.to_string();
    let info: [(&str, String); 37] = [
        ("_block_size_resolved", "True".into()),
        ("block_size", block.clone()),
        ("cache_dtype", "auto".into()),
        ("cache_hit_alignment_tokens", "None".into()),
        ("effective_attention_block_size", block),
        ("enable_mamba_shared_prefix_checkpoint", "False".into()),
        ("enable_prefix_caching", "True".into()),
        ("engine", "0".into()),
        ("gpu_memory_utilization", "0.92".into()),
        ("hash_block_size", "None".into()),
        ("is_attention_free", "False".into()),
        ("kv_cache_dtype_skip_layers", "[]".into()),
        ("kv_cache_layout", "None".into()),
        (
            "kv_cache_max_concurrency",
            crate::api::python::repr_float(concurrency),
        ),
        ("kv_cache_memory_bytes", "None".into()),
        ("kv_cache_size_tokens", kv_tokens.to_string()),
        ("kv_offloading_backend", "native".into()),
        ("kv_offloading_size", "None".into()),
        ("kv_sharing_fast_prefill", "False".into()),
        ("mamba_block_size", "None".into()),
        ("mamba_cache_dtype", "auto".into()),
        ("mamba_cache_mode", "none".into()),
        ("mamba_page_size_padded", "None".into()),
        ("mamba_ssm_cache_dtype", "float32".into()),
        ("num_cpu_blocks", "None".into()),
        ("num_gpu_blocks", cache.num_gpu_blocks.to_string()),
        ("num_gpu_blocks_override", "None".into()),
        ("prefix_cache_retention_interval", "0".into()),
        ("prefix_caching_hash_algo", "sha256".into()),
        ("prefix_match_unit", "None".into()),
        ("replayssm_buffer_len", "16".into()),
        ("skip_page_size_padded", "None".into()),
        ("sliding_window", "None".into()),
        ("swa_bounded_replay", "True".into()),
        ("use_kda_recoverssm", "False".into()),
        ("use_replayssm", "False".into()),
        ("user_specified_block_size", "False".into()),
    ];
    let info: Vec<String> = info.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    out.gauge(
        "vllm:cache_config_info",
        "Information of the LLMEngine CacheConfig",
        &[(info.join(","), 1.0)],
    );
    out.text
}

struct Exposition {
    text: String,
    created: f64,
}

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        let _ = writeln!(self.text, "{name}{{{labels}}} {}", go_float(value));
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[(String, f64)]) {
        self.family(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, labels, *value);
        }
    }

    /// The 0.0.4 text format names a counter family after its `_total` sample.
    fn counter(&mut self, name: &str, help: &str, samples: &[(String, f64)]) {
        let total = format!("{name}_total");
        self.family(&total, help, "counter");
        for (labels, value) in samples {
            self.sample(&total, labels, *value);
        }
        self.created_family(
            name,
            help,
            samples.iter().map(|(labels, _)| labels.as_str()),
        );
    }

    fn created_family<'a>(
        &mut self,
        name: &str,
        help: &str,
        labels: impl Iterator<Item = &'a str>,
    ) {
        let created = format!("{name}_created");
        self.family(&created, help, "gauge");
        let value = self.created;
        for labels in labels {
            self.sample(&created, labels, value);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, model: &str, hist: &Histogram) {
        self.family(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, count) in hist.bounds.iter().zip(&hist.counts) {
            cumulative += count;
            let labels = format!(
                "engine=\"0\",le=\"{}\",model_name=\"{model}\"",
                go_float(*bound)
            );
            self.sample(&bucket, &labels, cumulative as f64);
        }
        let labels = format!("engine=\"0\",le=\"+Inf\",model_name=\"{model}\"");
        self.sample(&bucket, &labels, hist.count as f64);
        let labels = format!("engine=\"0\",model_name=\"{model}\"");
        self.sample(&format!("{name}_count"), &labels, hist.count as f64);
        self.sample(&format!("{name}_sum"), &labels, hist.sum);
        self.created_family(name, help, std::iter::once(labels.as_str()));
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
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
            prompt_tokens: 1_234_567,
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
                max_model_len: 512,
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
            format!("vllm:num_requests_running{{{labels}}} 3.0"),
            format!("vllm:num_requests_waiting{{{labels}}} 2.0"),
            format!("vllm:num_requests_waiting_by_reason{{{labels},reason=\"capacity\"}} 2.0"),
            format!("vllm:num_requests_waiting_by_reason{{{labels},reason=\"deferred\"}} 0.0"),
            format!("vllm:kv_cache_usage_perc{{{labels}}} 0.25"),
            format!("vllm:prompt_tokens_total{{{labels}}} 1.234567e+06"),
            "# TYPE vllm:prompt_tokens_total counter".to_string(),
            "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.".to_string(),
            "# TYPE vllm:prompt_tokens_created gauge".to_string(),
            r#"vllm:request_success_total{engine="0",finished_reason="length",model_name="llama \"8b\""} 1.0"#.to_string(),
            r#"vllm:request_success_total{engine="0",finished_reason="repetition",model_name="llama \"8b\""} 0.0"#.to_string(),
            "# TYPE vllm:time_to_first_token_seconds histogram".to_string(),
            "# TYPE vllm:time_to_first_token_seconds_created gauge".to_string(),
            "# TYPE vllm:admission_rejections_total counter".to_string(),
            r#"vllm:prompt_tokens_by_source_total{engine="0",model_name="llama \"8b\"",source="local_compute"} 1.234567e+06"#.to_string(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        let info = text
            .lines()
            .find(|l| l.starts_with("vllm:cache_config_info{"))
            .expect("cache config info");
        assert!(
            info.starts_with(
                r#"vllm:cache_config_info{_block_size_resolved="True",block_size="16","#
            )
        );
        assert!(info.contains(r#",engine="0","#) && info.contains(r#"num_gpu_blocks="64""#));
        assert!(info.contains(r#"kv_cache_max_concurrency="2.0""#), "{info}");
        assert!(info.ends_with(r#"user_specified_block_size="False"} 1.0"#));
        // prometheus_client names no counter family without its `_total`.
        assert!(
            !text
                .lines()
                .any(|l| l == "# TYPE vllm:prompt_tokens counter")
        );
        let created = text
            .lines()
            .find(|l| l.starts_with("vllm:prompt_tokens_created{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("a created sample");
        assert!(created > 1.6e9, "{created}");
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
        assert_eq!(bucket("0.02").as_deref(), Some("0.0"));
        assert_eq!(bucket("0.04").as_deref(), Some("1.0"));
        assert_eq!(bucket("2560.0").as_deref(), Some("1.0"));
        assert_eq!(bucket("+Inf").as_deref(), Some("2.0"));
        // Buckets, then count, then sum, as prometheus_client orders them.
        let at = |prefix: &str| text.find(prefix).expect(prefix);
        assert!(
            at("vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"+Inf\"")
                < at("vllm:time_to_first_token_seconds_count{")
        );
        assert!(
            at("vllm:time_to_first_token_seconds_count{")
                < at("vllm:time_to_first_token_seconds_sum{")
        );
    }
}
