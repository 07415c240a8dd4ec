//! The policy phase's host side, run by the gateway module: the pools' limits learned by the root
//! ([`LimitsRefresher`]) and one request's way through the policy
//! ([`PolicyStream`]): headers, the buffered body, the decision applied,
//! and on the way back the pool's errors in OpenAI's shape and the forced
//! usage chunk removed.
//!
//! Host calls go through `filter_common::host` with their errors handled,
//! never through the SDK's helpers, which unwrap (a panic would kill the VM
//! for every stream). Any failure that would skip a check refuses the
//! request.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::SystemTime;

use admission_proto::v1::{PoolLimitsRequest, PoolLimitsResponse};
use filter_common::headers::HeaderSnapshot;
use filter_common::host::{self, send_error};
use filter_common::{GatewayError, IntoGatewayError, non_utf8_header};
use prost::Message;
use proxy_wasm::types::{Action, BufferType, MapType};
use sha2::{Digest, Sha256};
use tenant_registry::TenantId;

use crate::buffer_budget::BufferBudget;
use crate::endpoint::{Endpoint, Route};
use crate::pool_limits::{self, PoolLimits};
use crate::routing::WORKLOAD_HEADER;
use crate::upstream_error::{self, MAX_ERROR_BODY, ResponseHead, VIA_UPSTREAM};
use crate::usage_chunk::UsageChunkFilter;
use crate::{Decision, Policy, PolicyError, admit, check_body_size, decide_body, local_reply};

const ADMISSION_SERVICE: &str = "llmgateway.admission.v1.Admission";

/// The pools' limits as last answered, shared by the root (writer) and the
/// streams of one worker (readers).
pub type SharedLimits = Rc<RefCell<Rc<PoolLimits>>>;

/// The root context's part: asks ratelimit-service for the pools' limits
/// (every [`pool_limits::REFRESH_INTERVAL`], faster until the first
/// answer) and shares the last answer with the streams.
#[derive(Default)]
pub struct LimitsRefresher {
    limits: SharedLimits,
    /// The `PoolLimits` call in flight: one at a time.
    call: Option<u32>,
    last_ask: Option<SystemTime>,
    /// Whether the last refresh failed (logged once per failure streak).
    failing: bool,
    /// Whether an answer came since this configuration was loaded.
    known: bool,
}

impl LimitsRefresher {
    /// The limits the streams read.
    pub fn limits(&self) -> SharedLimits {
        Rc::clone(&self.limits)
    }

    /// How often the root should tick for this refresher alone.
    pub fn period(&self) -> std::time::Duration {
        if self.known {
            pool_limits::REFRESH_INTERVAL
        } else {
            pool_limits::FIRST_REFRESH
        }
    }

    fn refresh_failed(&mut self, why: &str) {
        if !self.failing {
            log::warn!("llm-policy: pool limits not refreshed ({why}); keeping the last known");
        }
        self.failing = true;
    }

    /// Asks `cluster` for the limits when a period has passed since the
    /// last ask (a root ticking faster for other work calls this on every
    /// tick). Dispatched from the root, so the answer comes back to it and
    /// no stream's end can cancel it.
    pub fn on_tick(&mut self, cluster: &str) {
        if self.call.is_some() {
            return;
        }
        let now = host::now_or_epoch();
        // A tick a little early still counts: the host's timer is not exact.
        let period = self.period().mul_f32(0.75);
        if let Some(last) = self.last_ask
            && now
                .duration_since(last)
                .is_ok_and(|elapsed| elapsed < period)
        {
            return;
        }
        self.last_ask = Some(now);
        match host::dispatch_grpc_call(
            cluster,
            ADMISSION_SERVICE,
            "PoolLimits",
            &PoolLimitsRequest {}.encode_to_vec(),
            pool_limits::CALL_TIMEOUT,
        ) {
            Ok(token) => self.call = Some(token),
            Err(e) => self.refresh_failed(&e.to_string()),
        }
    }

    /// An answer to a root call: `false` when it is not this refresher's.
    pub fn on_call_answer(&mut self, token: u32, status_code: u32, size: usize) -> bool {
        if self.call != Some(token) {
            return false;
        }
        self.call = None;
        if status_code != 0 {
            self.refresh_failed(&format!("gRPC status {status_code}"));
        } else {
            self.store(size);
        }
        true
    }

    fn store(&mut self, size: usize) {
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
        self.known = true;
        self.failing = false;
    }
}

/// What the policy reads from the request line and headers besides the
/// tenant, all as text.
pub struct RequestLine {
    pub method: String,
    pub path: String,
    pub content_length: Option<String>,
    pub workload: Option<String>,
}

/// Why a request header could not be read as text.
pub enum HeaderFault {
    NonUtf8(&'static str),
}

impl RequestLine {
    /// The request line and the headers the policy reads, from the
    /// request's headers as they arrived.
    pub fn read(headers: &HeaderSnapshot) -> Result<Self, HeaderFault> {
        let text = |name: &'static str| headers.text(name).map_err(|_| HeaderFault::NonUtf8(name));
        Ok(Self {
            method: text(":method")?.unwrap_or_default(),
            path: text(":path")?.unwrap_or_default(),
            content_length: text("content-length")?,
            workload: text(WORKLOAD_HEADER)?,
        })
    }
}

/// An admitted inference request waiting for its body.
struct Pending {
    tenant_id: TenantId,
    endpoint: Endpoint,
    workload: Option<String>,
}

/// One request's way through the policy.
pub struct PolicyStream {
    policy: Option<Rc<Policy>>,
    budget: Option<Rc<RefCell<BufferBudget>>>,
    limits: SharedLimits,
    pending: Option<Pending>,
    /// Body bytes this request holds in the worker's budget.
    held: u64,
    /// The decision applied to the request (its new body dropped).
    decision: Option<Decision>,
    /// Bytes of the body as sent upstream to keep for the audit trail.
    keep_body: usize,
    kept_body: Vec<u8>,
    /// Length of the body as sent upstream.
    sent_len: usize,
    /// Set when the gateway forced a usage chunk the client did not ask for.
    usage_chunk: Option<UsageChunkFilter>,
    /// Digest of the stream as this phase passed it on (while it edits it),
    /// for the audit trail.
    sent_digest: Option<Sha256>,
    /// The digest of what the client got, once known (empty: unknown).
    sent_digest_hex: Option<String>,
    /// The request went on towards a pool: its response may be the pool's.
    forwarded: bool,
    /// The status of an upstream error whose body is being held to rewrite.
    error_status: Option<u16>,
    /// Refusals are kept instead of sent (see [`Self::hold_refusals`]).
    hold_refusals: bool,
    held_refusal: Option<GatewayError>,
}

fn set_request_header(name: &str, value: Option<&str>) -> Result<(), PolicyError> {
    host::set_header(
        MapType::HttpRequestHeaders,
        name.as_bytes(),
        value.map(str::as_bytes),
    )
    .map_err(|_| PolicyError::HostFailure("cannot set a request header"))
}

/// A response header as bytes (empty when absent).
fn response_header<'a>(headers: &'a HeaderSnapshot, name: &str) -> &'a [u8] {
    headers.get(name).unwrap_or_default()
}

/// The response's status, when it reads as one.
fn response_status(headers: &HeaderSnapshot) -> Option<u16> {
    std::str::from_utf8(response_header(headers, ":status"))
        .ok()?
        .parse()
        .ok()
}

impl Drop for PolicyStream {
    fn drop(&mut self) {
        self.release_body();
    }
}

impl PolicyStream {
    pub fn new(
        policy: Option<Rc<Policy>>,
        budget: Option<Rc<RefCell<BufferBudget>>>,
        limits: SharedLimits,
    ) -> Self {
        Self {
            policy,
            budget,
            limits,
            pending: None,
            held: 0,
            decision: None,
            keep_body: 0,
            kept_body: Vec::new(),
            sent_len: 0,
            usage_chunk: None,
            sent_digest: None,
            sent_digest_hex: None,
            forwarded: false,
            error_status: None,
            hold_refusals: false,
            held_refusal: None,
        }
    }

    /// While on, a refusal is kept ([`Self::take_held_refusal`]) instead of
    /// sent: the gateway module sends it once the OPEN admission has
    /// answered, so that lease is never left behind by a stream that ended
    /// before its answer came.
    pub fn hold_refusals(&mut self, hold: bool) {
        self.hold_refusals = hold;
    }

    pub fn holds_refusal(&self) -> bool {
        self.held_refusal.is_some()
    }

    pub fn take_held_refusal(&mut self) -> Option<GatewayError> {
        self.held_refusal.take()
    }

    /// The worker's body budget for `policy`.
    pub fn budget_for(policy: &Policy) -> Rc<RefCell<BufferBudget>> {
        let gateway = &policy.registry.config().gateway;
        Rc::new(RefCell::new(BufferBudget::new(
            gateway.max_buffered_bytes_per_worker,
            gateway.max_buffered_bytes_per_tenant,
        )))
    }

    /// The decision applied, once the body was judged.
    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    /// Whether the request waits for its body.
    pub fn awaits_body(&self) -> bool {
        self.pending.is_some()
    }

    /// Keep up to `bytes` of the body as it goes upstream ([`Self::kept_body`]).
    pub fn keep_body(&mut self, bytes: usize) {
        self.keep_body = bytes;
    }

    /// The start of the body as sent upstream (as much as was asked
    /// for), and the whole body's length.
    pub fn kept_body(&self) -> (&[u8], usize) {
        (&self.kept_body, self.sent_len)
    }

    /// The digest of the response as the client got it, when this phase
    /// changed it (empty: it lost sight of it); once.
    pub fn take_sent_digest(&mut self) -> Option<String> {
        self.sent_digest_hex.take()
    }

    /// The pools' limits as last learned (unknown when none were).
    fn pool_limits(&self) -> Rc<PoolLimits> {
        self.limits
            .try_borrow()
            .map(|limits| Rc::clone(&limits))
            .unwrap_or_default()
    }

    /// A header the policy reads could not be: not UTF-8 is 400
    /// `invalid_header`.
    pub fn header_fault(&mut self, fault: HeaderFault) -> Action {
        match fault {
            HeaderFault::NonUtf8(name) => {
                send_error(&non_utf8_header(name));
                Action::Pause
            }
        }
    }

    /// Refuses the request with `error` (the reply is sent, or held).
    pub fn refuse(&mut self, error: PolicyError) -> Action {
        log::info!("llm-policy: refused: {error}");
        self.release_body();
        self.pending = None;
        let error = error.into_gateway_error();
        if self.hold_refusals {
            self.held_refusal = Some(error);
        } else {
            send_error(&error);
        }
        Action::Pause
    }

    fn reply_json(&mut self, body: &[u8]) -> Action {
        let headers: [(&str, &[u8]); 1] = [("content-type", b"application/json")];
        if let Err(e) = host::send_reply(200, &headers, body) {
            log::error!("llm-policy: {e}");
        }
        Action::Pause
    }

    /// The headers of a request from `tenant_id` (authenticated): a local
    /// reply, a refusal (both `Pause`, the reply sent), a wait for the body
    /// (`Pause`, [`Self::awaits_body`]), or, without a body, the decision
    /// applied (`Continue`).
    pub fn on_request_headers(
        &mut self,
        tenant_id: Option<&str>,
        tier: Option<&str>,
        line: RequestLine,
        end_of_stream: bool,
    ) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.refuse(PolicyError::NotConfigured);
        };
        let admitted = match admit(&policy, tenant_id, tier, &line.method, &line.path) {
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
            tenant_id: admitted.tenant.id.clone(),
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

    /// A body chunk: `Pause` until the body is complete, then the decision
    /// applied (`Continue`) or the refusal sent (`Pause`).
    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
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
    pub fn on_request_trailers(&mut self) -> Action {
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

    /// Runs the policy on the complete body and applies the decision.
    fn finish(&mut self, policy: &Policy, body: &[u8]) -> Action {
        // The body is judged now; Envoy holds it on past here, but no longer
        // waiting on this phase.
        self.release_body();
        let Some(pending) = self.pending.take() else {
            return Action::Continue;
        };
        let Some(tenant) = policy.registry.tenant(&pending.tenant_id) else {
            return self.refuse(PolicyError::UnknownTenant(pending.tenant_id.to_string()));
        };
        let limits = self.pool_limits();
        let mut decision = match decide_body(
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
        let sent = decision.body.take();
        let sent = sent.as_deref().unwrap_or(body);
        self.sent_len = sent.len();
        self.kept_body = sent
            .get(..self.keep_body.min(sent.len()))
            .unwrap_or_default()
            .to_vec();
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
        self.decision = Some(decision);
        Action::Continue
    }

    fn apply(&self, decision: &Decision, original_len: usize) -> Result<(), PolicyError> {
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

    /// Whether to hold an error response's headers and body to rewrite them.
    fn holds_error(&self, status: u16, headers: &HeaderSnapshot) -> bool {
        if status < 400 {
            return false;
        }
        let content_type = response_header(headers, "content-type");
        let content_length = std::str::from_utf8(response_header(headers, "content-length"))
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
            content_type,
            content_length,
            from_upstream,
        })
    }

    /// Whether an error body is being held to rewrite (each body callback
    /// then sees all of it so far).
    pub fn holds_error_body(&self) -> bool {
        self.error_status.is_some()
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
        self.sent_digest_hex = Some(crate::cache_key::hex_digest(&Sha256::digest(&rewritten)));
        Action::Continue
    }

    /// Whether this phase reads the response's headers: only for a request
    /// it passed on (the gateway's own replies are left as they are).
    pub fn reads_response_headers(&self) -> bool {
        self.forwarded
    }

    /// The response's headers arrived (`headers`: as the pool sent them).
    pub fn on_response_headers(&mut self, end_of_stream: bool, headers: &HeaderSnapshot) -> Action {
        // Local replies to requests this phase did not pass on are the
        // gateway's own: nothing to strip or rewrite.
        if !self.reads_response_headers() {
            return Action::Continue;
        }
        let status = response_status(headers);
        if self.usage_chunk.is_some() {
            // Only a successful event stream carries the forced usage chunk.
            let streaming = status == Some(200)
                && response_header(headers, "content-type").starts_with(b"text/event-stream");
            if streaming {
                self.sent_digest = Some(Sha256::new());
            } else {
                self.usage_chunk = None;
            }
        }
        if let Some(status) = status
            && !end_of_stream
            && self.holds_error(status, headers)
        {
            // The headers wait for the body: its length may change.
            self.error_status = Some(status);
            return Action::Pause;
        }
        Action::Continue
    }

    /// A response body chunk of `body_size` bytes; `read`: those bytes when
    /// the caller already copied them out of the host (else they are read
    /// here, only if this phase needs them).
    pub fn on_response_body(
        &mut self,
        body_size: usize,
        end_of_stream: bool,
        read: Option<&[u8]>,
    ) -> Action {
        if let Some(status) = self.error_status {
            return self.rewrite_error(status, body_size, end_of_stream);
        }
        let Some(usage_chunk) = self.usage_chunk.as_mut() else {
            return Action::Continue;
        };
        let chunk = match read.map_or_else(
            || host::buffer(BufferType::HttpResponseBody, 0, body_size),
            |bytes| Ok(Some(bytes.to_vec())),
        ) {
            Ok(chunk) => chunk.unwrap_or_default(),
            Err(e) => {
                // Cannot see the stream: let it pass untouched from here on.
                log::warn!("llm-policy: {e}");
                self.usage_chunk = None;
                if self.sent_digest.take().is_some() {
                    self.sent_digest_hex = Some(String::new());
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
            self.sent_digest_hex = Some(crate::cache_key::hex_digest(&digest.finalize()));
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
    pub fn on_response_trailers(&mut self) -> Action {
        self.error_status = None;
        Action::Continue
    }
}
