//! A recipe bound to one gateway: the HTTP client, the parsed URL and headers,
//! prepared once so the hot loop only clones cheap handles.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Url};

use super::{RequestRecipe, Target};
use crate::error::BenchError;

/// How one request ended, as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    Timeout,
    Connect,
    /// Any other transport failure (reset, malformed response, body cut short).
    Transport,
}

impl Outcome {
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Status(code) if (200..300).contains(&code))
    }

    /// The key under which the report counts this outcome.
    pub fn label(self) -> String {
        match self {
            Outcome::Status(code) => code.to_string(),
            Outcome::Timeout => "timeout".to_owned(),
            Outcome::Connect => "connect".to_owned(),
            Outcome::Transport => "transport".to_owned(),
        }
    }

    fn from_error(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            Outcome::Timeout
        } else if error.is_connect() {
            Outcome::Connect
        } else {
            Outcome::Transport
        }
    }
}

/// The HTTP client every load phase uses: HTTP/1.1 keep-alive, no Nagle,
/// unbounded idle pool, so the client side never becomes the bottleneck.
pub fn load_client(timeout: Duration) -> Result<Client, BenchError> {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .http1_only()
        .build()
        .map_err(BenchError::Client)
}

/// One gateway with one request recipe; its client keeps its own connection pool.
#[derive(Debug)]
pub struct Endpoint {
    client: Client,
    method: Method,
    url: Url,
    headers: HeaderMap,
    /// Shared by every request instead of copied (64 KiB bodies add up).
    body: Bytes,
}

impl Endpoint {
    /// Binds `recipe` to `base_url`; requests give up after `timeout`.
    pub fn new(
        base_url: &str,
        recipe: &RequestRecipe,
        timeout: Duration,
    ) -> Result<Self, BenchError> {
        let url = Url::parse(base_url)
            .and_then(|base| base.join(&recipe.path))
            .map_err(|e| BenchError::Recipe(format!("URL {base_url}{}: {e}", recipe.path)))?;
        let method = Method::from_bytes(recipe.method.as_bytes())
            .map_err(|e| BenchError::Recipe(format!("method {}: {e}", recipe.method)))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &recipe.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| BenchError::Recipe(format!("header name {name}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| BenchError::Recipe(format!("header {name}: {e}")))?;
            headers.insert(name, value);
        }
        let client = load_client(timeout)?;
        Ok(Self {
            client,
            method,
            url,
            headers,
            body: Bytes::from(recipe.body.clone()),
        })
    }

    fn request(&self) -> reqwest::RequestBuilder {
        self.client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .body(self.body.clone())
    }

    /// Sends the request and reads the whole response, so the latency covers
    /// the last byte, not just the headers.
    pub async fn send(&self) -> Outcome {
        match self.request().send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(_) => Outcome::Status(status),
                    Err(error) => Outcome::from_error(&error),
                }
            }
            Err(error) => Outcome::from_error(&error),
        }
    }

    /// One request whose answer is kept, to check a chain works before loading it.
    pub async fn probe(&self) -> (Outcome, String) {
        match self.request().send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                (Outcome::Status(status), body)
            }
            Err(error) => (Outcome::from_error(&error), error.to_string()),
        }
    }
}

impl Target for Endpoint {
    type Sample = Outcome;

    /// The same request every time; its latency is the loop's to measure.
    fn send(
        &self,
        _n: u64,
        _intended: tokio::time::Instant,
    ) -> impl std::future::Future<Output = Outcome> + Send {
        Endpoint::send(self)
    }
}
