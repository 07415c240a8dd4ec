//! proxy-wasm adapter: reads what the host knows about the request, hands it
//! to the policy, and writes the outcome back. No logic lives here.
//!
//! Host calls go through `filter_common::host` with their errors handled,
//! never through the SDK's helpers, which unwrap (a panic would kill the VM
//! for every stream). Any failure that would skip a check refuses the
//! request; a header the policy reads that is not UTF-8 is refused (400).
//!
//! With `limits_cluster` configured, the root context asks ratelimit-service
//! for the pools' real limits every 2 s (`PoolLimits`, dispatched from the
//! root so the answer comes back to it) and shares the last answer with the
//! streams. On the way back, an upstream error is held (bounded) and
//! rewritten into OpenAI's shape ([`crate::upstream_error`]).
//!
//! Envoy requirements (checked against Envoy 1.40):
//! - the Wasm `PluginConfig` must set `allow_on_headers_stop_iteration: true`
//!   (Envoy >= 1.35). Without it Envoy turns the headers-phase `Pause` into
//!   StopAll, never delivers the body, and every request hangs;
//! - the listener's `per_connection_buffer_limit_bytes` must be at least
//!   `gateway.max_body_bytes`, or Envoy answers its own plain-text 413 first.

use std::cell::RefCell;
use std::rc::Rc;

use admission_proto::v1::{PoolLimitsRequest, PoolLimitsResponse};
use filter_common::headers;
use filter_common::host::{self, send_error};
use filter_common::{IntoGatewayError, non_utf8_header};
use prost::Message;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::buffer_budget::BufferBudget;
use crate::endpoint::{Endpoint, Route};
use crate::pool_limits::{self, PoolLimits};
use crate::routing::WORKLOAD_HEADER;
use crate::upstream_error::{self, MAX_ERROR_BODY, ResponseHead, VIA_UPSTREAM};
use crate::usage_chunk::UsageChunkFilter;
use sha2::{Digest, Sha256};

/// Tells admission the digest of the body the client received (empty:
/// unknown), since this filter changed it after admission saw it.
fn publish_sent_digest(hex_digest: &str) {
    if let Err(e) = host::set_property(headers::RESPONSE_SHA256_STATE, hex_digest.as_bytes()) {
        log::warn!("llm-policy: {e}");
    }
}
use crate::{Policy, PolicyError, admit, check_body_size, decide_body, local_reply};

const ADMISSION_SERVICE: &str = "llmgateway.admission.v1.Admission";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PolicyRoot::default()) });
}}

/// The pools' limits as last answered, shared by the root (writer) and the
/// streams of one worker (readers).
type SharedLimits = Rc<RefCell<Rc<PoolLimits>>>;

#[derive(Default)]
struct PolicyRoot {
    policy: Option<Rc<Policy>>,
    /// Body bytes this worker holds, in all and per tenant.
    budget: Option<Rc<RefCell<BufferBudget>>>,
    limits: SharedLimits,
    /// The `PoolLimits` call in flight: one at a time.
    limits_call: Option<u32>,
    /// Whether the last refresh failed (logged once per failure streak).
    limits_failing: bool,
    /// Whether an answer came since this configuration was loaded.
    limits_known: bool,
}

impl PolicyRoot {
    fn refresh_failed(&mut self, why: &str) {
        if !self.limits_failing {
            log::warn!("llm-policy: pool limits not refreshed ({why}); keeping the last known");
        }
        self.limits_failing = true;
    }

    fn store_limits(&mut self, size: usize) {
        if size > pool_limits::MAX_ANSWER_BYTES {
            return self.refresh_failed("answer too large");
        }
        let answer = match host::buffer(BufferType::GrpcReceiveBuffer, 0, size) {
            Ok(answer) => answer.unwrap_or_default(),
            Err(e) => return self.refresh_failed(&e.to_string()),
        };
        let Ok(response) = PoolLimitsResponse::decode(answer.as_slice()) else {
            return self.refresh_failed("answer does not decode");
        };
        let limits = PoolLimits::from_response(response);
        let stored = match self.limits.try_borrow_mut() {
            Ok(mut shared) => {
                if **shared != limits {
                    log::info!("llm-policy: pool limits now {limits:?}");
                }
                *shared = Rc::new(limits);
                true
            }
            Err(_) => false,
        };
        if !stored {
            return self.refresh_failed("limits in use");
        }
        if !self.limits_known {
            // Known now: the regular period from here on.
            if let Err(e) = host::set_tick_period(pool_limits::REFRESH_INTERVAL) {
                log::warn!("llm-policy: {e}");
            }
            self.limits_known = true;
        }
        self.limits_failing = false;
    }
}

impl Context for PolicyRoot {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, size: usize) {
        if self.limits_call != Some(token) {
            return;
        }
        self.limits_call = None;
        if status_code != 0 {
            return self.refresh_failed(&format!("gRPC status {status_code}"));
        }
        self.store_limits(size);
    }
}

impl RootContext for PolicyRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match host::plugin_configuration() {
            Ok(Some(bytes)) => bytes,
            Ok(None) | Err(_) => {
                log::error!("llm-policy: no configuration given");
                return false;
            }
        };
        match Policy::from_json(&bytes) {
            Ok(policy) => {
                let gateway = &policy.registry.config().gateway;
                self.budget = Some(Rc::new(RefCell::new(BufferBudget::new(
                    gateway.max_buffered_bytes_per_worker,
                    gateway.max_buffered_bytes_per_tenant,
                ))));
                if policy.limits_cluster.is_some()
                    && let Err(e) = host::set_tick_period(pool_limits::FIRST_REFRESH)
                {
                    log::error!("llm-policy: {e}");
                    return false;
                }
                self.policy = Some(Rc::new(policy));
                true
            }
            Err(e) => {
                log::error!("llm-policy: configuration refused: {e}");
                false
            }
        }
    }

    /// Asks for the pools' limits (the tick runs only with `limits_cluster`).
    fn on_tick(&mut self) {
        let Some(cluster) = self.policy.as_ref().and_then(|p| p.limits_cluster.clone()) else {
            return;
        };
        if self.limits_call.is_some() {
            return;
        }
        // Dispatched in the root's tick, so its answer comes back here, and
        // no stream's end can cancel it.
        match host::dispatch_grpc_call(
            &cluster,
            ADMISSION_SERVICE,
            "PoolLimits",
            &PoolLimitsRequest {}.encode_to_vec(),
            pool_limits::CALL_TIMEOUT,
        ) {
            Ok(token) => self.limits_call = Some(token),
            Err(e) => self.refresh_failed(&e.to_string()),
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. Without a policy every request
        // is refused instead.
        Some(Box::new(PolicyFilter {
            policy: self.policy.clone(),
            budget: self.budget.clone(),
            limits: self.limits.clone(),
            pending: None,
            held: 0,
            usage_chunk: None,
            sent_digest: None,
            forwarded: false,
            error_status: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// An admitted inference request waiting for its body.
struct Pending {
    tenant_id: String,
    endpoint: Endpoint,
    workload: Option<String>,
}

struct PolicyFilter {
    policy: Option<Rc<Policy>>,
    budget: Option<Rc<RefCell<BufferBudget>>>,
    limits: SharedLimits,
    pending: Option<Pending>,
    /// Body bytes this request holds in the worker's budget.
    held: u64,
    /// Set when the gateway forced a usage chunk the client did not ask for.
    usage_chunk: Option<UsageChunkFilter>,
    /// Digest of the stream as this filter passed it on (while it edits it),
    /// for the audit trail.
    sent_digest: Option<Sha256>,
    /// The request went on towards a pool: its response may be the pool's.
    forwarded: bool,
    /// The status of an upstream error whose body is being held to rewrite.
    error_status: Option<u16>,
}

impl Context for PolicyFilter {}

/// Why a request header could not be read as text.
enum HeaderFault {
    Host,
    NonUtf8(&'static str),
}

fn request_header(name: &'static str) -> Result<Option<String>, HeaderFault> {
    let raw = host::header(MapType::HttpRequestHeaders, name).map_err(|_| HeaderFault::Host)?;
    host::text(raw).map_err(|_| HeaderFault::NonUtf8(name))
}

fn set_request_header(name: &str, value: Option<&str>) -> Result<(), PolicyError> {
    host::set_header(
        MapType::HttpRequestHeaders,
        name.as_bytes(),
        value.map(str::as_bytes),
    )
    .map_err(|_| PolicyError::HostFailure("cannot set a request header"))
}

/// The request headers the policy reads, all present as text or refused.
struct RequestLine {
    tenant_id: Option<String>,
    tier: Option<String>,
    method: String,
    path: String,
    content_length: Option<String>,
    workload: Option<String>,
}

fn request_line() -> Result<RequestLine, HeaderFault> {
    Ok(RequestLine {
        tenant_id: request_header(headers::TENANT_ID)?,
        tier: request_header(headers::TENANT_TIER)?,
        method: request_header(":method")?.unwrap_or_default(),
        path: request_header(":path")?.unwrap_or_default(),
        content_length: request_header("content-length")?,
        workload: request_header(WORKLOAD_HEADER)?,
    })
}

impl Drop for PolicyFilter {
    fn drop(&mut self) {
        self.release_body();
    }
}

/// A response header as bytes (empty when absent or unreadable).
fn response_header(name: &str) -> Vec<u8> {
    host::header(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The response's status, when it reads as one.
fn response_status() -> Option<u16> {
    std::str::from_utf8(&response_header(":status"))
        .ok()?
        .parse()
        .ok()
}

impl PolicyFilter {
    /// The pools' limits as last learned (unknown when none were).
    fn pool_limits(&self) -> Rc<PoolLimits> {
        self.limits
            .try_borrow()
            .map(|limits| Rc::clone(&limits))
            .unwrap_or_default()
    }

    /// Whether to hold an error response's headers and body to rewrite them.
    fn holds_error(&self, status: u16) -> bool {
        if status < 400 {
            return false;
        }
        let content_type = response_header("content-type");
        let content_length = std::str::from_utf8(&response_header("content-length"))
            .ok()
            .and_then(|v| v.trim().parse().ok());
        // Only what the pool sent: the gateway's own replies (filters',
        // Envoy's mapped local replies) are already in OpenAI's shape.
        let from_upstream = host::property(&["response", "code_details"])
            .ok()
            .flatten()
            .is_some_and(|details| details == VIA_UPSTREAM);
        upstream_error::wants_body(&ResponseHead {
            status,
            content_type: &content_type,
            content_length,
            from_upstream,
        })
    }

    /// Holds an upstream error's body up to [`MAX_ERROR_BODY`], then writes it
    /// back in OpenAI's shape with its new length. Past the bound it goes on
    /// untouched.
    fn rewrite_error(&mut self, status: u16, body_size: usize, end_of_stream: bool) -> Action {
        if body_size > MAX_ERROR_BODY {
            self.error_status = None;
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.error_status = None;
        let body = match host::buffer(BufferType::HttpResponseBody, 0, body_size) {
            Ok(body) => body.unwrap_or_default(),
            Err(e) => {
                log::warn!("llm-policy: {e}");
                return Action::Continue;
            }
        };
        let Some(rewritten) = upstream_error::rewrite(status, &body) else {
            return Action::Continue;
        };
        if let Err(e) = host::set_buffer(BufferType::HttpResponseBody, 0, body_size, &rewritten) {
            log::warn!("llm-policy: {e}");
            return Action::Continue;
        }
        let length = rewritten.len().to_string();
        if let Err(e) = host::set_header(
            MapType::HttpResponseHeaders,
            b"content-length",
            Some(length.as_bytes()),
        ) {
            // The length must match the body: put the original back.
            log::warn!("llm-policy: {e}");
            if let Err(e) =
                host::set_buffer(BufferType::HttpResponseBody, 0, rewritten.len(), &body)
            {
                log::error!("llm-policy: {e}");
            }
            return Action::Continue;
        }
        publish_sent_digest(&hex::encode(Sha256::digest(&rewritten)));
        Action::Continue
    }

    /// Counts the body bytes buffered so far against the worker's and the
    /// tenant's bounds.
    fn hold_body(&mut self, size: usize) -> Result<(), PolicyError> {
        let (Some(budget), Some(pending)) = (&self.budget, &self.pending) else {
            return Ok(());
        };
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        budget
            .borrow_mut()
            .grow(&pending.tenant_id, self.held, size)?;
        self.held = self.held.max(size);
        Ok(())
    }

    fn release_body(&mut self) {
        if self.held == 0 {
            return;
        }
        if let (Some(budget), Some(pending)) = (&self.budget, &self.pending) {
            budget.borrow_mut().release(&pending.tenant_id, self.held);
        }
        self.held = 0;
    }

    fn refuse(&mut self, error: PolicyError) -> Action {
        log::info!("llm-policy: refused: {error}");
        self.release_body();
        self.pending = None;
        send_error(&error.into_gateway_error());
        Action::Pause
    }

    fn reply_json(&mut self, body: &[u8]) -> Action {
        let headers: [(&str, &[u8]); 1] = [("content-type", b"application/json")];
        if let Err(e) = host::send_reply(200, &headers, body) {
            log::error!("llm-policy: {e}");
        }
        Action::Pause
    }

    /// Runs the policy on the complete body and applies the decision.
    fn finish(&mut self, policy: &Policy, body: &[u8]) -> Action {
        // The body is judged now; Envoy holds it on past here, but no longer
        // waiting on this filter.
        self.release_body();
        let Some(pending) = self.pending.take() else {
            return Action::Continue;
        };
        let Some(tenant) = policy.registry.tenant(&pending.tenant_id) else {
            return self.refuse(PolicyError::UnknownTenant(pending.tenant_id));
        };
        let limits = self.pool_limits();
        let decision = match decide_body(
            policy,
            &limits,
            tenant,
            pending.endpoint,
            pending.workload.as_deref(),
            body,
        ) {
            Ok(decision) => decision,
            Err(e) => return self.refuse(e),
        };
        if let Err(e) = self.apply(&decision, body.len()) {
            return self.refuse(e);
        }
        if decision.forced_usage.any() {
            self.usage_chunk = Some(UsageChunkFilter::new(decision.forced_usage));
        }
        self.forwarded = true;
        log::debug!(
            "llm-policy: {} {} -> pool {} ({}), prompt ~{} tokens, output {}",
            pending.tenant_id,
            decision.model,
            decision.pool,
            decision.workload.as_str(),
            decision.prompt_tokens,
            decision.reserved_output_tokens
        );
        Action::Continue
    }

    fn apply(&self, decision: &crate::Decision, original_len: usize) -> Result<(), PolicyError> {
        for (name, value) in decision.upstream_headers() {
            set_request_header(name, Some(&value))?;
        }
        let length = match &decision.body {
            Some(new_body) => {
                host::set_buffer(BufferType::HttpRequestBody, 0, original_len, new_body)
                    .map_err(|_| PolicyError::HostFailure("cannot replace the request body"))?;
                new_body.len()
            }
            None => original_len,
        };
        set_request_header("content-length", Some(&length.to_string()))?;
        // The route was chosen on the headers as they arrived; x-llm-pool is
        // new, so Envoy must match again. Older Envoys without the foreign
        // function clear the cache on header writes themselves.
        if let Err(e) = host::call_foreign_function("clear_route_cache", &[]) {
            log::debug!("llm-policy: clear_route_cache unavailable: {e}");
        }
        Ok(())
    }
}

impl HttpContext for PolicyFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.refuse(PolicyError::NotConfigured);
        };
        let line = match request_line() {
            Ok(line) => line,
            Err(HeaderFault::NonUtf8(name)) => {
                self.pending = None;
                send_error(&non_utf8_header(name));
                return Action::Pause;
            }
            Err(HeaderFault::Host) => {
                return self.refuse(PolicyError::HostFailure("cannot read the request headers"));
            }
        };
        let admitted = match admit(
            &policy,
            line.tenant_id.as_deref(),
            line.tier.as_deref(),
            &line.method,
            &line.path,
        ) {
            Ok(admitted) => admitted,
            Err(e) => return self.refuse(e),
        };
        match local_reply(&policy, &self.pool_limits(), &admitted) {
            Some(Ok(body)) => return self.reply_json(&body),
            Some(Err(e)) => return self.refuse(e),
            None => {}
        }
        let Route::Inference(endpoint) = admitted.route else {
            return self.refuse(PolicyError::HostFailure("unexpected route"));
        };
        let announced = line
            .content_length
            .as_deref()
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(Err(e)) = announced.map(|len| check_body_size(&policy, len)) {
            return self.refuse(e);
        }
        self.pending = Some(Pending {
            tenant_id: admitted.tenant.id.to_string(),
            endpoint,
            workload: line.workload,
        });
        if end_of_stream {
            return self.finish(&policy, &[]);
        }
        // Hold the headers until the body is in: the pool, the prefix key and
        // the body length are only known then.
        if let Err(e) = set_request_header("content-length", None) {
            return self.refuse(e);
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.pending.is_none() {
            return Action::Continue;
        }
        let Some(policy) = self.policy.clone() else {
            return self.refuse(PolicyError::NotConfigured);
        };
        if let Err(e) = check_body_size(&policy, u64::try_from(body_size).unwrap_or(u64::MAX)) {
            return self.refuse(e);
        }
        if let Err(e) = self.hold_body(body_size) {
            return self.refuse(e);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = match host::buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(body) => body.unwrap_or_default(),
            Err(_) => return self.refuse(PolicyError::HostFailure("cannot read the request body")),
        };
        self.finish(&policy, &body)
    }

    /// A body followed by trailers ends here rather than with end_of_stream.
    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        if self.pending.is_none() {
            return Action::Continue;
        }
        let Some(policy) = self.policy.clone() else {
            return self.refuse(PolicyError::NotConfigured);
        };
        let body = match host::buffer(BufferType::HttpRequestBody, 0, usize::MAX) {
            Ok(body) => body.unwrap_or_default(),
            Err(_) => return self.refuse(PolicyError::HostFailure("cannot read the request body")),
        };
        self.finish(&policy, &body)
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        // Local replies to requests this filter did not pass on are the
        // gateway's own: nothing to strip or rewrite.
        if !self.forwarded {
            return Action::Continue;
        }
        let status = response_status();
        if self.usage_chunk.is_some() {
            // Only a successful event stream carries the forced usage chunk.
            let streaming = status == Some(200)
                && response_header("content-type").starts_with(b"text/event-stream");
            if streaming {
                self.sent_digest = Some(Sha256::new());
            } else {
                self.usage_chunk = None;
            }
        }
        if let Some(status) = status
            && !end_of_stream
            && self.holds_error(status)
        {
            // The headers wait for the body: its length may change.
            self.error_status = Some(status);
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(status) = self.error_status {
            return self.rewrite_error(status, body_size, end_of_stream);
        }
        let Some(usage_chunk) = self.usage_chunk.as_mut() else {
            return Action::Continue;
        };
        let chunk = match host::buffer(BufferType::HttpResponseBody, 0, body_size) {
            Ok(chunk) => chunk.unwrap_or_default(),
            Err(e) => {
                // Cannot see the stream: let it pass untouched from here on.
                log::warn!("llm-policy: {e}");
                self.usage_chunk = None;
                if self.sent_digest.take().is_some() {
                    publish_sent_digest("");
                }
                return Action::Continue;
            }
        };
        let mut out = usage_chunk.feed(&chunk);
        if end_of_stream {
            out.extend(usage_chunk.finish());
        }
        if let Some(digest) = self.sent_digest.as_mut() {
            digest.update(&out);
        }
        if end_of_stream && let Some(digest) = self.sent_digest.take() {
            publish_sent_digest(&hex::encode(digest.finalize()));
        }
        if out != chunk
            && let Err(e) = host::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out)
        {
            log::warn!("llm-policy: {e}");
        }
        Action::Continue
    }

    /// Trailers after an error body (not vLLM's way): the body goes on as it
    /// is rather than being rewritten this late.
    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        self.error_status = None;
        Action::Continue
    }
}
