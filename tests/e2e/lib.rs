//! Shared fixtures of the end-to-end tests: a registry with known keys, a
//! testbed started from it, and small HTTP helpers.

use std::time::Duration;

use serde_json::{Value, json};
use tenant_registry::api_key_digest_hex;
use test_keys::TestKeys;
use testbed::{Testbed, TestbedConfig};

pub use testbed::FilterSet;

pub mod otlp;

/// The fixture registry with `{{digest:KEY}}` and `{{pem:ALG}}` filled in.
pub fn registry(keys: &TestKeys) -> String {
    render(include_str!("fixtures/registry.toml"), keys)
}

/// Fills only `{{digest:KEY}}` placeholders (registries without JWT keys).
pub fn with_digests(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{digest:") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").expect("closed placeholder") + start;
        out.push_str(&api_key_digest_hex(&rest[start + 9..end]));
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Fills `{{digest:...}}`, `{{pem:rsa|ec|ed}}` and `{{hmac}}` placeholders.
pub fn render(template: &str, keys: &TestKeys) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let tag = &rest[start + 2..start + end];
        let value = match tag.split_once(':') {
            Some(("digest", key)) => api_key_digest_hex(key),
            Some(("pem", "rsa")) => format!("'''{}'''", keys.rsa.public_pem),
            Some(("pem", "ec")) => format!("'''{}'''", keys.ec.public_pem),
            Some(("pem", "ed")) => format!("'''{}'''", keys.ed.public_pem),
            _ if tag == "hmac" => format!("\"{}\"", keys.hmac_secret),
            _ => panic!("unknown fixture placeholder {tag}"),
        };
        out.push_str(&value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// Starts a testbed from `registry` with `filters`, without ratelimit-service
/// unless the admission filter is in the chain.
pub fn start(registry: String, filters: FilterSet) -> Testbed {
    let mut config = TestbedConfig::new(registry);
    config.filters = filters;
    config.ratelimit = filters.admission;
    config.pools = vec![
        testbed::PoolSpec::new("latency", 1),
        testbed::PoolSpec::new("throughput", 1),
    ];
    start_with(config)
}

/// Mock flags for no model time to speak of: limits, not the mock, decide.
pub const FAST_MOCK: &[&str] = &[
    "--prefill-us-per-token",
    "0",
    "--decode-base-us",
    "1000",
    "--decode-us-per-seq",
    "0",
];

/// The full chain with ratelimit-service, one replica per pool, each mock
/// started with `mock_args`.
pub fn full_chain(registry: String, mock_args: &[&str]) -> TestbedConfig {
    let mut config = TestbedConfig::new(registry);
    config.filters = FilterSet::ALL;
    config.ratelimit = true;
    config.pools = ["latency", "throughput"]
        .into_iter()
        .map(|name| testbed::PoolSpec {
            mock_args: mock_args.iter().map(|a| a.to_string()).collect(),
            ..testbed::PoolSpec::new(name, 1)
        })
        .collect();
    config
}

pub fn start_with(config: TestbedConfig) -> Testbed {
    Testbed::start(config).unwrap_or_else(|e| panic!("testbed did not start: {e}"))
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A small chat request body.
pub fn chat(model: &str, content: &str, max_tokens: u32) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": content }], "max_tokens": max_tokens })
}

/// A response as status, lower-cased headers and JSON body (Null if not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn from(resp: reqwest::blocking::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `error.code` of an OpenAI-shaped error body.
    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// Asserts an OpenAI-shaped error with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        assert_eq!(self.error_code(), Some(code), "code; body: {}", self.text);
        let err = &self.body["error"];
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message: {}",
            self.text
        );
        assert!(err["type"].is_string(), "type: {}", self.text);
        assert!(
            err.as_object().is_some_and(|o| o.contains_key("param")),
            "param: {}",
            self.text
        );
    }
}

/// POSTs `body` to `path` with extra headers.
pub fn post(tb: &Testbed, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut req = client()
        .post(format!("{}{path}", tb.gateway_url()))
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::from(req.send().expect("request to gateway"))
}

pub fn get(tb: &Testbed, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().get(format!("{}{path}", tb.gateway_url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::from(req.send().expect("request to gateway"))
}

/// The upstream request (as the mock pools logged it) carrying `x-request-id`.
pub fn upstream_request(tb: &Testbed, request_id: &str) -> Option<Value> {
    tb.upstream_requests()
        .into_iter()
        .find(|r| r["headers"]["x-request-id"] == request_id)
}

/// ratelimit-service's Prometheus exposition (admin API, with the admin token).
pub fn ratelimit_metrics(tb: &Testbed) -> String {
    let url = tb.ratelimit_admin_url().expect("ratelimit-service runs");
    client()
        .get(format!("{url}/metrics"))
        .bearer_auth(&tb.config.admin_token)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .expect("ratelimit-service /metrics")
}

pub use test_support::metric;
pub use test_support::poll::eventually;

// Accounting: what ratelimit-service counted, against what the pool reported.

/// Nano-dollars per token of `MODEL` (prompt, cached prompt, completion).
pub const NANOS_IN: u64 = 200;
pub const NANOS_CACHED: u64 = 50;
pub const NANOS_OUT: u64 = 600;

pub fn usage(tb: &Testbed, tenant: &str) -> Value {
    let url = format!(
        "{}/admin/usage",
        tb.ratelimit_admin_url().expect("ratelimit-service running")
    );
    let all: Value = client()
        .get(url)
        .bearer_auth(&tb.config.admin_token)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("admin usage");
    all["tenants"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["tenant"] == tenant))
        .cloned()
        .unwrap_or_else(|| panic!("{tenant} not in {all}"))
}

/// The tenant's usage once no request of it is in flight: Complete is sent
/// as a response ends, so it can land just after the client has the reply.
pub fn settled_usage(tb: &Testbed, tenant: &str) -> Value {
    // No slot held and nothing reserved: with two-phase admission the
    // token reservation (which holds no slot) settles on its own report.
    let settled = eventually(Duration::from_secs(10), || {
        let row = usage(tb, tenant);
        u(&row, "in_flight") == 0 && row["reserved_today_usd"].as_f64() == Some(0.0)
    });
    let row = usage(tb, tenant);
    assert!(settled, "{tenant} never settled: {row}");
    row
}

pub fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

/// Token usage as the pool reported it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
}

impl Tokens {
    pub fn of(usage: &Value) -> Self {
        Self {
            prompt: usage["prompt_tokens"].as_u64().expect("prompt_tokens"),
            completion: usage["completion_tokens"]
                .as_u64()
                .expect("completion_tokens"),
            cached: usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0),
        }
    }

    /// What the registry's llama price makes of it, in nano-dollars.
    pub fn nanos(&self) -> u64 {
        (self.prompt - self.cached) * NANOS_IN
            + self.cached * NANOS_CACHED
            + self.completion * NANOS_OUT
    }

    pub fn add(&mut self, other: Tokens) {
        self.prompt += other.prompt;
        self.completion += other.completion;
        self.cached += other.cached;
    }
}

pub fn spend_nanos(row: &Value, field: &str) -> i64 {
    let usd = row[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {row}"));
    (usd * 1e9).round() as i64
}
