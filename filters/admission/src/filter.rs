//! proxy-wasm adapter of the admission filter.
//!
//! Reports and lease renewals are dispatched from the root context: a call
//! owned by a stream context is cancelled when that stream ends, and a
//! report is exactly what must outlive the stream. Reports are buffered and
//! flushed on the root's tick as one `CompleteBatch` call ([`ReportBuffer`]).
//!
//! Every host call goes through `filter_common::host` (fallible, headers as
//! bytes): nothing a client or the pool sends can reach an unwrap inside
//! the VM.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use admission_proto::v1::{
    AdmitResponse, CompleteBatchRequest, CompleteRequest, Outcome, RateLimitInfo, RenewRequest,
};
use filter_common::headers;
use filter_common::host::{self, send_error};
use hashbrown::HashSet;
use prost::Message;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::{
    Admission, AuditCapture, CompiledConfig, FilterPhase, ReportBuffer, RequestFacts, UsageTracker,
    admit_request, digest_bytes, is_inference, open_request, rate_limit_headers, unavailable,
};

const SERVICE: &str = "llmgateway.admission.v1.Admission";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(AdmissionRoot {
            id: context_id,
            shared: None,
            last_renew: None,
            final_flush: None,
        })
    });
}}

/// Envoy counters (in its `/stats` and Prometheus output) of requests that
/// passed unmetered or were refused because ratelimit-service did not answer.
struct FailureCounters {
    fail_open: Option<u32>,
    fail_closed: Option<u32>,
}

impl FailureCounters {
    fn define() -> Self {
        let define = |name: &str| host::define_counter(name).ok();
        Self {
            fail_open: define("llm_gateway.admission.fail_open"),
            fail_closed: define("llm_gateway.admission.fail_closed"),
        }
    }

    fn count(id: Option<u32>) {
        host::increment(id, 1);
    }
}

/// State shared by the root context and the streams of one VM (one worker).
struct Shared {
    config: CompiledConfig,
    counters: FailureCounters,
    root_id: u32,
    /// Leases held by this worker, renewed every `renew_interval`.
    leases: RefCell<HashSet<String>>,
    /// Reports of ended requests, waiting for the next flush.
    reports: RefCell<ReportBuffer<CompleteRequest>>,
}

impl Shared {
    /// Buffers a report; sends the buffer now if that filled it.
    fn report(&self, current: u32, report: CompleteRequest) {
        let bytes = report.encoded_len();
        let full = self.reports.borrow_mut().push(report, bytes);
        if let Some(reports) = full {
            self.send_reports(current, reports);
        }
    }

    /// Sends `reports` in one call; its token, or `None` when not sent.
    fn send_reports(&self, current: u32, reports: Vec<CompleteRequest>) -> Option<u32> {
        let message = CompleteBatchRequest { reports }.encode_to_vec();
        self.dispatch_from_root(current, "CompleteBatch", &message)
    }

    /// Dispatches a unary call owned by the root context; `current` is the
    /// calling context, restored afterwards. Returns the call's token, or
    /// `None` when it was not sent (logged here).
    fn dispatch_from_root(&self, current: u32, method: &str, message: &[u8]) -> Option<u32> {
        if host::set_effective_context(self.root_id).is_err() {
            log::warn!("admission: cannot switch to root context; {method} not sent");
            return None;
        }
        let sent = host::dispatch_grpc_call(
            &self.config.cluster,
            SERVICE,
            method,
            message,
            self.config.report_timeout,
        );
        if let Err(e) = &sent {
            log::warn!("admission: {method} not sent: {e}");
        }
        let _ = host::set_effective_context(current);
        sent.ok()
    }
}

struct AdmissionRoot {
    id: u32,
    shared: Option<Rc<Shared>>,
    last_renew: Option<SystemTime>,
    /// The call carrying the last reports, sent from `on_done`.
    final_flush: Option<u32>,
}

impl Context for AdmissionRoot {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, _size: usize) {
        if status_code != 0 {
            log::warn!("admission: report/renew call failed with gRPC status {status_code}");
        }
        if self.final_flush == Some(token) {
            self.final_flush = None;
            // The last reports are answered: Envoy may delete this context.
            if host::done().is_err() {
                log::warn!("admission: host refused proxy_done");
            }
        }
    }

    /// Envoy is done with this root context: its configuration was replaced
    /// (every registry reload) or Envoy is stopping, and its last streams
    /// have ended, their reports still in the buffer with no tick to come.
    /// They leave now, and the context asks to stay until they are answered,
    /// since deleting it would cancel the call.
    fn on_done(&mut self) -> bool {
        let Some(shared) = self.shared.clone() else {
            return true;
        };
        let Some(reports) = shared.reports.borrow_mut().drain() else {
            return true;
        };
        self.final_flush = shared.send_reports(self.id, reports);
        self.final_flush.is_none()
    }
}

impl RootContext for AdmissionRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Ok(Some(bytes)) = host::plugin_configuration() else {
            log::error!("admission: no configuration given");
            return false;
        };
        match CompiledConfig::from_json(&bytes) {
            Ok(config) => {
                if let Err(e) = host::set_tick_period(config.report_flush) {
                    log::error!("admission: {e}");
                    return false;
                }
                self.shared = Some(Rc::new(Shared {
                    config,
                    counters: FailureCounters::define(),
                    root_id: self.id,
                    leases: RefCell::new(HashSet::new()),
                    reports: RefCell::new(ReportBuffer::default()),
                }));
                true
            }
            Err(e) => {
                log::error!("admission: configuration refused: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let pending = shared.reports.borrow_mut().drain();
        if let Some(reports) = pending {
            shared.send_reports(self.id, reports);
        }
        let now = host::now_or_epoch();
        // A clock that went back counts as due rather than stalling renewals.
        let due = self
            .last_renew
            .is_none_or(|last| match now.duration_since(last) {
                Ok(elapsed) => elapsed >= shared.config.renew_interval,
                Err(_) => true,
            });
        if !due {
            return;
        }
        self.last_renew = Some(now);
        let lease_ids: Vec<String> = shared.leases.borrow().iter().cloned().collect();
        if lease_ids.is_empty() {
            return;
        }
        let message = RenewRequest { lease_ids }.encode_to_vec();
        shared.dispatch_from_root(self.id, "Renew", &message);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. An unconfigured root refuses.
        Some(Box::new(AdmissionFilter {
            id: context_id,
            shared: self.shared.clone(),
            tier: String::new(),
            admit_token: None,
            lease: None,
            rate_limit: None,
            usage: None,
            admitted_at: None,
            first_byte_at: None,
            upstream: UpstreamStatus::Answered,
            credential: String::new(),
            request_sha256: None,
            audit: None,
            response_ended: false,
            traceparent: String::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AdmissionFilter {
    id: u32,
    shared: Option<Rc<Shared>>,
    tier: String,
    admit_token: Option<u32>,
    lease: Option<String>,
    rate_limit: Option<RateLimitInfo>,
    usage: Option<UsageTracker>,
    admitted_at: Option<SystemTime>,
    first_byte_at: Option<SystemTime>,
    /// What the pool's status said, for the report.
    upstream: UpstreamStatus,
    /// Who authenticated and the request body's digest, for the audit trail.
    credential: String,
    request_sha256: Option<String>,
    /// Gathered for the audit record from admission to the report.
    audit: Option<AuditCapture>,
    /// The response's last chunk went through.
    response_ended: bool,
    /// The request's trace context, for the settle span.
    traceparent: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamStatus {
    Answered,
    /// 4xx: the pool refused; nothing was generated.
    Refused,
    /// 5xx.
    Failed,
}

/// A header the gateway's own filters set, as text (`None` if absent, not
/// UTF-8, or unreadable: the request is then treated as unmetered input).
fn header_text(map: MapType, name: &str) -> Option<String> {
    match host::header(map, name) {
        Ok(raw) => raw.and_then(|bytes| String::from_utf8(bytes).ok()),
        Err(e) => {
            log::warn!("admission: {e}");
            None
        }
    }
}

fn millis_between(from: Option<SystemTime>, to: SystemTime) -> u64 {
    from.and_then(|f| to.duration_since(f).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const REQUEST: MapType = MapType::HttpRequestHeaders;
const RESPONSE: MapType = MapType::HttpResponseHeaders;

fn set_request_header(name: &str, value: Option<&str>) {
    if let Err(e) = host::set_header(REQUEST, name.as_bytes(), value.map(str::as_bytes)) {
        log::warn!("admission: {e}");
    }
}

impl AdmissionFilter {
    fn facts() -> RequestFacts {
        RequestFacts {
            tenant: header_text(REQUEST, headers::TENANT_ID),
            tier: header_text(REQUEST, headers::TENANT_TIER),
            model: header_text(REQUEST, headers::MODEL),
            pool: header_text(REQUEST, headers::POOL),
            prompt_tokens: header_text(REQUEST, headers::PROMPT_TOKENS),
            max_tokens: header_text(REQUEST, headers::MAX_TOKENS),
            request_id: header_text(REQUEST, headers::REQUEST_ID),
            credential: header_text(REQUEST, headers::CREDENTIAL),
            request_sha256: header_text(REQUEST, headers::REQUEST_SHA256),
            traceparent: header_text(REQUEST, headers::TRACEPARENT),
        }
    }

    /// The service could not answer: the tier's failure mode decides.
    fn on_service_unavailable(&mut self, shared: &Shared, why: &str) -> Action {
        match unavailable(shared.config.fail_mode(&self.tier)) {
            None => {
                FailureCounters::count(shared.counters.fail_open);
                log::warn!("admission: {why}; tier {:?} fails open", self.tier);
                set_request_header(headers::ADMISSION_BYPASSED, Some("bypassed"));
                Action::Continue
            }
            Some(error) => {
                FailureCounters::count(shared.counters.fail_closed);
                log::warn!("admission: {why}; tier {:?} fails closed", self.tier);
                send_error(&error);
                Action::Pause
            }
        }
    }

    fn on_admit_answer(&mut self, shared: &Shared, status_code: u32, size: usize) -> Action {
        if status_code != 0 {
            return self.on_service_unavailable(
                shared,
                &format!("Admit failed with gRPC status {status_code}"),
            );
        }
        let body = match host::buffer(BufferType::GrpcReceiveBuffer, 0, size) {
            Ok(body) => body.unwrap_or_default(),
            Err(e) => return self.on_service_unavailable(shared, &e.to_string()),
        };
        let Ok(response) = AdmitResponse::decode(body.as_slice()) else {
            return self.on_service_unavailable(shared, "Admit answer does not decode");
        };
        match Admission::from_response(response) {
            Admission::Admitted {
                lease_id,
                rate_limit,
                queue_wait_ms,
                audit_prompt_bytes,
            } => {
                if queue_wait_ms > 0 {
                    log::debug!("admission: queued {queue_wait_ms} ms");
                }
                // Metered: nothing upstream may read this request as bypassed,
                // whatever reached us (tenant-auth strips it too).
                set_request_header(headers::ADMISSION_BYPASSED, None);
                shared.leases.borrow_mut().insert(lease_id.clone());
                self.lease = Some(lease_id);
                self.rate_limit = rate_limit;
                self.admitted_at = Some(host::now_or_epoch());
                // Only the phase that bills reports what the audit needs.
                if shared.config.phase != FilterPhase::Open {
                    self.audit = Some(AuditCapture::new(audit_prompt_bytes));
                }
                Action::Continue
            }
            Admission::Rejected(error) => {
                send_error(&error);
                Action::Pause
            }
        }
    }

    /// Settles the lease with what is known; at most once per request.
    fn complete(&mut self, outcome: Outcome) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Some(lease_id) = self.lease.take() else {
            return;
        };
        shared.leases.borrow_mut().remove(&lease_id);
        let usage = self.usage.as_mut().and_then(UsageTracker::finish);
        let now = host::now_or_epoch();
        let outcome = match (outcome, self.upstream) {
            // An OPEN lease only frees its slot; the RESERVE lease is billed.
            _ if shared.config.phase == FilterPhase::Open => Outcome::Released,
            (Outcome::Completed, UpstreamStatus::Failed) => Outcome::UpstreamError,
            // Refused by the pool, whether or not the client stayed.
            (_, UpstreamStatus::Refused) => Outcome::UpstreamRejected,
            (outcome, _) => outcome,
        };
        let report = CompleteRequest {
            lease_id,
            outcome: outcome as i32,
            usage_known: usage.is_some(),
            prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
            completion_tokens: usage.map_or(0, |u| u.completion_tokens),
            cached_tokens: usage.map_or(0, |u| u.cached_tokens),
            latency_ms: millis_between(self.admitted_at, now),
            ttft_ms: self
                .first_byte_at
                .map_or(0, |t| millis_between(self.admitted_at, t)),
            cached_tokens_reported: usage.map(|u| u.cached_reported),
            audit: self.audit.take().map(|a| {
                let mut facts = a.finish(
                    std::mem::take(&mut self.credential),
                    digest_bytes(self.request_sha256.as_deref()),
                );
                // llm-policy changed the body after this filter hashed it:
                // its digest is of what the client got.
                if let Ok(Some(sent)) = host::property(&[headers::RESPONSE_SHA256_STATE]) {
                    facts.response_sha256 = digest_bytes(std::str::from_utf8(&sent).ok());
                }
                facts
            }),
            traceparent: std::mem::take(&mut self.traceparent),
        };
        shared.report(self.id, report);
    }
}

impl Context for AdmissionFilter {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, size: usize) {
        if self.admit_token != Some(token) {
            return;
        }
        self.admit_token = None;
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if self.on_admit_answer(&shared, status_code, size) == Action::Continue
            && let Err(e) = host::resume_request()
        {
            log::warn!("admission: {e}");
        }
    }
}

impl HttpContext for AdmissionFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            log::error!("admission: not configured; refusing");
            send_error(&filter_common::host_failure());
            return Action::Pause;
        };
        let facts = Self::facts();
        self.tier = facts.tier.clone().unwrap_or_default();
        self.credential = facts.credential.clone().unwrap_or_default();
        self.request_sha256 = facts.request_sha256.clone();
        self.traceparent = facts.traceparent();
        let request = match shared.config.phase {
            // On the headers, before llm-policy buffers the body: only
            // inference requests are counted, as the later phase would.
            FilterPhase::Open => {
                let method = header_text(REQUEST, ":method").unwrap_or_default();
                let path = header_text(REQUEST, ":path").unwrap_or_default();
                if !is_inference(&method, &path) {
                    return Action::Continue;
                }
                open_request(&facts, &shared.config.holder)
            }
            phase => admit_request(&facts, &shared.config.holder, phase),
        };
        let Some(request) = request else {
            return Action::Continue;
        };
        let timeout: Duration = shared.config.admit_timeout(&request.pool);
        match host::dispatch_grpc_call(
            &shared.config.cluster,
            SERVICE,
            "Admit",
            &request.encode_to_vec(),
            timeout,
        ) {
            Ok(token) => {
                self.admit_token = Some(token);
                Action::Pause
            }
            Err(e) => self.on_service_unavailable(&shared, &format!("Admit not sent: {e}")),
        }
    }

    /// The body as it goes to the pool (llm-policy has rewritten it): the
    /// start of it is kept for a tenant that logs prompts, copying out of
    /// the host no more than the bound.
    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let Some(audit) = self.audit.as_mut() else {
            return Action::Continue;
        };
        let room = audit.prompt_room();
        if room == 0 || body_size == 0 {
            audit.request_chunk(&[], body_size);
            return Action::Continue;
        }
        match host::buffer(BufferType::HttpRequestBody, 0, body_size.min(room)) {
            Ok(chunk) => audit.request_chunk(&chunk.unwrap_or_default(), body_size),
            Err(e) => log::warn!("admission: {e}"),
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        // A response without a body ends with its headers.
        if end_of_stream {
            self.response_ended = true;
        }
        let open = self
            .shared
            .as_ref()
            .is_some_and(|s| s.config.phase == FilterPhase::Open);
        if let Some(info) = &self.rate_limit {
            // Each phase reports what it counted: OPEN the requests (its
            // token view reserved nothing), RESERVE the tokens.
            let mine = |name: &str| !open || name.ends_with("-requests");
            for (name, value) in rate_limit_headers(info)
                .into_iter()
                .filter(|(n, _)| mine(n))
            {
                if let Err(e) = host::set_header(RESPONSE, name.as_bytes(), Some(value.as_bytes()))
                {
                    log::warn!("admission: {e}");
                }
            }
        }
        if self.lease.is_some() && !open {
            let status = header_text(RESPONSE, ":status").unwrap_or_default();
            self.upstream = if status.starts_with('5') {
                UpstreamStatus::Failed
            } else if status.starts_with('4') {
                UpstreamStatus::Refused
            } else {
                UpstreamStatus::Answered
            };
            let sse = header_text(RESPONSE, "content-type")
                .is_some_and(|c| c.starts_with("text/event-stream"));
            self.usage = Some(UsageTracker::new(sse));
            if let Some(audit) = self.audit.as_mut() {
                let replica = host::property(&["upstream", "address"])
                    .ok()
                    .flatten()
                    .map(|raw| String::from_utf8_lossy(&raw).into_owned())
                    .unwrap_or_default();
                audit.response_head(status.parse().unwrap_or(0), replica);
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.lease.is_none() {
            return Action::Continue;
        }
        if body_size > 0 {
            if self.first_byte_at.is_none() {
                self.first_byte_at = Some(host::now_or_epoch());
            }
            // Only a phase that bills reads the body (OPEN has no tracker):
            // the copy into the VM is per chunk of every response.
            if let Some(tracker) = self.usage.as_mut() {
                match host::buffer(BufferType::HttpResponseBody, 0, body_size) {
                    Ok(Some(chunk)) => {
                        tracker.feed(&chunk);
                        if let Some(audit) = self.audit.as_mut() {
                            audit.response_chunk(&chunk);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => log::warn!("admission: {e}"),
                }
            }
        }
        if end_of_stream {
            // Reported from on_log, once every filter has passed the last
            // chunk on: llm-policy may still change it after this filter.
            self.response_ended = true;
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // Still waiting for Admit: the client left while queued. Envoy does not
        // cancel a plugin's call when the stream ends, so cancel it here; the
        // service sees the RPC cancelled, leaves the queue and refunds.
        if let Some(token) = self.admit_token.take()
            && let Err(e) = host::cancel_grpc_call(token)
        {
            log::warn!("admission: {e}");
        }
        // A response that never ended: the client went away or the stream
        // was reset.
        let outcome = if self.response_ended {
            Outcome::Completed
        } else {
            Outcome::ClientCancelled
        };
        self.complete(outcome);
    }
}
