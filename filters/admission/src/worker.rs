//! The admission phase's host side, run by the gateway module: the
//! worker's report buffer and leases ([`Shared`], flushed by the root's
//! [`Reporter`]) and one Admit lease's life on a stream
//! ([`AdmissionStream`]).
//!
//! Reports and lease renewals are dispatched from the root context: a call
//! owned by a stream context is cancelled when that stream ends, and a
//! report is exactly what must outlive the stream. Reports are buffered and
//! flushed on the root's tick as one `CompleteBatch` call ([`ReportBuffer`]).
//!
//! Admissions ride the root's `AdmitStream` as messages when it is open
//! ([`AdmitChannel`]; the root opens it on the tick after a request found
//! none); the root hands each answer to the request it names
//! ([`Delivery`]), fails them all when the stream ends, and fails those
//! past their deadline on its tick. Without the stream a request is
//! admitted by a unary Admit call of its own, as before.
//!
//! Every host call goes through `filter_common::host` (fallible, headers as
//! bytes): nothing a client or the pool sends can reach an unwrap inside
//! the VM.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use admission_proto::v1::admit_stream_request::Kind;
use admission_proto::v1::{
    AdmitCancel, AdmitRequest, AdmitResponse, AdmitStreamRequest, AdmitStreamResponse,
    CompleteBatchRequest, CompleteRequest, Outcome, RateLimitInfo, RenewRequest,
};
use filter_common::headers::{self, HeaderSnapshot};
use filter_common::host::{self, send_error};
use hashbrown::HashSet;
use prost::Message;
use proxy_wasm::types::{Action, BufferType, MapType};

use crate::{
    Admission, AdmitChannel, AuditCapture, BodyWaiters, CompiledConfig, FilterPhase, ReportBuffer,
    RequestFacts, UsageTracker, admit_request, digest_bytes, open_request, rate_limit_headers,
    unavailable,
};

const SERVICE: &str = "llmgateway.admission.v1.Admission";

/// gRPC's DEADLINE_EXCEEDED, for an admission its request stopped waiting for.
const DEADLINE_EXCEEDED: u32 = 4;

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
pub struct Shared {
    pub config: CompiledConfig,
    counters: FailureCounters,
    root_id: u32,
    /// Leases held by this worker, renewed every `renew_interval`.
    leases: RefCell<HashSet<String>>,
    /// Reports of ended requests, waiting for the next flush.
    reports: RefCell<ReportBuffer<CompleteRequest>>,
    /// Requests waiting for their body to be admitted in one call.
    pub waiters: RefCell<BodyWaiters>,
    /// Admissions waiting on the worker's `AdmitStream`.
    channel: RefCell<AdmitChannel>,
    /// A request found no stream open: the next tick opens one.
    wants_stream: Cell<bool>,
    /// After the stream ended, none is opened before this: a service that
    /// is down is not asked for a stream every tick, and requests go by
    /// call meanwhile.
    reopen_at: Cell<Option<SystemTime>>,
}

/// How long after the admission stream ended the root opens another.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

/// An answer on the admission stream, for the request it names: the root
/// hands it over with that request's context made the effective one
/// ([`AdmissionStream::on_stream_answer`]).
#[derive(Debug)]
pub struct Delivery {
    pub context: u32,
    pub id: u64,
    pub answer: StreamAnswer,
}

#[derive(Debug)]
pub enum StreamAnswer {
    Decided(AdmitResponse),
    /// The service could not decide, the stream ended, or the request's
    /// deadline passed: a gRPC status code, as the call would have ended.
    Failed {
        status: u32,
        why: String,
    },
}

impl Shared {
    /// The worker's admission state under the root context `root_id`
    /// (defines the failure counters: call from `on_configure`).
    pub fn new(config: CompiledConfig, root_id: u32) -> Rc<Self> {
        Rc::new(Self {
            counters: FailureCounters::define(),
            root_id,
            leases: RefCell::new(HashSet::new()),
            reports: RefCell::new(ReportBuffer::default()),
            waiters: RefCell::new(BodyWaiters::new(config.one_call_max_waiting_per_tenant)),
            channel: RefCell::new(AdmitChannel::default()),
            wants_stream: Cell::new(false),
            reopen_at: Cell::new(None),
            config,
        })
    }

    /// Opens the worker's admission stream if a request found none open.
    /// Call from the root's tick only: the SDK gives a stream's messages to
    /// the context that was active when it opened, and the stream must
    /// outlive every request. Lazily, so that a root that never admits
    /// (Envoy's main thread has one too) holds no stream.
    pub fn open_stream(&self) {
        if !self.wants_stream.get() || self.channel.borrow().stream().is_some() {
            return;
        }
        if self
            .reopen_at
            .get()
            .is_some_and(|at| host::now_or_epoch() < at)
        {
            return;
        }
        match host::open_grpc_stream(&self.config.cluster, SERVICE, "AdmitStream") {
            Ok(token) => self.channel.borrow_mut().opened(token),
            Err(e) => log::warn!("admission: no admission stream ({e}); admitting by call"),
        }
    }

    /// Closes this side of the admission stream (Envoy is done with this
    /// root): its token when one was open and is now closing. The service
    /// ends its side once it has read everything sent before, reports
    /// included, and answered what waits.
    pub fn close_stream(&self) -> Option<u32> {
        let token = self.channel.borrow().stream()?;
        host::close_grpc_stream(token).ok().map(|()| token)
    }

    /// Sends the admission `request` of the request `context` on the stream:
    /// its id, or `None` when it must go by call instead.
    fn ask_on_stream(
        &self,
        context: u32,
        request: &AdmitRequest,
        timeout: Duration,
    ) -> Option<u64> {
        let now = host::now_or_epoch();
        let asked = self.channel.borrow_mut().ask(context, now, timeout);
        let Some((id, token)) = asked else {
            if self.config.admit_stream && self.channel.borrow().stream().is_none() {
                self.wants_stream.set(true);
            }
            return None;
        };
        let message = AdmitStreamRequest {
            id,
            kind: Some(Kind::Admit(request.clone())),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        };
        if let Err(e) = host::send_grpc_stream(token, &message.encode_to_vec()) {
            // The stream ended under us; its end reaches the root.
            log::warn!("admission: admission stream: {e}; admitting by call");
            self.channel.borrow_mut().forget(id);
            return None;
        }
        Some(id)
    }

    /// Its request stopped waiting for admission `id`: the service is told
    /// to leave the queue and refund.
    fn cancel_on_stream(&self, id: u64) {
        let token = {
            let mut channel = self.channel.borrow_mut();
            if !channel.forget(id) {
                return;
            }
            channel.stream()
        };
        if let Some(token) = token {
            send_cancel(token, id);
        }
    }

    /// A message on the admission stream `token` (root callback): the
    /// answer for the request waiting for it. An admission nobody waits for
    /// any more (the request left, or timed out) frees its lease now.
    pub fn on_stream_message(&self, token: u32, size: usize) -> Option<Delivery> {
        if self.channel.borrow().stream() != Some(token) {
            return None;
        }
        let body = match host::buffer(BufferType::GrpcReceiveBuffer, 0, size) {
            Ok(body) => body.unwrap_or_default(),
            Err(e) => {
                log::warn!("admission: admission stream: {e}");
                return None;
            }
        };
        let Ok(message) = AdmitStreamResponse::decode(body.as_slice()) else {
            log::warn!("admission: an admission stream message does not decode");
            return None;
        };
        let answer = match message.response {
            Some(response) if message.status_code == 0 => StreamAnswer::Decided(response),
            _ => StreamAnswer::Failed {
                status: message.status_code,
                why: message.status_message,
            },
        };
        let Some(context) = self.channel.borrow_mut().answered(message.id) else {
            self.release_unclaimed(answer);
            return None;
        };
        Some(Delivery {
            context,
            id: message.id,
            answer,
        })
    }

    /// An admission answered after its request left: its lease is
    /// released, nothing went upstream.
    pub fn release_unclaimed(&self, answer: StreamAnswer) {
        let StreamAnswer::Decided(response) = answer else {
            return;
        };
        if let Admission::Admitted { lease_id, .. } = Admission::from_response(response) {
            self.report(
                self.root_id,
                CompleteRequest {
                    lease_id,
                    outcome: Outcome::Released as i32,
                    ..CompleteRequest::default()
                },
            );
        }
    }

    /// The admission stream `token` ended (root callback): every request
    /// waiting on it fails as its call would have. The root's tick opens
    /// another [`REOPEN_BACKOFF`] later.
    pub fn on_stream_close(&self, token: u32, status: u32) -> Vec<Delivery> {
        let Some(lost) = self.channel.borrow_mut().ended(token) else {
            return Vec::new();
        };
        let now = host::now_or_epoch();
        self.reopen_at.set(now.checked_add(REOPEN_BACKOFF));
        if !lost.is_empty() {
            log::warn!(
                "admission: admission stream ended (gRPC status {status}) with {} admissions waiting",
                lost.len()
            );
        }
        lost.into_iter()
            .map(|(id, context)| Delivery {
                context,
                id,
                answer: StreamAnswer::Failed {
                    status,
                    why: "the admission stream ended".into(),
                },
            })
            .collect()
    }

    /// Admissions past their deadline (root tick): each request fails as a
    /// timed-out call would, and the service is told to stop queueing it.
    pub fn expire_admissions(&self) -> Vec<Delivery> {
        let late = self.channel.borrow_mut().expired(host::now_or_epoch());
        let token = self.channel.borrow().stream();
        late.into_iter()
            .map(|(id, context)| {
                if let Some(token) = token {
                    send_cancel(token, id);
                }
                Delivery {
                    context,
                    id,
                    answer: StreamAnswer::Failed {
                        status: DEADLINE_EXCEEDED,
                        why: "no answer before the deadline".into(),
                    },
                }
            })
            .collect()
    }

    /// Buffers a report; sends the buffer now if that filled it.
    fn report(&self, current: u32, report: CompleteRequest) {
        let bytes = report.encoded_len();
        let full = self.reports.borrow_mut().push(report, bytes);
        if let Some(reports) = full {
            self.send_reports(current, reports);
        }
    }

    /// Sends `reports` as one message on the admission stream when it is
    /// open (a message costs far less than a call, and nothing waits for
    /// the answer), else in one `CompleteBatch` call.
    fn send_reports(&self, current: u32, reports: Vec<CompleteRequest>) {
        let Some(token) = self.channel.borrow().stream() else {
            self.call_reports(current, reports);
            return;
        };
        let message = AdmitStreamRequest {
            id: 0,
            kind: Some(Kind::Reports(CompleteBatchRequest { reports })),
            timeout_ms: 0,
        };
        if let Err(e) = host::send_grpc_stream(token, &message.encode_to_vec()) {
            log::warn!("admission: reports not sent on the admission stream: {e}; by call");
            if let Some(Kind::Reports(batch)) = message.kind {
                self.call_reports(current, batch.reports);
            }
        }
    }

    /// Sends `reports` in one `CompleteBatch` call: its token, or `None`
    /// when not sent. The last reports go this way (see
    /// [`Reporter::on_done`]): the root waits for their answer.
    fn call_reports(&self, current: u32, reports: Vec<CompleteRequest>) -> Option<u32> {
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

/// Tells the service admission `id` is no longer waited for. Sent from
/// whichever context is current: Envoy acts on a gRPC stream as the root
/// context's whatever the effective context (proxy-wasm-cpp-host's
/// `grpc_send` takes `root_context()`), so no switch is needed.
fn send_cancel(token: u32, id: u64) {
    let message = AdmitStreamRequest {
        id,
        kind: Some(Kind::Cancel(AdmitCancel {})),
        timeout_ms: 0,
    };
    if let Err(e) = host::send_grpc_stream(token, &message.encode_to_vec()) {
        log::warn!("admission: cancel not sent: {e}");
    }
}

/// The root context's part: flushes reports and renews leases on its tick
/// (at `report_flush`), and sends the last reports when Envoy is done.
#[derive(Default)]
pub struct Reporter {
    last_renew: Option<SystemTime>,
    /// The call carrying the last reports, sent from `on_done`.
    final_flush: Option<u32>,
    /// The admission stream `on_done` closed, until the service ends it:
    /// reports sent on it before must be read before Envoy may reset it.
    closing_stream: Option<u32>,
    /// Envoy asked this root to finish (`on_done`).
    finishing: bool,
}

impl Reporter {
    pub fn on_tick(&mut self, shared: &Shared) {
        let pending = shared.reports.borrow_mut().drain();
        if let Some(reports) = pending {
            shared.send_reports(shared.root_id, reports);
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
        shared.dispatch_from_root(shared.root_id, "Renew", &message);
    }

    /// An answer to a call of the root (reports, renewals: any the root
    /// sent that is not its own business is admission's).
    pub fn on_call_answer(&mut self, token: u32, status_code: u32) {
        if status_code != 0 {
            log::warn!("admission: report/renew call failed with gRPC status {status_code}");
        }
        if self.final_flush == Some(token) {
            self.final_flush = None;
            self.finish_when_settled();
        }
    }

    /// The admission stream `token` ended.
    pub fn on_stream_closed(&mut self, token: u32) {
        if self.closing_stream == Some(token) {
            self.closing_stream = None;
            self.finish_when_settled();
        }
    }

    /// Tells Envoy this root may go once the last reports are answered and
    /// the service has ended the admission stream.
    fn finish_when_settled(&mut self) {
        if !self.finishing || self.final_flush.is_some() || self.closing_stream.is_some() {
            return;
        }
        self.finishing = false;
        if host::done().is_err() {
            log::warn!("admission: host refused proxy_done");
        }
    }

    /// Envoy is done with the root context: its configuration was replaced
    /// (every registry reload) or Envoy is stopping, and its last streams
    /// have ended, their reports still in the buffer with no tick to come.
    /// They leave now by a call, and the context asks to stay (`false`)
    /// until they are answered and the service has ended the admission
    /// stream, since deleting it would cancel the one and reset the other.
    pub fn on_done(&mut self, shared: &Shared) -> bool {
        // Reports flushed on the stream may still be on their way: deleting
        // the root resets the stream, which could drop them. The service
        // ends its side after reading them.
        self.closing_stream = shared.close_stream();
        if let Some(reports) = shared.reports.borrow_mut().drain() {
            self.final_flush = shared.call_reports(shared.root_id, reports);
        }
        let done = self.final_flush.is_none() && self.closing_stream.is_none();
        self.finishing = !done;
        done
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpstreamStatus {
    Answered,
    /// 4xx: the pool refused; nothing was generated.
    Refused,
    /// 5xx.
    Failed,
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

/// How an admission was asked, until answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// A unary Admit call, by its token.
    Call(u32),
    /// A message on the worker's admission stream, by its id.
    Message(u64),
}

/// One phase's Admit lease on a stream, from the call to the report.
pub struct AdmissionStream {
    /// The stream's context id (reports are sent from the root, then back).
    id: u32,
    phase: FilterPhase,
    shared: Option<Rc<Shared>>,
    tier: String,
    asked: Option<Asked>,
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
    /// Digest of the response as the client got it, when the policy changed
    /// it after this phase saw it (empty: unknown).
    sent_sha256: Option<String>,
    /// Gathered for the audit record from admission to the report.
    audit: Option<AuditCapture>,
    /// The response's last chunk went through.
    response_ended: bool,
    /// The request's trace context, for the settle span.
    traceparent: String,
}

impl AdmissionStream {
    pub fn new(id: u32, phase: FilterPhase, shared: Option<Rc<Shared>>) -> Self {
        Self {
            id,
            phase,
            shared,
            tier: String::new(),
            asked: None,
            lease: None,
            rate_limit: None,
            usage: None,
            admitted_at: None,
            first_byte_at: None,
            upstream: UpstreamStatus::Answered,
            credential: String::new(),
            request_sha256: None,
            sent_sha256: None,
            audit: None,
            response_ended: false,
            traceparent: String::new(),
        }
    }

    pub fn is_configured(&self) -> bool {
        self.shared.is_some()
    }

    /// Makes this lease another phase; before its call is sent (the
    /// module turns its RESERVE lease into a FULL one when no OPEN was
    /// sent: the request is admitted in one call).
    pub fn set_phase(&mut self, phase: FilterPhase) {
        if self.asked.is_none() && self.lease.is_none() {
            self.phase = phase;
        }
    }

    /// Asks the service to admit this phase of the request `facts`
    /// describe. `None` when there is nothing to admit (no tenant, or no
    /// model after the OPEN phase); else `Pause` while it is asked,
    /// `Continue` when the request goes on unmetered (fail open), `Pause`
    /// after a refusal was sent (fail closed).
    pub fn admit(&mut self, facts: &RequestFacts) -> Option<Action> {
        let Some(shared) = self.shared.clone() else {
            log::error!("admission: not configured; refusing");
            send_error(&filter_common::host_failure());
            return Some(Action::Pause);
        };
        let holder = &shared.config.holder;
        let request = match self.phase {
            FilterPhase::Open => open_request(facts, holder),
            phase => admit_request(facts, holder, phase),
        }?;
        Some(self.send(&shared, facts, &request))
    }

    /// Asks on the worker's admission stream when it is open, else by a
    /// unary call: `Pause` while asked.
    fn ask(&mut self, shared: &Shared, request: &AdmitRequest) -> Result<Asked, host::HostError> {
        let timeout = shared.config.admit_timeout(self.phase, &request.pool);
        if let Some(id) = shared.ask_on_stream(self.id, request, timeout) {
            return Ok(Asked::Message(id));
        }
        host::dispatch_grpc_call(
            &shared.config.cluster,
            SERVICE,
            "Admit",
            &request.encode_to_vec(),
            timeout,
        )
        .map(Asked::Call)
    }

    fn send(&mut self, shared: &Shared, facts: &RequestFacts, request: &AdmitRequest) -> Action {
        self.tier = facts.tier.as_deref().unwrap_or_default().to_owned();
        self.credential = facts.credential.clone().unwrap_or_default();
        self.request_sha256 = facts.request_sha256.clone();
        self.traceparent = facts.traceparent();
        match self.ask(shared, request) {
            Ok(asked) => {
                self.asked = Some(asked);
                Action::Pause
            }
            Err(e) => self.on_service_unavailable(shared, &format!("Admit not sent: {e}")),
        }
    }

    /// Whether `id` is this phase's admission on the stream.
    pub fn waits_for(&self, id: u64) -> bool {
        self.asked == Some(Asked::Message(id))
    }

    /// Whether the admission is asked and not yet answered.
    pub fn is_waiting(&self) -> bool {
        self.asked.is_some()
    }

    /// The answer to a call of this stream: `None` when `token` is not this
    /// phase's Admit; else `Continue` (admitted, or fail open) or `Pause`
    /// (refused: the reply is sent).
    pub fn on_grpc_response(
        &mut self,
        token: u32,
        status_code: u32,
        size: usize,
    ) -> Option<Action> {
        if self.asked != Some(Asked::Call(token)) {
            return None;
        }
        self.asked = None;
        let shared = self.shared.clone()?;
        Some(self.on_admit_answer(&shared, status_code, size))
    }

    /// An answer the root delivers from the admission stream: `None` when
    /// `id` is not this phase's admission; else as [`Self::on_grpc_response`].
    pub fn on_stream_answer(&mut self, id: u64, answer: StreamAnswer) -> Option<Action> {
        if self.asked != Some(Asked::Message(id)) {
            return None;
        }
        self.asked = None;
        let shared = self.shared.clone()?;
        Some(match answer {
            StreamAnswer::Decided(response) => self.on_decision(&shared, response),
            StreamAnswer::Failed { status, why } => self.on_service_unavailable(
                &shared,
                &format!("Admit failed with gRPC status {status} ({why})"),
            ),
        })
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
        self.on_decision(shared, response)
    }

    fn on_decision(&mut self, shared: &Shared, response: AdmitResponse) -> Action {
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
                // Metered: nothing upstream may read this request as bypassed.
                // Only an OPEN that failed open before this RESERVE can have
                // marked it (authentication strips a client's mark), so no
                // other phase pays a host call for a header that is not there.
                if self.phase == FilterPhase::Reserve {
                    set_request_header(headers::ADMISSION_BYPASSED, None);
                }
                shared.leases.borrow_mut().insert(lease_id.clone());
                self.lease = Some(lease_id);
                self.rate_limit = rate_limit;
                self.admitted_at = Some(host::now_or_epoch());
                // Only the phase that bills reports what the audit needs.
                if self.phase != FilterPhase::Open {
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

    /// Request-body bytes the audit still wants (0: none).
    pub fn prompt_room(&self) -> usize {
        self.audit.as_ref().map_or(0, AuditCapture::prompt_room)
    }

    /// A request-body chunk of `size` bytes, of which `chunk` was read (at
    /// most [`Self::prompt_room`]).
    pub fn request_chunk(&mut self, chunk: &[u8], size: usize) {
        if let Some(audit) = self.audit.as_mut() {
            audit.request_chunk(chunk, size);
        }
    }

    /// Puts this phase's `x-ratelimit-*` on the response and starts
    /// tracking its usage.
    /// `headers`: the response's, as the pool sent them.
    pub fn on_response_headers(&mut self, end_of_stream: bool, headers: &HeaderSnapshot) {
        // A response without a body ends with its headers.
        if end_of_stream {
            self.response_ended = true;
        }
        let open = self.phase == FilterPhase::Open;
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
        if self.reads_response_headers() {
            let status = headers.text(":status").ok().flatten().unwrap_or_default();
            self.upstream = if status.starts_with('5') {
                UpstreamStatus::Failed
            } else if status.starts_with('4') {
                UpstreamStatus::Refused
            } else {
                UpstreamStatus::Answered
            };
            let sse = headers
                .get("content-type")
                .is_some_and(|c| c.starts_with(b"text/event-stream"));
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
    }

    /// Whether this phase reads the response's headers (only a phase that
    /// bills does: the status and the content type).
    pub fn reads_response_headers(&self) -> bool {
        self.lease.is_some() && self.phase != FilterPhase::Open
    }

    /// Whether this phase reads the response body (only a phase that
    /// bills does: the copy into the VM is per chunk of every response).
    pub fn reads_response_body(&self) -> bool {
        self.lease.is_some() && self.usage.is_some()
    }

    /// A response chunk of `size` bytes as the pool sent it (`chunk`: its
    /// bytes when [`Self::reads_response_body`]).
    pub fn response_chunk(&mut self, chunk: &[u8], size: usize, end_of_stream: bool) {
        if self.lease.is_none() {
            return;
        }
        if size > 0 {
            if self.first_byte_at.is_none() {
                self.first_byte_at = Some(host::now_or_epoch());
            }
            if let Some(tracker) = self.usage.as_mut()
                && !chunk.is_empty()
            {
                tracker.feed(chunk);
                if let Some(audit) = self.audit.as_mut() {
                    audit.response_chunk(chunk);
                }
            }
        }
        if end_of_stream {
            // Reported from on_log, once every filter has passed the last
            // chunk on: the policy may still change it after this phase.
            self.response_ended = true;
        }
    }

    /// The client got another body than the pool sent (the policy changed
    /// it): its digest, empty when unknown, replaces this phase's own.
    pub fn set_sent_digest(&mut self, hex_digest: String) {
        self.sent_sha256 = Some(hex_digest);
    }

    /// The stream is over: cancels a pending Admit and reports the lease.
    pub fn on_log(&mut self) {
        // Still waiting for Admit: the client left while queued. Envoy does not
        // cancel a plugin's call when the stream ends, so cancel it here (a
        // message on the stream: a cancel); the service sees the admission
        // cancelled, leaves the queue and refunds.
        match self.asked.take() {
            Some(Asked::Call(token)) => {
                if let Err(e) = host::cancel_grpc_call(token) {
                    log::warn!("admission: {e}");
                }
            }
            Some(Asked::Message(id)) => {
                if let Some(shared) = self.shared.as_ref() {
                    shared.cancel_on_stream(id);
                }
            }
            None => {}
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
            _ if self.phase == FilterPhase::Open => Outcome::Released,
            (Outcome::Completed, UpstreamStatus::Failed) => Outcome::UpstreamError,
            // Refused by the pool, whether or not the client stayed.
            (_, UpstreamStatus::Refused) => Outcome::UpstreamRejected,
            (outcome, _) => outcome,
        };
        let sent_sha256 = self.sent_sha256.take();
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
                // The policy changed the body after this phase hashed it:
                // its digest is of what the client got.
                if let Some(sent) = sent_sha256 {
                    facts.response_sha256 = digest_bytes(Some(&sent));
                }
                facts
            }),
            traceparent: std::mem::take(&mut self.traceparent),
        };
        shared.report(self.id, report);
    }
}
