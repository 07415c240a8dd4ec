//! One tenant's streaming chat requests: the time to the first SSE chunk
//! (TTFT) and the `usage` of the last one.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Url};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::plan::{MAX_TOKENS, Shape};
use crate::error::BenchError;
use crate::load::{Outcome, load_client};
use crate::scenario::MODEL;
use crate::text::english_like;

/// What one streamed request measured, times relative to the scenario start.
#[derive(Debug, Clone, PartialEq)]
pub struct Streamed {
    pub outcome: Outcome,
    /// First body chunk; for a 2xx stream, the first token.
    pub first_byte: Option<Duration>,
    pub done: Duration,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A tenant's client: its key, its connection pool, its prompt filler.
#[derive(Debug)]
pub struct TenantClient {
    client: Client,
    url: Url,
    authorization: HeaderValue,
    tenant: String,
    filler: String,
}

impl TenantClient {
    pub fn new(
        gateway: &str,
        tenant: &str,
        api_key: &str,
        shape: Shape,
        timeout: Duration,
    ) -> Result<Self, BenchError> {
        let url = Url::parse(gateway)
            .and_then(|base| base.join("/v1/chat/completions"))
            .map_err(|e| BenchError::Recipe(format!("gateway URL {gateway}: {e}")))?;
        let authorization = HeaderValue::from_str(&format!("Bearer {api_key}"))
            .map_err(|e| BenchError::Recipe(format!("API key of {tenant}: {e}")))?;
        let client = load_client(timeout)?;
        Ok(Self {
            client,
            url,
            authorization,
            tenant: tenant.to_owned(),
            filler: english_like(shape.prompt_bytes()),
        })
    }

    /// Request `seq`: its prompt opens with the tenant and number, so no two
    /// requests share a prefix block (no cache hits, spread over replicas).
    pub fn body(&self, seq: u64) -> Bytes {
        let body = json!({
            "model": MODEL,
            "messages": [{
                "role": "user",
                "content": format!("{} request {seq}: {}", self.tenant, self.filler),
            }],
            "max_tokens": MAX_TOKENS,
            "stream": true,
        });
        Bytes::from(body.to_string())
    }

    /// Sends `body` and reads the stream to its end; times are measured from
    /// `epoch`, the scenario start.
    pub async fn send(&self, body: Bytes, epoch: Instant) -> Streamed {
        let request = self
            .client
            .post(self.url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return failed(outcome_of(&error), epoch),
        };
        let status = response.status().as_u16();
        let mut first_byte = None;
        let mut text = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if first_byte.is_none() && !chunk.is_empty() {
                        first_byte = Some(epoch.elapsed());
                    }
                    text.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) => return failed(outcome_of(&error), epoch),
            }
        }
        let (prompt_tokens, completion_tokens) =
            stream_usage(&String::from_utf8_lossy(&text)).unwrap_or((0, 0));
        Streamed {
            outcome: Outcome::Status(status),
            first_byte,
            done: epoch.elapsed(),
            prompt_tokens,
            completion_tokens,
        }
    }
}

impl TenantClient {
    /// One request that must stream tokens and usage; otherwise its status
    /// and body, to say what is wrong with the chain.
    pub async fn probe(&self) -> Result<(), (String, String)> {
        let response = self
            .client
            .post(self.url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(self.body(0))
            .send()
            .await
            .map_err(|e| (outcome_of(&e).label(), e.to_string()))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() && stream_usage(&text).is_some_and(|(_, out)| out > 0) {
            Ok(())
        } else {
            Err((status.as_u16().to_string(), text))
        }
    }
}

fn failed(outcome: Outcome, epoch: Instant) -> Streamed {
    Streamed {
        outcome,
        first_byte: None,
        done: epoch.elapsed(),
        prompt_tokens: 0,
        completion_tokens: 0,
    }
}

fn outcome_of(error: &reqwest::Error) -> Outcome {
    if error.is_timeout() {
        Outcome::Timeout
    } else if error.is_connect() {
        Outcome::Connect
    } else {
        Outcome::Transport
    }
}

/// `(prompt_tokens, completion_tokens)` of the last SSE event carrying a
/// `usage` object (the gateway forces `stream_options.include_usage`).
pub fn stream_usage(stream: &str) -> Option<(u64, u64)> {
    stream
        .lines()
        .rev()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|event| {
            let usage = event.get("usage")?;
            Some((
                usage.get("prompt_tokens")?.as_u64()?,
                usage.get("completion_tokens")?.as_u64()?,
            ))
        })
        .next()
}
