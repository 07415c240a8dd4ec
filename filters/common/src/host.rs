//! The fallible host layer: every proxy-wasm host call a filter makes for
//! data goes through here.
//!
//! Why not the SDK: its helpers (`get_http_request_header`, `get_property`,
//! `resume_http_request`, ...) and even its `hostcalls` functions unwrap.
//! A header value that is not UTF-8 or a status the SDK did not expect (a
//! response header map asked for after a reset is `BadArgument`) panics,
//! and a panic kills the VM: every later request on that Envoy worker then
//! fails until the VM is reloaded. Here the ABI is called directly, every
//! status is an error value, and headers are bytes; whether a non-UTF-8
//! value is refused or ignored is the calling filter's rule ([`text`]).
//!
//! What still goes through the SDK: its dispatcher (context bookkeeping),
//! and inside [`dispatch_grpc_call`] its call registration, so that the
//! answer is routed back; Envoy's `grpcCall` returns only the statuses that
//! SDK function maps to errors (Ok, ParseFailure, InternalFailure).
#![allow(unsafe_code)] // The ABI is C: this module is the one place it is called.

use std::ptr::{null, null_mut};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::types::{BufferType, MapType, MetricType, StreamType};

use crate::GatewayError;
use crate::wire::{decode_pairs, encode_pairs, encode_path};

/// A host call that did not succeed: the call and the host's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("host call {call} failed with status {status}")]
pub struct HostError {
    pub call: &'static str,
    pub status: u32,
}

type HostResult<T> = Result<T, HostError>;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

mod abi {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
        ) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            buffer_data: *const u8,
            buffer_size: usize,
        ) -> u32;
        pub fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_property(
            path_data: *const u8,
            path_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_grpc_cancel(token: u32) -> u32;
        pub fn proxy_grpc_send(
            token: u32,
            message_data: *const u8,
            message_size: usize,
            end_stream: u32,
        ) -> u32;
        pub fn proxy_grpc_close(token: u32) -> u32;
        pub fn proxy_done() -> u32;
        pub fn proxy_define_metric(
            metric_type: u32,
            name_data: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        pub fn proxy_call_foreign_function(
            function_name_data: *const u8,
            function_name_size: usize,
            arguments_data: *const u8,
            arguments_size: usize,
            results_data: *mut *mut u8,
            results_size: *mut usize,
        ) -> u32;
    }
}

fn check(call: &'static str, status: u32) -> HostResult<()> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError { call, status })
    }
}

/// Takes ownership of bytes the host allocated in this VM's memory (the
/// host allocates them through the SDK's exported `proxy_on_memory_allocate`,
/// i.e. with this module's global allocator, size and capacity equal).
fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: see above; the host hands over a `size`-byte allocation.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// A value the host returns by allocation; `None` when it says NotFound.
fn fetch_value(
    call: &'static str,
    f: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> HostResult<Option<Vec<u8>>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    match f(&mut data, &mut size) {
        OK => Ok(Some(owned(data, size))),
        NOT_FOUND => Ok(None),
        status => Err(HostError { call, status }),
    }
}

/// The whole header map in one call, names and values as bytes, to read
/// headers from.
pub fn header_snapshot(map: MapType) -> HostResult<crate::headers::HeaderSnapshot> {
    let raw = fetch_value("get_header_map_pairs", |data, size| unsafe {
        abi::proxy_get_header_map_pairs(map as u32, data, size)
    })?
    .unwrap_or_default();
    decode_pairs(&raw)
        .map(crate::headers::HeaderSnapshot::new)
        .ok_or(HostError {
            call: "get_header_map_pairs (malformed)",
            status: 0,
        })
}

/// Sets `name` to `value`, or removes it when `value` is `None`.
pub fn set_header(map: MapType, name: &[u8], value: Option<&[u8]>) -> HostResult<()> {
    match value {
        Some(value) => check("replace_header_map_value", unsafe {
            abi::proxy_replace_header_map_value(
                map as u32,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        }),
        None => check("remove_header_map_value", unsafe {
            abi::proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len())
        }),
    }
}

/// Up to `max` bytes of a buffer from `start`; `None` when there is none.
pub fn buffer(kind: BufferType, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    fetch_value("get_buffer_bytes", |data, size| unsafe {
        abi::proxy_get_buffer_bytes(kind as u32, start, max, data, size)
    })
}

/// Replaces `size` bytes at `start` of a buffer with `value`.
pub fn set_buffer(kind: BufferType, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
    check("set_buffer_bytes", unsafe {
        abi::proxy_set_buffer_bytes(kind as u32, start, size, value.as_ptr(), value.len())
    })
}

/// A property of the stream or connection (`["connection", "..."]`).
pub fn property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    let path = encode_path(path);
    fetch_value("get_property", |data, size| unsafe {
        abi::proxy_get_property(path.as_ptr(), path.len(), data, size)
    })
}

/// Sets a value in the stream's filter state under `name`, where the
/// gateway's other filters read it back with `property(&[name])`. The name
/// goes as is, not NUL-terminated like a read path: Envoy keys the state
/// by the raw bytes, so a trailing NUL would make it unreadable.
pub fn set_property(name: &str, value: &[u8]) -> HostResult<()> {
    check("set_property", unsafe {
        abi::proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Sends a local reply instead of forwarding the stream.
pub fn send_reply(status: u32, headers: &[(&str, &[u8])], body: &[u8]) -> HostResult<()> {
    let headers = encode_pairs(headers);
    check("send_local_response", unsafe {
        abi::proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Sends `error` as the local reply of the current stream.
pub fn send_error(error: &GatewayError) {
    let body = error.body();
    let headers: Vec<(&str, &[u8])> = error
        .response_headers()
        .into_iter()
        .map(|(k, v)| (k, v.as_bytes()))
        .collect();
    if let Err(e) = send_reply(error.status, &headers, &body) {
        log::error!("cannot send the local reply: {e}");
    }
}

/// Resumes a request paused in a callback.
pub fn resume_request() -> HostResult<()> {
    check("continue_stream", unsafe {
        abi::proxy_continue_stream(StreamType::HttpRequest as u32)
    })
}

/// The host's wall clock.
pub fn now() -> HostResult<SystemTime> {
    let mut nanos: u64 = 0;
    check("get_current_time", unsafe {
        abi::proxy_get_current_time_nanoseconds(&mut nanos)
    })?;
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// The host's wall clock, or the epoch if it cannot be read (callers use
/// it for durations and expiries; an error is logged, never a panic).
pub fn now_or_epoch() -> SystemTime {
    now().unwrap_or_else(|e| {
        log::warn!("{e}");
        UNIX_EPOCH
    })
}

/// Sets the root context's tick period.
pub fn set_tick_period(period: Duration) -> HostResult<()> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    check("set_tick_period", unsafe {
        abi::proxy_set_tick_period_milliseconds(millis)
    })
}

/// A root context's tick period, set with the host only when it changes.
#[derive(Debug, Default)]
pub struct TickPeriod(Option<Duration>);

impl TickPeriod {
    /// Ticks every `period` from now on (a no-op when that is already so).
    pub fn set(&mut self, period: Duration) -> HostResult<()> {
        if self.0 != Some(period) {
            set_tick_period(period)?;
            self.0 = Some(period);
        }
        Ok(())
    }
}

/// Makes `context_id` the context later host calls act for.
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    check("set_effective_context", unsafe {
        abi::proxy_set_effective_context(context_id)
    })
}

/// Cancels a pending gRPC call.
pub fn cancel_grpc_call(token: u32) -> HostResult<()> {
    check("cancel_grpc_call", unsafe { abi::proxy_grpc_cancel(token) })
}

/// Tells the host a root context that asked to stay is done.
pub fn done() -> HostResult<()> {
    check("done", unsafe { abi::proxy_done() })
}

/// Defines a counter in Envoy's stats.
pub fn define_counter(name: &str) -> HostResult<u32> {
    let mut id: u32 = 0;
    check("define_metric", unsafe {
        abi::proxy_define_metric(
            MetricType::Counter as u32,
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    })?;
    Ok(id)
}

/// Adds to a counter defined with [`define_counter`]; errors are logged.
pub fn increment(metric: Option<u32>, by: i64) {
    if let Some(id) = metric
        && let Err(e) = check("increment_metric", unsafe {
            abi::proxy_increment_metric(id, by)
        })
    {
        log::warn!("{e}");
    }
}

/// Calls a host foreign function (Envoy's `clear_route_cache`, ...).
pub fn call_foreign_function(name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>> {
    fetch_value("call_foreign_function", |data, size| unsafe {
        abi::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            data,
            size,
        )
    })
}

/// Dispatches a unary gRPC call on behalf of the active context, whose
/// `on_grpc_call_response` gets the answer. This one goes through the SDK:
/// it registers the call with the SDK's dispatcher, which routes the answer
/// back (a call made past the dispatcher would be answered to nobody), and
/// Envoy's `grpcCall` only returns the statuses that function maps to
/// errors, so it cannot reach its panic.
pub fn dispatch_grpc_call(
    cluster: &str,
    service: &str,
    method: &str,
    message: &[u8],
    timeout: Duration,
) -> HostResult<u32> {
    proxy_wasm::hostcalls::dispatch_grpc_call(
        cluster,
        service,
        method,
        Vec::new(),
        Some(message),
        timeout,
    )
    .map_err(|status| HostError {
        call: "grpc_call",
        status: status as u32,
    })
}

/// Opens a gRPC stream on behalf of the active context, whose
/// `on_grpc_stream_*` callbacks get its messages and its end. Through the
/// SDK for the same reason as [`dispatch_grpc_call`] (its dispatcher must
/// know the token), and with the same statuses: Envoy's `grpcStream`
/// answers ParseFailure for an unknown cluster and InternalFailure when the
/// stream cannot start, both errors here.
pub fn open_grpc_stream(cluster: &str, service: &str, method: &str) -> HostResult<u32> {
    proxy_wasm::hostcalls::open_grpc_stream(cluster, service, method, Vec::new()).map_err(
        |status| HostError {
            call: "grpc_stream",
            status: status as u32,
        },
    )
}

/// Sends `message` on the gRPC stream `token` (NotFound: it has ended).
pub fn send_grpc_stream(token: u32, message: &[u8]) -> HostResult<()> {
    check("grpc_send", unsafe {
        abi::proxy_grpc_send(token, message.as_ptr(), message.len(), 0)
    })
}

/// Closes this side of the gRPC stream `token`; its end still arrives.
pub fn close_grpc_stream(token: u32) -> HostResult<()> {
    check("grpc_close", unsafe { abi::proxy_grpc_close(token) })
}

/// The plugin's configuration, `size` bytes as `on_configure` was told, to
/// parse as it streams: see [`PluginConfiguration`].
pub fn configuration(size: usize) -> std::io::BufReader<PluginConfiguration> {
    std::io::BufReader::with_capacity(CONFIG_SLICE_BYTES, PluginConfiguration::new(size))
}

/// Bytes of configuration copied out of the host per call while it is
/// parsed: the whole of it never sits in the VM at once.
const CONFIG_SLICE_BYTES: usize = 64 * 1024;

/// Logs that `filter` is configured, with what it holds and the VM's
/// memory (the registry-scale bench reads this line).
pub fn log_configured(filter: &str, holds: std::fmt::Arguments<'_>) {
    log::info!(
        "{filter}: configured: {holds}; VM memory {} MiB",
        vm_memory_bytes() >> 20
    );
}

/// The plugin's configuration as a reader that copies it out of the host a
/// slice at a time. A configuration of many
/// megabytes, a registry of real size, is parsed as it streams instead of
/// first being copied whole into the VM, whose memory never shrinks again:
/// every VM of every worker would keep that copy's pages.
#[derive(Debug)]
pub struct PluginConfiguration {
    offset: usize,
    /// What `on_configure` was told the configuration's size is.
    size: usize,
}

impl PluginConfiguration {
    pub fn new(size: usize) -> Self {
        Self { offset: 0, size }
    }
}

impl std::io::Read for PluginConfiguration {
    fn read(&mut self, into: &mut [u8]) -> std::io::Result<usize> {
        // The host clamps a slice that runs past the end, but not one that
        // starts past it: never ask for that.
        let want = into.len().min(self.size.saturating_sub(self.offset));
        if want == 0 {
            return Ok(0);
        }
        let slice = buffer(BufferType::PluginConfiguration, self.offset, want)
            .map_err(std::io::Error::other)?
            .unwrap_or_default();
        let n = slice.len().min(want);
        for (to, from) in into.iter_mut().zip(&slice).take(n) {
            *to = *from;
        }
        self.offset += n;
        Ok(n)
    }
}

/// Bytes of linear memory this VM holds: it grows and never shrinks, so
/// this is the high-water mark of everything the filter ever allocated.
pub fn vm_memory_bytes() -> usize {
    core::arch::wasm32::memory_size(0).saturating_mul(64 * 1024)
}
