//! A test-only filter that panics (a wasm trap) when a request carries
//! `x-crash-probe: now`, and passes everything else.
//!
//! The gateway's filters must never panic; this one exists to prove the
//! second line of defence does its job when one does anyway: with
//! `failure_policy: FAIL_RELOAD`, Envoy replaces the failed VM and the next
//! request is served, instead of every later request on that worker
//! answering 503. It is never part of a deployment.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot) });
    }}

    struct ProbeRoot;

    impl Context for ProbeRoot {}

    impl RootContext for ProbeRoot {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Probe))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Probe;

    impl Context for Probe {}

    impl HttpContext for Probe {
        fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            let asked = proxy_wasm::hostcalls::get_map_value_bytes(
                proxy_wasm::types::MapType::HttpRequestHeaders,
                "x-crash-probe",
            );
            if matches!(asked, Ok(Some(v)) if v == b"now") {
                #[allow(clippy::panic)]
                {
                    panic!("crash-probe: asked to trap");
                }
            }
            Action::Continue
        }
    }
}
