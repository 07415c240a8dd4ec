//! proxy-wasm adapter of the standalone llm-policy filter: reads the tenant
//! tenant-auth named from the request headers and runs the policy phase
//! ([`PolicyStream`]); the root keeps the pools' limits fresh
//! ([`LimitsRefresher`]). No logic lives here.
//!
//! A header the policy reads that is not UTF-8 is refused (400).
//!
//! Envoy requirements (checked against Envoy 1.40):
//! - the Wasm `PluginConfig` must set `allow_on_headers_stop_iteration: true`
//!   (Envoy >= 1.35). Without it Envoy turns the headers-phase `Pause` into
//!   StopAll, never delivers the body, and every request hangs;
//! - the listener's `per_connection_buffer_limit_bytes` must be at least
//!   `gateway.max_body_bytes`, or Envoy answers its own plain-text 413 first.

use std::cell::RefCell;
use std::rc::Rc;

use filter_common::headers;
use filter_common::host::{self, TickPeriod};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::Policy;
use crate::buffer_budget::BufferBudget;
use crate::stream::{HeaderFault, LimitsRefresher, PolicyStream, RequestLine, request_header};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PolicyRoot::default()) });
}}

#[derive(Default)]
struct PolicyRoot {
    policy: Option<Rc<Policy>>,
    /// Body bytes this worker holds, in all and per tenant.
    budget: Option<Rc<RefCell<BufferBudget>>>,
    refresher: LimitsRefresher,
    tick: TickPeriod,
}

impl PolicyRoot {
    /// Ticks as often as the refresher wants (faster until the first answer).
    fn follow_refresher(&mut self) -> bool {
        self.tick
            .set(self.refresher.period())
            .map_err(|e| log::error!("llm-policy: {e}"))
            .is_ok()
    }
}

impl Context for PolicyRoot {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, size: usize) {
        if self.refresher.on_call_answer(token, status_code, size) {
            self.follow_refresher();
        }
    }
}

impl RootContext for PolicyRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        if size == 0 {
            log::error!("llm-policy: no configuration given");
            return false;
        }
        match Policy::from_reader(host::configuration(size)) {
            Ok(policy) => {
                host::log_configured(
                    "llm-policy",
                    format_args!("{} tenants", policy.registry.tenants().len()),
                );
                self.budget = Some(PolicyStream::budget_for(&policy));
                if policy.limits_cluster.is_some() && !self.follow_refresher() {
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
        if let Some(cluster) = self.policy.as_ref().and_then(|p| p.limits_cluster.clone()) {
            self.refresher.on_tick(&cluster);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. Without a policy every request
        // is refused instead.
        Some(Box::new(PolicyFilter {
            stream: PolicyStream::new(
                self.policy.clone(),
                self.budget.clone(),
                self.refresher.limits(),
            ),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct PolicyFilter {
    stream: PolicyStream,
}

impl Context for PolicyFilter {}

/// The tenant tenant-auth named, and the request line.
fn read_request() -> Result<(Option<String>, Option<String>, RequestLine), HeaderFault> {
    Ok((
        request_header(headers::TENANT_ID)?,
        request_header(headers::TENANT_TIER)?,
        RequestLine::read()?,
    ))
}

impl PolicyFilter {
    /// Tells admission the digest of the body the client received (empty:
    /// unknown), since this filter changed it after admission saw it.
    fn publish_sent_digest(&mut self) {
        if let Some(digest) = self.stream.take_sent_digest()
            && let Err(e) = host::set_property(headers::RESPONSE_SHA256_STATE, digest.as_bytes())
        {
            log::warn!("llm-policy: {e}");
        }
    }
}

impl HttpContext for PolicyFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        match read_request() {
            Ok((tenant, tier, line)) => self.stream.on_request_headers(
                tenant.as_deref(),
                tier.as_deref(),
                line,
                end_of_stream,
            ),
            Err(fault) => self.stream.header_fault(fault),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.stream.on_request_body(body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        self.stream.on_request_trailers()
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.stream.on_response_headers(end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let action = self.stream.on_response_body(body_size, end_of_stream, None);
        self.publish_sent_digest();
        action
    }

    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        self.stream.on_response_trailers()
    }
}
