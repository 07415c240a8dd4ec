//! Helpers shared by the integration tests: in-process replicas, metric scraping, SSE reading.
#![allow(dead_code)]

use futures_util::StreamExt;
use mock_vllm::{MockConfig, MockServer};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

pub const MODEL: &str = "llama-3.1-8b-instruct";

/// A replica whose timing is easy to reason about: every decode step takes `step_ms`.
pub fn config(max_num_seqs: usize, step_ms: u64) -> MockConfig {
    MockConfig {
        max_num_seqs,
        decode_base_us: step_ms * 1000,
        decode_us_per_seq: 0,
        prefill_us_per_token: 0,
        // As deployed (vLLM's default is off): usage carries cached tokens.
        enable_prompt_tokens_details: true,
        ..MockConfig::default()
    }
}

pub async fn start(config: MockConfig) -> MockServer {
    mock_vllm::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("mock starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub fn chat_body(content: &str, max_tokens: u32) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    })
}

/// Value of the first sample of `name` (exact name, any labels) in `/metrics`.
pub async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    test_support::metric(&text, name, &[])
        .unwrap_or_else(|| panic!("no sample for {name} in\n{text}"))
}

/// One SSE `data:` payload and when it arrived.
#[derive(Debug)]
pub struct SseEvent {
    pub data: String,
    pub at: Instant,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// Reads events from a streaming response; stops after `limit` events or at the end.
pub async fn read_sse(response: reqwest::Response, limit: usize) -> Vec<SseEvent> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body chunk");
        let at = Instant::now();
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let data = event
                .trim_end()
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_string();
            events.push(SseEvent { data, at });
            if events.len() == limit {
                return events;
            }
        }
    }
    events
}

/// One named SSE event (`event:` then `data:`), as the Responses API sends them.
#[derive(Debug)]
pub struct NamedEvent {
    pub event: String,
    pub data: Value,
    pub at: Instant,
}

/// Reads named events from a streaming response; stops after `limit` events or at the end.
/// Panics on an event without a name, such as `data: [DONE]`.
pub async fn read_named_sse(response: reqwest::Response, limit: usize) -> Vec<NamedEvent> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body chunk");
        let at = Instant::now();
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buffer.find("\n\n") {
            let raw: String = buffer.drain(..end + 2).collect();
            let (name, data) = raw
                .trim_end()
                .split_once('\n')
                .unwrap_or_else(|| panic!("not a named event: {raw:?}"));
            let event = name
                .strip_prefix("event: ")
                .unwrap_or_else(|| panic!("no event name: {raw:?}"))
                .to_string();
            let data = data
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("no data: {raw:?}"));
            let data = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
            events.push(NamedEvent { event, data, at });
            if events.len() == limit {
                return events;
            }
        }
    }
    events
}
