//! proxy-wasm adapter: reads what the host knows about the request, hands it
//! to the policy, and writes the outcome back. No logic lives here.
//!
//! Host calls go through `hostcalls` with their errors handled, not through
//! the trait helpers, which unwrap (a panic would kill the VM for every
//! stream). Any failure that would skip a check refuses the request.
//!
//! Envoy requirements (checked against Envoy 1.40):
//! - the Wasm `PluginConfig` must set `allow_on_headers_stop_iteration: true`
//!   (Envoy >= 1.35). Without it Envoy turns the headers-phase `Pause` into
//!   StopAll, never delivers the body, and every request hangs;
//! - the listener's `per_connection_buffer_limit_bytes` must be at least
//!   `gateway.max_body_bytes`, or Envoy answers its own plain-text 413 first.

use std::rc::Rc;

use filter_common::IntoGatewayError;
use filter_common::headers;
use filter_common::host::send_error;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::endpoint::{Endpoint, Route};
use crate::routing::WORKLOAD_HEADER;
use crate::{Policy, PolicyError, admit, check_body_size, decide_body, local_reply};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PolicyRoot::default()) });
}}

#[derive(Default)]
struct PolicyRoot {
    policy: Option<Rc<Policy>>,
}

impl Context for PolicyRoot {}

impl RootContext for PolicyRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) | Err(_) => {
                log::error!("llm-policy: no configuration given");
                return false;
            }
        };
        match Policy::from_json(&bytes) {
            Ok(policy) => {
                self.policy = Some(Rc::new(policy));
                true
            }
            Err(e) => {
                log::error!("llm-policy: configuration refused: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. Without a policy every request
        // is refused instead.
        Some(Box::new(PolicyFilter {
            policy: self.policy.clone(),
            pending: None,
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
    pending: Option<Pending>,
}

impl Context for PolicyFilter {}

fn request_header(name: &str) -> Option<String> {
    hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

fn set_request_header(name: &str, value: Option<&str>) -> Result<(), PolicyError> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value)
        .map_err(|_| PolicyError::HostFailure("cannot set a request header"))
}

impl PolicyFilter {
    fn refuse(&mut self, error: PolicyError) -> Action {
        log::info!("llm-policy: refused: {error}");
        self.pending = None;
        send_error(&error.into_gateway_error());
        Action::Pause
    }

    fn reply_json(&mut self, body: &[u8]) -> Action {
        let headers = vec![("content-type", "application/json")];
        if let Err(status) = hostcalls::send_http_response(200, headers, Some(body)) {
            log::error!("llm-policy: send_http_response failed: {status:?}");
        }
        Action::Pause
    }

    /// Runs the policy on the complete body and applies the decision.
    fn finish(&mut self, policy: &Policy, body: &[u8]) -> Action {
        let Some(pending) = self.pending.take() else {
            return Action::Continue;
        };
        let Some(tenant) = policy.registry.tenant(&pending.tenant_id) else {
            return self.refuse(PolicyError::UnknownTenant(pending.tenant_id));
        };
        let decision = match decide_body(
            policy,
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
                hostcalls::set_buffer(BufferType::HttpRequestBody, 0, original_len, new_body)
                    .map_err(|_| PolicyError::HostFailure("cannot replace the request body"))?;
                new_body.len()
            }
            None => original_len,
        };
        set_request_header("content-length", Some(&length.to_string()))?;
        // The route was chosen on the headers as they arrived; x-llm-pool is
        // new, so Envoy must match again. Older Envoys without the foreign
        // function clear the cache on header writes themselves.
        if let Err(status) = hostcalls::call_foreign_function("clear_route_cache", None) {
            log::debug!("llm-policy: clear_route_cache unavailable: {status:?}");
        }
        Ok(())
    }
}

impl HttpContext for PolicyFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(policy) = self.policy.clone() else {
            return self.refuse(PolicyError::NotConfigured);
        };
        let tenant_id = request_header(headers::TENANT_ID);
        let tier = request_header(headers::TENANT_TIER);
        let method = request_header(":method").unwrap_or_default();
        let path = request_header(":path").unwrap_or_default();
        let admitted = match admit(
            &policy,
            tenant_id.as_deref(),
            tier.as_deref(),
            &method,
            &path,
        ) {
            Ok(admitted) => admitted,
            Err(e) => return self.refuse(e),
        };
        match local_reply(&policy, &admitted) {
            Some(Ok(body)) => return self.reply_json(&body),
            Some(Err(e)) => return self.refuse(e),
            None => {}
        }
        let Route::Inference(endpoint) = admitted.route else {
            return self.refuse(PolicyError::HostFailure("unexpected route"));
        };
        let announced = request_header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(Err(e)) = announced.map(|len| check_body_size(&policy, len)) {
            return self.refuse(e);
        }
        self.pending = Some(Pending {
            tenant_id: admitted.tenant.id.clone(),
            endpoint,
            workload: request_header(WORKLOAD_HEADER),
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
        if !end_of_stream {
            return Action::Pause;
        }
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
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
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, usize::MAX) {
            Ok(body) => body.unwrap_or_default(),
            Err(_) => return self.refuse(PolicyError::HostFailure("cannot read the request body")),
        };
        self.finish(&policy, &body)
    }
}
