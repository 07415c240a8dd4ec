//! A test-only filter that panics (a wasm trap) when a request carries
//! `x-crash-probe: now`, and passes everything else.
//!
//! The gateway's filters must never panic; this one exists to prove the
//! second line of defence does its job when one does anyway: with
//! `failure_policy: FAIL_RELOAD`, Envoy replaces the failed VM and the next
//! request is served, instead of every later request on that worker
//! answering 503. It is never part of a deployment.
//!
//! It also prices what Envoy charges a wasm filter (`gateway-bench
//! host-costs`): its plugin configuration, a [`Work`], may ask for one
//! kind of work on every request, each done as the gateway module does it.
//! Counts are capped so a typo cannot hang a worker.

/// Work asked of the probe on every request; empty, none.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Work {
    /// More reads of `:path`: a host call and an allocation callback
    /// each, so two crossings.
    pub header_reads: u32,
    /// Rounds of a xorshift: wasm instructions and nothing else.
    pub spin_rounds: u32,
    /// The request held for one unary call to the `ratelimit` cluster, to a
    /// method ratelimit-service does not have: it answers UNIMPLEMENTED at
    /// once, so what is priced is Envoy's side of a call, as for the
    /// module's Admit.
    pub grpc_call: bool,
    /// The headers held until the whole body is in, and the body read, as
    /// the policy does (the renderer gives probes
    /// `allow_on_headers_stop_iteration`, as the module).
    pub hold_body: bool,
    /// With `hold_body`: the body replaced by a longer one, its length
    /// set and the route matched again, as the policy does.
    pub rewrite_body: bool,
    /// Request headers written.
    pub header_writes: u32,
    /// Four response headers written and each response chunk read, as
    /// admission does (`x-ratelimit-*`, usage).
    pub respond: bool,
}

impl Work {
    pub const MAX_HEADER_READS: u32 = 1_000;
    pub const MAX_SPIN_ROUNDS: u32 = 10_000_000;
    pub const MAX_HEADER_WRITES: u32 = 64;
    /// Response headers `respond` writes, as admission's `x-ratelimit-*`.
    pub const RESPONSE_HEADERS: u32 = 4;
    /// Bytes `rewrite_body` adds (whitespace: the JSON stays valid).
    pub const REWRITE_PADDING: usize = 48;

    /// The work a configuration asks for; empty means none.
    pub fn from_config(config: &[u8]) -> Result<Self, String> {
        if config.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let work: Self = serde_json::from_slice(config).map_err(|e| e.to_string())?;
        if work.header_reads > Self::MAX_HEADER_READS {
            return Err(format!("header_reads: at most {}", Self::MAX_HEADER_READS));
        }
        if work.spin_rounds > Self::MAX_SPIN_ROUNDS {
            return Err(format!("spin_rounds: at most {}", Self::MAX_SPIN_ROUNDS));
        }
        if work.header_writes > Self::MAX_HEADER_WRITES {
            return Err(format!(
                "header_writes: at most {}",
                Self::MAX_HEADER_WRITES
            ));
        }
        if work.rewrite_body && !work.hold_body {
            return Err("rewrite_body: needs hold_body".to_owned());
        }
        Ok(work)
    }

    /// `rounds` of a xorshift from `seed`: data-dependent, so neither the
    /// compiler nor V8 can fold it away.
    pub fn spin(seed: u64, rounds: u32) -> u64 {
        let mut x = seed | 1;
        for _ in 0..rounds {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        x
    }
}

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

    use std::time::Duration;

    use super::Work;

    const CLUSTER: &str = "ratelimit";
    const SERVICE: &str = "llmgateway.admission.v1.Admission";
    /// No such method: the service answers at once, with no work of its own.
    const METHOD: &str = "Probe";

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
            Box::new(ProbeRoot { work: Work::default() })
        });
    }}

    struct ProbeRoot {
        work: Work,
    }

    impl Context for ProbeRoot {}

    impl RootContext for ProbeRoot {
        fn on_configure(&mut self, size: usize) -> bool {
            let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
                Ok(config) => config.unwrap_or_default(),
                Err(_) => return false,
            };
            match Work::from_config(&config) {
                Ok(work) => {
                    self.work = work;
                    true
                }
                Err(e) => {
                    let _ = hostcalls::log(
                        proxy_wasm::types::LogLevel::Error,
                        &format!("crash-probe: configuration refused: {e}"),
                    );
                    false
                }
            }
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Probe {
                work: self.work,
                calling: false,
                holding: false,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    /// Writes `count` headers `x-probe-<i>` into `map`.
    fn write_headers(map: MapType, count: u32) {
        for i in 0..count {
            let _ = hostcalls::set_map_value_bytes(map, &format!("x-probe-{i}"), Some(b"probe"));
        }
    }

    struct Probe {
        work: Work,
        /// The gRPC call is out.
        calling: bool,
        /// The body is held until its end.
        holding: bool,
    }

    impl Probe {
        /// Paused while anything is out; the last one to end lets it go.
        fn action(&self) -> Action {
            if self.calling || self.holding {
                Action::Pause
            } else {
                Action::Continue
            }
        }
    }

    impl Context for Probe {
        /// Whatever the answer (UNIMPLEMENTED), the request goes on, unless
        /// its body is still held (the body's end lets it go then).
        fn on_grpc_call_response(&mut self, _token: u32, _status_code: u32, _size: usize) {
            self.calling = false;
            if !self.holding {
                let _ = hostcalls::resume_http_request();
            }
        }
    }

    impl HttpContext for Probe {
        fn on_http_request_headers(&mut self, headers: usize, end_of_stream: bool) -> Action {
            let asked =
                hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-crash-probe");
            if matches!(asked, Ok(Some(v)) if v == b"now") {
                #[allow(clippy::panic)]
                {
                    panic!("crash-probe: asked to trap");
                }
            }
            let mut seed = headers as u64;
            for _ in 0..self.work.header_reads {
                if let Ok(Some(path)) =
                    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path")
                {
                    seed = seed.wrapping_add(path.len() as u64);
                }
            }
            // Used, so the rounds are run; never 0 from a nonzero seed.
            if Work::spin(seed, self.work.spin_rounds) == 0 {
                return Action::Pause;
            }
            if self.work.grpc_call {
                // The trait's call: it tells the SDK whose answer it is.
                self.calling = self
                    .dispatch_grpc_call(
                        CLUSTER,
                        SERVICE,
                        METHOD,
                        Vec::new(),
                        None,
                        Duration::from_secs(5),
                    )
                    .is_ok();
            }
            write_headers(MapType::HttpRequestHeaders, self.work.header_writes);
            self.holding = self.work.hold_body && !end_of_stream;
            self.action()
        }

        fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
            if self.holding && end_of_stream {
                // Read whole, as the gateway's policy reads a body.
                let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
                if self.work.rewrite_body
                    && let Ok(Some(mut body)) = body
                {
                    body.extend_from_slice(&[b' '; Work::REWRITE_PADDING]);
                    let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &body);
                    let length = body.len().to_string();
                    let _ = hostcalls::set_map_value_bytes(
                        MapType::HttpRequestHeaders,
                        "content-length",
                        Some(length.as_bytes()),
                    );
                    let _ = hostcalls::call_foreign_function("clear_route_cache", None);
                }
                self.holding = false;
            }
            self.action()
        }

        fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            if self.work.respond {
                write_headers(MapType::HttpResponseHeaders, Work::RESPONSE_HEADERS);
            }
            Action::Continue
        }

        /// Each chunk read as it passes, as admission reads it for usage.
        fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
            if self.work.respond && body_size > 0 {
                let _ = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size);
            }
            Action::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_read_from_the_configuration_and_capped() {
        assert_eq!(Work::from_config(b""), Ok(Work::default()));
        assert_eq!(Work::from_config(b"{}"), Ok(Work::default()));
        assert_eq!(
            Work::from_config(br#"{"header_reads":50,"spin_rounds":20000}"#),
            Ok(Work {
                header_reads: 50,
                spin_rounds: 20_000,
                ..Work::default()
            })
        );
        assert!(Work::from_config(br#"{"header_reads":1001}"#).is_err());
        assert!(Work::from_config(br#"{"spin_rounds":10000001}"#).is_err());
        assert!(Work::from_config(br#"{"reads":1}"#).is_err());
        assert!(Work::from_config(br#"{"header_writes":65}"#).is_err());
        assert!(Work::from_config(br#"{"rewrite_body":true}"#).is_err());
        assert!(Work::from_config(br#"{"rewrite_body":true,"hold_body":true}"#).is_ok());
        assert!(
            Work::from_config(br#"{"grpc_call":true}"#)
                .expect("valid")
                .grpc_call
        );
    }

    #[test]
    fn spinning_depends_on_every_round() {
        assert_ne!(Work::spin(7, 1000), Work::spin(7, 1001));
        assert_eq!(Work::spin(7, 0), 7);
    }
}
