//! proxy-wasm adapter: reads what the host knows about the request, hands it
//! to [`Authenticator`], and writes the outcome back. No logic lives here.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use filter_common::headers::{self, is_gateway_owned};
use filter_common::host::send_error;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::{Authenticator, is_valid_request_id, new_request_id};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(AuthRoot::default()) });
}}

#[derive(Default)]
struct AuthRoot {
    authenticator: Option<Rc<Authenticator>>,
}

impl Context for AuthRoot {}

impl RootContext for AuthRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            log::error!("tenant-auth: no configuration given");
            return false;
        };
        match Authenticator::from_json(&bytes) {
            Ok(authenticator) => {
                self.authenticator = Some(Rc::new(authenticator));
                true
            }
            Err(e) => {
                log::error!("tenant-auth: configuration refused: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let authenticator = self.authenticator.clone()?;
        Some(Box::new(AuthFilter { authenticator }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AuthFilter {
    authenticator: Rc<Authenticator>,
}

impl Context for AuthFilter {}

impl AuthFilter {
    fn strip_gateway_headers(&self) {
        for (name, _) in self.get_http_request_headers() {
            if is_gateway_owned(&name) {
                self.set_http_request_header(&name, None);
            }
        }
    }

    fn now_unix(&self) -> i64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn peer_uri_san(&self) -> Option<String> {
        let raw = self.get_property(vec!["connection", "uri_san_peer_certificate"])?;
        String::from_utf8(raw).ok().filter(|s| !s.is_empty())
    }
}

impl HttpContext for AuthFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        // Before anything reads them: nothing a client sends may pass as ours.
        self.strip_gateway_headers();
        let authorization = self.get_http_request_header("authorization");
        let api_key = self.get_http_request_header("x-api-key");
        let peer = self.peer_uri_san();
        let outcome = self.authenticator.authenticate(
            authorization.as_deref(),
            api_key.as_deref(),
            peer.as_deref(),
            self.now_unix(),
        );
        match outcome {
            Ok(identity) => {
                // Tenant credentials are the gateway's business, not the pool's.
                self.set_http_request_header("authorization", None);
                self.set_http_request_header("x-api-key", None);
                self.set_http_request_header(headers::TENANT_ID, Some(&identity.tenant_id));
                self.set_http_request_header(headers::TENANT_TIER, Some(&identity.tier));
                let request_id = self
                    .get_http_request_header(headers::REQUEST_ID)
                    .filter(|id| is_valid_request_id(id))
                    .unwrap_or_else(new_request_id);
                self.set_http_request_header(headers::REQUEST_ID, Some(&request_id));
                log::debug!(
                    "tenant-auth: {} via {} ({})",
                    identity.tenant_id,
                    identity.method.as_str(),
                    identity.credential_id
                );
                Action::Continue
            }
            Err(error) => {
                log::info!("tenant-auth: refused: {error}");
                send_error(&error.into_gateway_error_in(self.authenticator.realm()));
                Action::Pause
            }
        }
    }
}
