//! proxy-wasm adapter of the standalone admission filter: reads the facts
//! the filters before it left in the request headers and runs one phase's
//! [`AdmissionStream`]; the worker's reports go through [`Reporter`].

use std::rc::Rc;

use filter_common::headers;
use filter_common::host;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::worker::{AdmissionStream, Reporter, Shared, header_text};
use crate::{CompiledConfig, FilterPhase, RequestFacts, is_inference, parse_count};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(AdmissionRoot {
            id: context_id,
            shared: None,
            reporter: Reporter::default(),
        })
    });
}}

struct AdmissionRoot {
    id: u32,
    shared: Option<Rc<Shared>>,
    reporter: Reporter,
}

impl Context for AdmissionRoot {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, _size: usize) {
        self.reporter.on_call_answer(token, status_code);
    }

    fn on_done(&mut self) -> bool {
        match self.shared.clone() {
            Some(shared) => self.reporter.on_done(&shared),
            None => true,
        }
    }
}

impl RootContext for AdmissionRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        if size == 0 {
            log::error!("admission: no configuration given");
            return false;
        }
        match CompiledConfig::from_reader(host::configuration(size)) {
            Ok(config) => {
                host::log_configured("admission", format_args!("{:?} phase", config.phase));
                if let Err(e) = host::set_tick_period(config.report_flush) {
                    log::error!("admission: {e}");
                    return false;
                }
                self.shared = Some(Shared::new(config, self.id));
                true
            }
            Err(e) => {
                log::error!("admission: configuration refused: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(shared) = self.shared.clone() {
            self.reporter.on_tick(&shared);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. An unconfigured root refuses.
        let phase = self
            .shared
            .as_ref()
            .map_or(FilterPhase::Full, |s| s.config.phase);
        Some(Box::new(AdmissionFilter {
            stream: AdmissionStream::new(context_id, phase, self.shared.clone()),
            phase,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AdmissionFilter {
    stream: AdmissionStream,
    phase: FilterPhase,
}

const REQUEST: MapType = MapType::HttpRequestHeaders;

/// The facts the filters before this one set as headers (clients cannot
/// forge them: tenant-auth strips them). Unreadable ones are absent: the
/// request is then treated as unmetered input.
fn facts() -> RequestFacts {
    let text = |name| header_text(REQUEST, name);
    RequestFacts {
        tenant: text(headers::TENANT_ID).map(Into::into),
        tier: text(headers::TENANT_TIER).map(Into::into),
        model: text(headers::MODEL).map(Into::into),
        pool: text(headers::POOL).map(Into::into),
        prompt_tokens: parse_count(text(headers::PROMPT_TOKENS).as_deref()),
        max_tokens: parse_count(text(headers::MAX_TOKENS).as_deref()),
        request_id: text(headers::REQUEST_ID),
        credential: text(headers::CREDENTIAL),
        request_sha256: text(headers::REQUEST_SHA256),
        traceparent: text(headers::TRACEPARENT),
    }
}

impl Context for AdmissionFilter {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, size: usize) {
        if self.stream.on_grpc_response(token, status_code, size) == Some(Action::Continue)
            && let Err(e) = host::resume_request()
        {
            log::warn!("admission: {e}");
        }
    }
}

impl HttpContext for AdmissionFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if !self.stream.is_configured() {
            log::error!("admission: not configured; refusing");
            host::send_error(&filter_common::host_failure());
            return Action::Pause;
        }
        // On the headers, before llm-policy buffers the body: only
        // inference requests are counted, as the later phase would.
        if self.phase == FilterPhase::Open {
            let method = header_text(REQUEST, ":method").unwrap_or_default();
            let path = header_text(REQUEST, ":path").unwrap_or_default();
            if !is_inference(&method, &path) {
                return Action::Continue;
            }
        }
        self.stream.admit(&facts()).unwrap_or(Action::Continue)
    }

    /// The body as it goes to the pool (llm-policy has rewritten it): the
    /// start of it is kept for a tenant that logs prompts, copying out of
    /// the host no more than the bound.
    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        let room = self.stream.prompt_room();
        if room == 0 || body_size == 0 {
            self.stream.request_chunk(&[], body_size);
            return Action::Continue;
        }
        match host::buffer(BufferType::HttpRequestBody, 0, body_size.min(room)) {
            Ok(chunk) => self
                .stream
                .request_chunk(&chunk.unwrap_or_default(), body_size),
            Err(e) => log::warn!("admission: {e}"),
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.stream.on_response_headers(end_of_stream);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let chunk = if body_size > 0 && self.stream.reads_response_body() {
            match host::buffer(BufferType::HttpResponseBody, 0, body_size) {
                Ok(chunk) => chunk.unwrap_or_default(),
                Err(e) => {
                    log::warn!("admission: {e}");
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };
        self.stream.response_chunk(&chunk, body_size, end_of_stream);
        Action::Continue
    }

    fn on_log(&mut self) {
        // llm-policy changed the body after this filter saw it: its digest
        // is of what the client got.
        if let Ok(Some(sent)) = host::property(&[headers::RESPONSE_SHA256_STATE]) {
            self.stream
                .set_sent_digest(String::from_utf8(sent).unwrap_or_default());
        }
        self.stream.on_log();
    }
}
