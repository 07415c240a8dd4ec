//! A proxy-wasm host for tests: it loads a built filter module (the same
//! `.wasm` Envoy runs), drives it through the ABI's callbacks as Envoy
//! would (root context, configure, one HTTP stream at a time, gRPC answers,
//! ticks), answers its host calls from plain data, and records what the
//! module asked for: headers written, local replies, gRPC calls, resumed
//! streams, log lines, every slice of configuration it read.
//!
//! What it tests is the glue between a filter's phases and the host: the
//! host calls a phase makes, in which order, with which arguments, and what
//! the module does with the host's answers. A trap (a panic inside the
//! module) is an `Err` of the callback that caused it, never a crash of the
//! test; the module is then dead, as Envoy's VM would be.

mod abi;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use wasmi::{CallHook, Config, Engine, Instance, Linker, Module, Store, TypedFunc};

pub use abi::{BufferType, MapType};

/// What a callback answered: `Continue` lets the stream go on, `Pause`
/// holds it until the module resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// A reply the module sent itself (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub body: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The context it was sent for (the effective one).
    pub context: i32,
}

impl LocalReply {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A unary gRPC call the module dispatched; answer it by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    pub token: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub message: Vec<u8>,
    pub timeout_ms: u32,
}

/// A gRPC stream the module opened, with every message it sent on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcStream {
    pub token: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub messages: Vec<Vec<u8>>,
    /// The module closed its side.
    pub closed_by_module: bool,
    /// The host ended it ([`MockHost::end_grpc_stream`]).
    pub ended: bool,
}

/// Crossings between the host and the module, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Crossings {
    /// Host calls the module made.
    pub into_host: u64,
    /// Calls of the host into the module.
    pub into_module: u64,
}

/// Everything the host knows and everything the module did, in order.
#[derive(Debug, Default)]
pub struct HostState {
    pub plugin_configuration: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    /// `(start, max)` of every read of the plugin configuration.
    pub configuration_reads: Vec<(usize, usize)>,
    pub request_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub response_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// The message of the gRPC answer being delivered.
    pub grpc_receive: Vec<u8>,
    /// `proxy_get_status` during a gRPC callback: code and message.
    pub grpc_status: (u32, Vec<u8>),
    /// Properties by their encoded path (segments joined by NUL).
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub now_nanos: u64,
    pub local_replies: Vec<LocalReply>,
    pub grpc_calls: Vec<GrpcCall>,
    pub grpc_streams: Vec<GrpcStream>,
    /// `proxy_grpc_stream` fails (as for a cluster Envoy does not know).
    pub refuse_grpc_streams: bool,
    /// Stream types the module resumed (`0` request, `1` response).
    pub resumed: Vec<u32>,
    /// The context of each resume in `resumed`.
    pub resumed_contexts: Vec<i32>,
    /// The context host calls act for: the one called into, or the one
    /// the module made effective since.
    pub effective_context: i32,
    pub logs: Vec<(u32, String)>,
    pub metrics: Vec<String>,
    pub tick_period_ms: Option<u32>,
    /// Calls the module made to the host, and the host made into the
    /// module (callbacks, and allocations for what the host hands over):
    /// each is a crossing Envoy pays for, whatever the module does inside.
    pub crossings: Crossings,
    /// The module's host calls by ABI function name, counted: which of
    /// the crossings are worth saving.
    pub host_calls: BTreeMap<&'static str, u64>,
    next_token: u32,
    random: u8,
}

impl HostState {
    fn tally(&mut self, function: &'static str) {
        *self.host_calls.entry(function).or_default() += 1;
    }

    /// Log lines containing `needle`.
    pub fn logs_with(&self, needle: &str) -> Vec<&str> {
        self.logs
            .iter()
            .map(|(_, line)| line.as_str())
            .filter(|line| line.contains(needle))
            .collect()
    }

    /// The request header `name` as the module left it.
    pub fn request_header(&self, name: &str) -> Option<&[u8]> {
        self.request_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    /// Sets a property the module may read, by its path.
    pub fn set_property(&mut self, path: &[&str], value: &[u8]) {
        self.properties
            .insert(filter_common::wire::encode_path(path), value.to_vec());
    }
}

/// A failure of the host or a trap of the module.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read the module {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the module does not load: {0}")]
    Load(wasmi::Error),
    #[error("the module trapped in {callback}: {source}")]
    Trap {
        callback: &'static str,
        source: wasmi::Error,
    },
}

/// One VM of a filter module, as on one Envoy worker.
/// Fuel the module starts with: more than any test spends.
const FUEL: u64 = 1 << 62;

pub struct MockHost {
    store: Store<HostState>,
    instance: Instance,
    root: i32,
    next_context: i32,
}

const ROOT_CONTEXT: i32 = 1;

impl MockHost {
    /// Loads the module at `wasm`, initialises it and starts its root
    /// context (not yet configured).
    pub fn load(wasm: &Path) -> Result<Self, HostError> {
        let bytes = std::fs::read(wasm).map_err(|source| HostError::Read {
            path: wasm.display().to_string(),
            source,
        })?;
        // Fuel counts the instructions the module executes (one unit for
        // most): what a request costs inside the VM, exactly.
        let engine = Engine::new(Config::default().consume_fuel(true));
        let module = Module::new(&engine, &bytes).map_err(HostError::Load)?;
        let mut linker = Linker::<HostState>::new(&engine);
        abi::link(&mut linker).map_err(HostError::Load)?;
        let mut store = Store::new(&engine, HostState::default());
        store.call_hook(|state, hook| {
            match hook {
                CallHook::CallingHost => state.crossings.into_host += 1,
                CallHook::CallingWasm => state.crossings.into_module += 1,
                CallHook::ReturningFromHost | CallHook::ReturningFromWasm => {}
            }
            Ok(())
        });
        store.data_mut().now_nanos = 1_767_225_600_000_000_000; // 2026-01-01
        store.set_fuel(FUEL).map_err(HostError::Load)?;
        let instance = linker
            .instantiate_and_start(&mut store, &module)
            .map_err(HostError::Load)?;
        let mut host = Self {
            store,
            instance,
            root: ROOT_CONTEXT,
            next_context: ROOT_CONTEXT + 1,
        };
        host.call::<(), ()>("_initialize", ())?;
        host.call::<(i32, i32), ()>("proxy_on_context_create", (ROOT_CONTEXT, 0))?;
        let vm_size = len(&host.store.data().vm_configuration);
        host.call::<(i32, i32), i32>("proxy_on_vm_start", (ROOT_CONTEXT, vm_size))?;
        Ok(host)
    }

    /// Instructions the module has executed so far (fuel spent).
    pub fn instructions(&self) -> u64 {
        FUEL - self.store.get_fuel().unwrap_or(FUEL)
    }

    pub fn state(&self) -> &HostState {
        self.store.data()
    }

    pub fn state_mut(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    /// Hands the module its plugin configuration; `true` when it accepts it.
    pub fn configure(&mut self, configuration: &[u8]) -> Result<bool, HostError> {
        self.state_mut().plugin_configuration = configuration.to_vec();
        let size = len(configuration);
        let accepted =
            self.call_for::<(i32, i32), i32>(self.root, "proxy_on_configure", (self.root, size))?;
        Ok(accepted != 0)
    }

    /// Starts a new HTTP stream: its context, with the request's headers
    /// (and no body yet). The previous stream's data is forgotten.
    pub fn begin_stream(&mut self, headers: &[(&str, &[u8])]) -> Result<Stream, HostError> {
        let context = self.next_context;
        self.next_context += 1;
        let state = self.state_mut();
        state.request_headers = owned_pairs(headers);
        state.response_headers.clear();
        state.request_body.clear();
        state.response_body.clear();
        self.call_for::<(i32, i32), ()>(context, "proxy_on_context_create", (context, self.root))?;
        Ok(Stream { context })
    }

    /// `proxy_on_request_headers`.
    pub fn request_headers(
        &mut self,
        stream: Stream,
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        let count = len(&self.state().request_headers);
        self.stream_callback("proxy_on_request_headers", stream, count, end_of_stream)
    }

    /// A chunk of request body arrives: Envoy buffers it with what came
    /// before while the module holds the stream, and hands the whole to
    /// `proxy_on_request_body`.
    pub fn request_body(
        &mut self,
        stream: Stream,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        self.state_mut().request_body.extend_from_slice(chunk);
        let size = len(&self.state().request_body);
        self.stream_callback("proxy_on_request_body", stream, size, end_of_stream)
    }

    /// The upstream's response headers.
    pub fn response_headers(
        &mut self,
        stream: Stream,
        headers: &[(&str, &[u8])],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        self.state_mut().response_headers = owned_pairs(headers);
        let count = len(&self.state().response_headers);
        self.stream_callback("proxy_on_response_headers", stream, count, end_of_stream)
    }

    /// A chunk of response body; unlike the request, each chunk is handed on
    /// its own (the module streams responses).
    pub fn response_body(
        &mut self,
        stream: Stream,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        self.state_mut().response_body = chunk.to_vec();
        self.stream_callback("proxy_on_response_body", stream, len(chunk), end_of_stream)
    }

    /// A stream callback: `(context, headers or bytes, end_of_stream)` in,
    /// the module's action out.
    fn stream_callback(
        &mut self,
        callback: &'static str,
        stream: Stream,
        size: i32,
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        let action = self.call_for::<(i32, i32, i32), i32>(
            stream.context,
            callback,
            (stream.context, size, i32::from(end_of_stream)),
        )?;
        Ok(action_of(action))
    }

    /// The stream ends: done, log, delete, as Envoy calls them.
    pub fn end_stream(&mut self, stream: Stream) -> Result<(), HostError> {
        self.call_for::<i32, i32>(stream.context, "proxy_on_done", stream.context)?;
        self.call_for::<i32, ()>(stream.context, "proxy_on_log", stream.context)?;
        self.call_for::<i32, ()>(stream.context, "proxy_on_delete", stream.context)?;
        Ok(())
    }

    /// Answers the gRPC call `token` with `message` (status OK).
    pub fn answer_grpc(&mut self, token: u32, message: &[u8]) -> Result<(), HostError> {
        let state = self.state_mut();
        state.grpc_receive = message.to_vec();
        state.grpc_status = (0, Vec::new());
        let size = len(message);
        self.call_for::<(i32, i32, i32), ()>(
            self.root,
            "proxy_on_grpc_receive",
            (self.root, token as i32, size),
        )
    }

    /// Fails the gRPC call `token` with `status` (14 is UNAVAILABLE).
    pub fn fail_grpc(&mut self, token: u32, status: u32, message: &str) -> Result<(), HostError> {
        self.state_mut().grpc_status = (status, message.as_bytes().to_vec());
        self.call_for::<(i32, i32, i32), ()>(
            self.root,
            "proxy_on_grpc_close",
            (self.root, token as i32, status as i32),
        )
    }

    /// Delivers `message` on the gRPC stream `token`.
    /// (Envoy delivers it as it delivers a call's answer.)
    pub fn grpc_stream_message(&mut self, token: u32, message: &[u8]) -> Result<(), HostError> {
        self.answer_grpc(token, message)
    }

    /// Ends the gRPC stream `token` with `status` (14 is UNAVAILABLE), as
    /// when the service goes away.
    pub fn end_grpc_stream(&mut self, token: u32, status: u32) -> Result<(), HostError> {
        let stream = self
            .state_mut()
            .grpc_streams
            .iter_mut()
            .find(|s| s.token == token);
        if let Some(stream) = stream {
            stream.ended = true;
        }
        // Envoy ends a stream as it fails a call.
        self.fail_grpc(token, status, "stream ended")
    }

    /// Envoy is done with the root context (its configuration was
    /// replaced, or Envoy stops): whether it may go at once; if not, it
    /// says so later by `proxy_done` (counted in `host_calls`).
    pub fn finish_root(&mut self) -> Result<bool, HostError> {
        let done = self.call_for::<i32, i32>(self.root, "proxy_on_done", self.root)?;
        Ok(done != 0)
    }

    /// One tick of the root context's timer.
    pub fn tick(&mut self) -> Result<(), HostError> {
        self.call_for::<i32, ()>(self.root, "proxy_on_tick", self.root)
    }

    /// Moves the host's clock on.
    pub fn advance(&mut self, by: std::time::Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let state = self.state_mut();
        state.now_nanos = state.now_nanos.saturating_add(nanos);
    }

    /// Calls into the module for `context`, which becomes the effective one.
    fn call_for<P, R>(
        &mut self,
        context: i32,
        name: &'static str,
        params: P,
    ) -> Result<R, HostError>
    where
        P: wasmi::WasmParams,
        R: wasmi::WasmResults,
    {
        self.state_mut().effective_context = context;
        self.call(name, params)
    }

    fn call<P, R>(&mut self, name: &'static str, params: P) -> Result<R, HostError>
    where
        P: wasmi::WasmParams,
        R: wasmi::WasmResults,
    {
        let func: TypedFunc<P, R> =
            self.instance
                .get_typed_func(&self.store, name)
                .map_err(|source| HostError::Trap {
                    callback: name,
                    source,
                })?;
        func.call(&mut self.store, params)
            .map_err(|source| HostError::Trap {
                callback: name,
                source,
            })
    }
}

/// An HTTP stream of the module (its context id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    context: i32,
}

impl Stream {
    /// Its context id, as the host's records name it.
    pub fn context(&self) -> i32 {
        self.context
    }
}

fn owned_pairs(headers: &[(&str, &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec()))
        .collect()
}

fn action_of(code: i32) -> Action {
    if code == 0 {
        Action::Continue
    } else {
        Action::Pause
    }
}

/// A length as the ABI's `i32`; test data is never 2 GiB.
fn len<T>(items: &[T]) -> i32 {
    i32::try_from(items.len()).unwrap_or(i32::MAX)
}
