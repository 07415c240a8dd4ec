//! proxy-wasm adapter of the gateway module: one root context per worker
//! holds the compiled [`Gateway`], the pools' limits and the admission
//! reports; one stream context per request runs the phases in order over
//! its [`RequestContext`], as [`Flow`] says. The phases' host sides live
//! in their crates (`tenant_auth::stream`, `llm_policy::stream`,
//! `admission_filter::worker`); no logic lives here. The root also owns
//! the worker's admission stream and hands each answer on it to the
//! request it names, reaching that request's state through [`Requests`].
//!
//! Envoy requirements: the Wasm `PluginConfig` must set
//! `allow_on_headers_stop_iteration: true` when the policy runs (the body
//! is read while the headers wait), and the listener's
//! `per_connection_buffer_limit_bytes` must be at least
//! `gateway.max_body_bytes`. With the flag a body callback that returns
//! `Continue` lets the request go, so this module returns `Pause` from
//! every body callback while anything is still out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use admission_filter::worker::{AdmissionStream, Delivery, Reporter, Shared, StreamAnswer};
use admission_filter::{FilterPhase, body_fits_one_call};
use filter_common::headers::{self, HeaderSnapshot};
use filter_common::host::{self, TickPeriod, send_error};
use llm_policy::Policy;
use llm_policy::buffer_budget::BufferBudget;
use llm_policy::stream::{LimitsRefresher, PolicyStream, RequestLine};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use tenant_auth::stream::{authenticate, refuse};

use crate::context::RequestContext;
use crate::{Flow, Gateway, Next};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(GatewayRoot::new(context_id))
    });
}}

struct GatewayRoot {
    id: u32,
    gateway: Option<Rc<Gateway>>,
    policy: Option<Rc<Policy>>,
    /// Body bytes this worker holds, in all and per tenant.
    budget: Option<Rc<RefCell<BufferBudget>>>,
    refresher: LimitsRefresher,
    admission: Option<Rc<Shared>>,
    reporter: Reporter,
    tick: TickPeriod,
    requests: Requests,
}

/// This worker's requests by context id, for the root to hand each the
/// answer the admission stream brought it. Weak: an entry never keeps a
/// request alive, and each removes its own when Envoy deletes it.
type Requests = Rc<RefCell<HashMap<u32, Weak<RefCell<StreamState>>>>>;

impl GatewayRoot {
    fn new(id: u32) -> Self {
        Self {
            id,
            gateway: None,
            policy: None,
            budget: None,
            refresher: LimitsRefresher::default(),
            admission: None,
            reporter: Reporter::default(),
            tick: TickPeriod::default(),
            requests: Rc::default(),
        }
    }

    /// Hands each answer of the admission stream to its request, with that
    /// request's context the effective one (what it does then, resuming or
    /// replying, acts on its stream), then makes the root effective again.
    fn deliver(&self, shared: &Shared, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        for Delivery {
            context,
            id,
            answer,
        } in deliveries
        {
            let state = self.requests.borrow().get(&context).and_then(Weak::upgrade);
            let Some(state) = state else {
                // Gone without its on_log (never seen): nothing may hold a slot for it.
                shared.release_unclaimed(answer);
                continue;
            };
            if let Err(e) = host::set_effective_context(context) {
                log::warn!("llm-gateway: {e}; admission answer dropped");
                shared.release_unclaimed(answer);
                continue;
            }
            match state.try_borrow_mut() {
                Ok(mut state) => state.on_stream_answer(id, answer),
                Err(_) => {
                    log::error!("llm-gateway: request {context} busy; admission answer dropped");
                    shared.release_unclaimed(answer);
                }
            }
        }
        if let Err(e) = host::set_effective_context(self.id) {
            log::warn!("llm-gateway: {e}");
        }
    }

    /// Ticks at admission's report flush when it runs (the limits refresh
    /// rides on it), else as the limits refresh wants.
    fn set_tick(&mut self) -> bool {
        let period = match (&self.admission, self.limits_cluster()) {
            (Some(shared), _) => shared.config.report_flush,
            (None, Some(_)) => self.refresher.period(),
            (None, None) => return true,
        };
        self.tick
            .set(period)
            .map_err(|e| log::error!("llm-gateway: {e}"))
            .is_ok()
    }

    fn limits_cluster(&self) -> Option<String> {
        self.policy.as_ref()?.limits_cluster.clone()
    }
}

impl Context for GatewayRoot {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, size: usize) {
        if self.refresher.on_call_answer(token, status_code, size) {
            self.set_tick();
        } else {
            self.reporter.on_call_answer(token, status_code);
        }
    }

    fn on_grpc_stream_message(&mut self, token: u32, size: usize) {
        if let Some(shared) = self.admission.clone()
            && let Some(delivery) = shared.on_stream_message(token, size)
        {
            self.deliver(&shared, vec![delivery]);
        }
    }

    fn on_grpc_stream_close(&mut self, token: u32, status_code: u32) {
        if let Some(shared) = self.admission.clone() {
            // Reopened by the tick a second later, not here: a service
            // that refuses at once would otherwise be asked in a tight loop.
            let lost = shared.on_stream_close(token, status_code);
            self.deliver(&shared, lost);
            self.reporter.on_stream_closed(token);
        }
    }

    fn on_done(&mut self) -> bool {
        match self.admission.clone() {
            Some(shared) => self.reporter.on_done(&shared),
            None => true,
        }
    }
}

impl RootContext for GatewayRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        if size == 0 {
            log::error!("llm-gateway: no configuration given");
            return false;
        }
        let mut gateway = match Gateway::from_reader(host::configuration(size)) {
            Ok(gateway) => gateway,
            Err(e) => {
                log::error!("llm-gateway: configuration refused: {e}");
                return false;
            }
        };
        host::log_configured(
            "llm-gateway",
            format_args!(
                "{} tenants, {} API keys",
                gateway.registry.tenants().len(),
                gateway.registry.key_count()
            ),
        );
        self.policy = gateway.policy.take().map(Rc::new);
        self.budget = self.policy.as_deref().map(PolicyStream::budget_for);
        self.admission = gateway
            .admission
            .take()
            .map(|config| Shared::new(config, self.id));
        self.gateway = Some(Rc::new(gateway));
        self.set_tick()
    }

    fn on_tick(&mut self) {
        if let Some(shared) = self.admission.clone() {
            self.reporter.on_tick(&shared);
            let late = shared.expire_admissions();
            self.deliver(&shared, late);
            shared.open_stream();
        }
        if let Some(cluster) = self.limits_cluster() {
            self.refresher.on_tick(&cluster);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. Unconfigured, every request
        // is refused instead.
        let policy = self.policy.as_ref().map(|policy| {
            PolicyStream::new(
                Some(Rc::clone(policy)),
                self.budget.clone(),
                self.refresher.limits(),
            )
        });
        let admission = self.admission.as_ref().map(|shared| {
            (
                AdmissionStream::new(context_id, FilterPhase::Open, Some(Rc::clone(shared))),
                AdmissionStream::new(context_id, FilterPhase::Reserve, Some(Rc::clone(shared))),
            )
        });
        let state = Rc::new(RefCell::new(StreamState {
            gateway: self.gateway.clone(),
            flow: Flow::new(admission.is_some()),
            policy,
            admission,
            shared: self.admission.clone(),
            waits_for_body: None,
            context: None,
            response_fed: 0,
        }));
        // Only the admission stream's answers need the request found.
        if self
            .admission
            .as_ref()
            .is_some_and(|s| s.config.admit_stream)
        {
            self.requests
                .borrow_mut()
                .insert(context_id, Rc::downgrade(&state));
        }
        Some(Box::new(GatewayStream {
            id: context_id,
            state,
            requests: Rc::clone(&self.requests),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's state: the phases' streams and where the flow stands.
struct StreamState {
    gateway: Option<Rc<Gateway>>,
    flow: Flow,
    policy: Option<PolicyStream>,
    /// The OPEN and the RESERVE lease, when admission runs.
    admission: Option<(AdmissionStream, AdmissionStream)>,
    /// The worker's admission state, when admission runs.
    shared: Option<Rc<Shared>>,
    /// The request waits for its body, this many bytes as announced, to be
    /// admitted in one call (it holds a place among its tenant's waiters).
    waits_for_body: Option<u64>,
    context: Option<RequestContext>,
    /// Bytes of a held (cumulative) response body already counted.
    response_fed: usize,
}

impl StreamState {
    /// Authentication; `None` when the request was refused (reply sent).
    fn authenticate(&mut self, gateway: &Gateway, request: &mut HeaderSnapshot) -> Option<()> {
        // Envoy's span for the request, set by the header_mutation filter
        // before this module: read before the gateway's headers are
        // stripped, as a value from then on.
        let traceparent = request.text(headers::TRACEPARENT).ok().flatten();
        match authenticate(&gateway.authenticator, request) {
            Ok(authenticated) => {
                self.context = Some(RequestContext {
                    identity: authenticated.identity,
                    request_id: authenticated.request_id,
                    traceparent,
                });
                Some(())
            }
            Err(refusal) => {
                refuse(&gateway.authenticator, refusal);
                None
            }
        }
    }

    /// Whether the inference request waits for its small body to be
    /// admitted in one call instead of on its headers (see
    /// `admission_filter::one_call`); if so it took a place among its
    /// tenant's waiters.
    fn wait_for_body(&mut self, announced: Option<&str>, end_of_stream: bool) -> bool {
        let (Some(shared), Some(context)) = (self.shared.as_ref(), self.context.as_ref()) else {
            return false;
        };
        if end_of_stream {
            return false;
        }
        let Some(length) = body_fits_one_call(announced, shared.config.one_call_max_body_bytes)
        else {
            return false;
        };
        if !shared
            .waiters
            .borrow_mut()
            .join(&context.identity.tenant_id)
        {
            return false;
        }
        self.waits_for_body = Some(length);
        true
    }

    /// Gives back the request's place among the waiters; whether it had one.
    fn stop_waiting(&mut self) -> bool {
        if self.waits_for_body.take().is_none() {
            return false;
        }
        if let (Some(shared), Some(context)) = (self.shared.as_ref(), self.context.as_ref()) {
            shared
                .waiters
                .borrow_mut()
                .leave(&context.identity.tenant_id);
        }
        true
    }

    /// Sends the OPEN admission of an inference request.
    fn send_open(&mut self) {
        let (Some((open, _)), Some(context)) = (self.admission.as_mut(), self.context.as_ref())
        else {
            return;
        };
        let Some(action) = open.admit(&context.admission_facts(None)) else {
            return;
        };
        if action == Action::Continue {
            // Fail open: unmetered on this phase, nothing to wait for.
            return;
        }
        if open.is_waiting() {
            self.flow.open_sent();
            if let Some(policy) = self.policy.as_mut() {
                policy.hold_refusals(true);
            }
        } else {
            // Fail closed: the refusal is sent.
            self.flow.answered_here();
        }
    }

    /// Sends the RESERVE admission of the decided request (FULL when no
    /// OPEN was sent: one call admits it); what comes next.
    fn send_reserve(&mut self) -> Next {
        let one_call = self.stop_waiting();
        let decision = self.policy.as_ref().and_then(PolicyStream::decision);
        let (Some((_, reserve)), Some(context)) = (self.admission.as_mut(), self.context.as_ref())
        else {
            return self.flow.reserve_answered(true);
        };
        if one_call {
            reserve.set_phase(FilterPhase::Full);
        }
        match reserve.admit(&context.admission_facts(decision)) {
            None | Some(Action::Continue) => self.flow.reserve_answered(true),
            _ if reserve.is_waiting() => {
                self.flow.reserve_sent();
                Next::Wait
            }
            _ => self.flow.reserve_answered(false),
        }
    }

    /// Acts on `next`; `in_callback`: inside a request callback, whose
    /// `Continue` lets the request go (elsewhere it is resumed).
    fn advance(&mut self, mut next: Next, in_callback: bool) -> Action {
        loop {
            match next {
                Next::Reserve => next = self.send_reserve(),
                Next::Wait | Next::Stop => return Action::Pause,
                Next::Go => {
                    self.keep_prompt();
                    if in_callback {
                        return Action::Continue;
                    }
                    if let Err(e) = host::resume_request() {
                        log::warn!("llm-gateway: {e}");
                    }
                    return Action::Pause;
                }
            }
        }
    }

    /// Hands the start of the body as sent to the RESERVE lease's audit
    /// (the service named how much it wants in its answer).
    fn keep_prompt(&mut self) {
        let (Some(policy), Some((_, reserve))) = (self.policy.as_ref(), self.admission.as_mut())
        else {
            return;
        };
        let (kept, len) = policy.kept_body();
        let room = reserve.prompt_room();
        reserve.request_chunk(kept.get(..room.min(kept.len())).unwrap_or_default(), len);
    }

    /// The policy's answer to a request callback.
    fn after_policy(&mut self, action: Action) -> Action {
        let (awaits_body, holds_refusal) = self
            .policy
            .as_ref()
            .map_or((false, false), |p| (p.awaits_body(), p.holds_refusal()));
        match action {
            Action::Continue => {
                let next = self.flow.decided();
                self.advance(next, true)
            }
            // A refusal waiting for the OPEN answer, or more body to come.
            _ if awaits_body || holds_refusal => Action::Pause,
            _ => {
                self.flow.answered_here();
                Action::Pause
            }
        }
    }

    /// The OPEN answer: a refusal the policy held is sent now, unless the
    /// OPEN refusal went first.
    fn on_open_answer(&mut self, admitted: bool) -> Next {
        let held = self.policy.as_mut().and_then(|policy| {
            policy.hold_refusals(false);
            policy.take_held_refusal()
        });
        match held {
            Some(refusal) if admitted => {
                send_error(&refusal);
                self.flow.open_answered(false)
            }
            _ => self.flow.open_answered(admitted),
        }
    }

    /// What a request callback returns once the policy is done with the
    /// body: `Continue` only when the request may go. With
    /// `allow_on_headers_stop_iteration`, a `Continue` lets it go.
    fn after_body(&self) -> Action {
        if self.flow.has_gone() {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

impl StreamState {
    /// An answer from the admission stream, as [`Self::on_grpc_call_response`].
    fn on_stream_answer(&mut self, id: u64, answer: StreamAnswer) {
        let Some((open, reserve)) = self.admission.as_mut() else {
            return;
        };
        let next = if open.waits_for(id) {
            let admitted = open.on_stream_answer(id, answer) == Some(Action::Continue);
            self.on_open_answer(admitted)
        } else if reserve.waits_for(id) {
            let admitted = reserve.on_stream_answer(id, answer) == Some(Action::Continue);
            self.flow.reserve_answered(admitted)
        } else {
            return;
        };
        self.advance(next, false);
    }

    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, size: usize) {
        let Some((open, reserve)) = self.admission.as_mut() else {
            return;
        };
        let next = if let Some(action) = open.on_grpc_response(token, status_code, size) {
            self.on_open_answer(action == Action::Continue)
        } else if let Some(action) = reserve.on_grpc_response(token, status_code, size) {
            self.flow.reserve_answered(action == Action::Continue)
        } else {
            return;
        };
        self.advance(next, false);
    }
}

/// The request callbacks, as the SDK's `HttpContext` (see [`GatewayStream`]).
impl StreamState {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(gateway) = self.gateway.clone() else {
            log::error!("llm-gateway: not configured; refusing");
            send_error(&filter_common::host_failure());
            return Action::Pause;
        };
        // One read of the whole map: every phase looks its headers up here.
        let mut request = match host::header_snapshot(MapType::HttpRequestHeaders) {
            Ok(request) => request,
            Err(e) => {
                log::error!("llm-gateway: {e}; refusing");
                send_error(&filter_common::host_failure());
                return Action::Pause;
            }
        };
        if self.authenticate(&gateway, &mut request).is_none() {
            return Action::Pause;
        }
        let (Some(policy), Some(context)) = (self.policy.as_mut(), self.context.as_ref()) else {
            // Identity only.
            return Action::Continue;
        };
        let line = match RequestLine::read(&request) {
            Ok(line) => line,
            Err(fault) => return policy.header_fault(fault),
        };
        // Kept: the policy drops the header (it may rewrite the body).
        let announced = line.content_length.clone();
        let identity = &context.identity;
        if self.admission.is_some() {
            policy.keep_body(gateway.audit_prompt_bytes(&identity.tenant_id));
        }
        let action = policy.on_request_headers(
            Some(&identity.tenant_id),
            Some(&identity.tier),
            line,
            end_of_stream,
        );
        let inference = action == Action::Continue || policy.awaits_body();
        if inference && !self.wait_for_body(announced.as_deref(), end_of_stream) {
            // The policy's checks on the headers passed: count the request
            // and take its concurrency slot while the body comes in.
            self.send_open();
        }
        self.after_policy(action)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.policy.as_ref() {
            None => return Action::Continue,
            Some(policy) if !policy.awaits_body() => return self.after_body(),
            Some(_) => {}
        }
        // Envoy hands a body that came whole on without its end, then the
        // end alone: only a body still short of what was announced trickles.
        let short = self
            .waits_for_body
            .is_some_and(|length| (body_size as u64) < length);
        if !end_of_stream && short && self.stop_waiting() {
            // The small body did not come whole with its headers: the
            // request is admitted on what came, as a larger one would be.
            self.send_open();
            if self.flow.is_over() {
                return Action::Pause;
            }
        }
        let Some(policy) = self.policy.as_mut() else {
            return Action::Continue;
        };
        let action = policy.on_request_body(body_size, end_of_stream);
        self.after_policy(action)
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        let Some(policy) = self.policy.as_mut() else {
            return Action::Continue;
        };
        if !policy.awaits_body() {
            return self.after_body();
        }
        let action = policy.on_request_trailers();
        self.after_policy(action)
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        // Read once for the phases that read them (a host call and an
        // allocation, where each header read would be that much again), and
        // not at all for the gateway's own replies. Unreadable reads as
        // empty, as each read would have.
        let read = self.admission.as_ref().is_some_and(|(open, reserve)| {
            open.reads_response_headers() || reserve.reads_response_headers()
        }) || self
            .policy
            .as_ref()
            .is_some_and(PolicyStream::reads_response_headers);
        let headers = if read {
            host::header_snapshot(MapType::HttpResponseHeaders).unwrap_or_else(|e| {
                log::warn!("llm-gateway: {e}");
                HeaderSnapshot::default()
            })
        } else {
            HeaderSnapshot::default()
        };
        // In the chain's order on the way back: admission saw what the pool
        // sent, then the policy edits it.
        if let Some((open, reserve)) = self.admission.as_mut() {
            reserve.on_response_headers(end_of_stream, &headers);
            open.on_response_headers(end_of_stream, &headers);
        }
        match self.policy.as_mut() {
            Some(policy) => policy.on_response_headers(end_of_stream, &headers),
            None => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let holding = self
            .policy
            .as_ref()
            .is_some_and(PolicyStream::holds_error_body);
        let mut whole_chunk = None;
        if let Some((open, reserve)) = self.admission.as_mut() {
            // While the policy holds an error body, each callback sees all
            // of it so far: count only what is new.
            let from = if holding { self.response_fed } else { 0 };
            let new = body_size.saturating_sub(from);
            let chunk = if new > 0 && reserve.reads_response_body() {
                match host::buffer(BufferType::HttpResponseBody, from, new) {
                    Ok(chunk) => chunk.unwrap_or_default(),
                    Err(e) => {
                        log::warn!("llm-gateway: {e}");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            reserve.response_chunk(&chunk, new, end_of_stream);
            open.response_chunk(&[], new, end_of_stream);
            // The whole chunk, as the policy would read it: handed over
            // rather than copied out of the host a second time.
            if from == 0 && chunk.len() == body_size && body_size > 0 {
                whole_chunk = Some(chunk);
            }
        }
        let action = match self.policy.as_mut() {
            Some(policy) => {
                policy.on_response_body(body_size, end_of_stream, whole_chunk.as_deref())
            }
            None => Action::Continue,
        };
        // Held on: the next callback repeats these bytes.
        self.response_fed = if action == Action::Pause {
            body_size
        } else {
            0
        };
        action
    }

    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        match self.policy.as_mut() {
            Some(policy) => policy.on_response_trailers(),
            None => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        self.stop_waiting();
        let sent = self
            .policy
            .as_mut()
            .and_then(PolicyStream::take_sent_digest);
        if let Some((open, reserve)) = self.admission.as_mut() {
            if let Some(sent) = sent {
                reserve.set_sent_digest(sent);
            }
            reserve.on_log();
            open.on_log();
        }
    }
}

/// The SDK's handle on one request: its state lives behind a shared cell so
/// that the root can reach it too, to hand over what the admission stream
/// answered. Envoy never calls into a request while the root runs, nor the
/// root while a request runs, so the cell is never busy; if it were, a
/// request callback refuses the request (nothing unchecked goes upstream)
/// and a response callback lets the response go on, rather than panic.
struct GatewayStream {
    id: u32,
    state: Rc<RefCell<StreamState>>,
    requests: Requests,
}

impl GatewayStream {
    fn with<R>(&self, busy: R, f: impl FnOnce(&mut StreamState) -> R) -> R {
        match self.state.try_borrow_mut() {
            Ok(mut state) => f(&mut state),
            Err(_) => {
                log::error!("llm-gateway: request {} re-entered", self.id);
                busy
            }
        }
    }

    /// [`Self::with`] for a request callback: busy, the request is refused.
    fn on_request(&self, f: impl FnOnce(&mut StreamState) -> Action) -> Action {
        self.with(None, |s| Some(f(s))).unwrap_or_else(|| {
            send_error(&filter_common::host_failure());
            Action::Pause
        })
    }
}

impl Drop for GatewayStream {
    fn drop(&mut self) {
        if let Ok(mut requests) = self.requests.try_borrow_mut() {
            requests.remove(&self.id);
        }
    }
}

impl Context for GatewayStream {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, size: usize) {
        self.with((), |s| s.on_grpc_call_response(token, status_code, size));
    }
}

impl HttpContext for GatewayStream {
    fn on_http_request_headers(&mut self, headers: usize, end_of_stream: bool) -> Action {
        self.on_request(|s| s.on_http_request_headers(headers, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.on_request(|s| s.on_http_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, trailers: usize) -> Action {
        self.on_request(|s| s.on_http_request_trailers(trailers))
    }

    fn on_http_response_headers(&mut self, headers: usize, end_of_stream: bool) -> Action {
        self.with(Action::Continue, |s| {
            s.on_http_response_headers(headers, end_of_stream)
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with(Action::Continue, |s| {
            s.on_http_response_body(body_size, end_of_stream)
        })
    }

    fn on_http_response_trailers(&mut self, trailers: usize) -> Action {
        self.with(Action::Continue, |s| s.on_http_response_trailers(trailers))
    }

    fn on_log(&mut self) {
        self.with((), StreamState::on_log);
    }
}
