//! proxy-wasm adapter of the standalone tenant-auth filter: the
//! authentication phase ([`crate::stream`]) alone. No logic lives here.

use std::rc::Rc;

use filter_common::host::{self, send_error};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::Authenticator;
use crate::stream::{authenticate, refuse};

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
    fn on_configure(&mut self, size: usize) -> bool {
        if size == 0 {
            log::error!("tenant-auth: no configuration given");
            return false;
        }
        match Authenticator::from_reader(host::configuration(size)) {
            Ok(authenticator) => {
                host::log_configured(
                    "tenant-auth",
                    format_args!("{} tenants", authenticator.registry().tenants().len()),
                );
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
        // Never `None`: the SDK panics on it. Without a configuration every
        // request is refused instead.
        Some(Box::new(AuthFilter {
            authenticator: self.authenticator.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AuthFilter {
    authenticator: Option<Rc<Authenticator>>,
}

impl Context for AuthFilter {}

impl HttpContext for AuthFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(authenticator) = self.authenticator.clone() else {
            log::error!("tenant-auth: not configured; refusing");
            send_error(&filter_common::host_failure());
            return Action::Pause;
        };
        match authenticate(&authenticator) {
            Ok(_) => Action::Continue,
            Err(refusal) => {
                refuse(&authenticator, refusal);
                Action::Pause
            }
        }
    }
}
